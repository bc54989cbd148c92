#!/usr/bin/env bash
# Every test: the Rust workspace (unit, integration and end-to-end tests, each on SQLite and on
# PostgreSQL), then the desktop app's (ui unit tests; the app end to end under Xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
# The server and convo-bot as programs: the network test bed runs them in namespaces.
cargo build --locked -p convo-server -p convo-client --bins
cargo test --workspace --locked
bash tests/desktop.sh
