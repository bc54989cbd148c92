#!/usr/bin/env bash
# Every test: the Rust workspace (unit, integration and end-to-end tests, each on SQLite and on
# PostgreSQL), then the desktop app's (ui unit tests; the app end to end under Xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
# (The network test bed runs convo-server and convo-bot as programs: cargo builds a package's
# binaries for its integration tests, so both are in target/debug before any test runs.)
# Media stays on loopback: the server (in-process or not) and every client engine gather ICE
# candidates on 127.0.0.1 only, never on the machine's own interfaces. (The network bed sets
# each process's own addresses.)
export CONVO_ICE_IPS=127.0.0.1
# The ui's npm dependencies first: they carry the segmentation model the video effects' tests
# run (@mediapipe/selfie_segmentation).
(cd ui && npm ci --no-audit --no-fund --loglevel=error)
export CONVO_UI_INSTALLED=1
cargo test --workspace --locked
bash tests/desktop.sh
