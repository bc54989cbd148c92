#!/usr/bin/env bash
# Every test: the Rust workspace (unit, integration and end-to-end tests, each on SQLite and on
# PostgreSQL), then the desktop app's (ui unit tests; the app end to end under Xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
# (The network test bed runs convo-server and convo-bot as programs: cargo builds a package's
# binaries for its integration tests, so both are in target/debug before any test runs.)
cargo test --workspace --locked
bash tests/desktop.sh
