#!/usr/bin/env bash
# The desktop app's tests: the ui's unit tests (Vitest), then the app end to end under Xvfb
# through tauri-driver and WebKitWebDriver (tests/desktop.rs). Builds what they need first:
# the ui (`ui/dist`) and the app with the ui embedded.
# Needs: Node.js 20+, the Debian packages listed in .ci/run (webkit2gtk-driver, xvfb,
# pulseaudio, ...),
# and tauri-driver (installed with cargo when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ui: install, unit tests, build"
(cd ui && npm ci --no-audit --no-fund && npx vitest run && npm run build)

echo "== the app, with the ui embedded"
cargo build -p convo-desktop --features custom-protocol --locked
mkdir -p target/e2e
cp target/debug/convo-desktop target/e2e/convo-desktop
export CONVO_DESKTOP_BIN="$PWD/target/e2e/convo-desktop"

if ! command -v tauri-driver >/dev/null; then
  echo "== installing tauri-driver"
  cargo install tauri-driver --locked
fi
export PATH="$HOME/.cargo/bin:$PATH"

echo "== a sound server: PulseAudio with a null sink as the default speaker, its monitor as the microphone"
if ! pactl info >/dev/null 2>&1; then
  pulseaudio --start --exit-idle-time=-1 2>&1 | grep -v "not intended to be run as root" || true
fi
pactl list short sinks | grep -q convo_null || pactl load-module module-null-sink sink_name=convo_null >/dev/null
pactl set-default-sink convo_null
pactl set-default-source convo_null.monitor

echo "== real sound devices through cpal"
cargo test -p convo-client --features devices --test sound --locked -- --include-ignored

echo "== the app end to end (Xvfb)"
# Inside one D-Bus session: the single-instance hand-over of deep links goes over it, the
# Secret Service (gnome-keyring, unlocked with a throwaway password and a fresh keyring each
# run) keeps the session across restarts, and a test notification server records the app's
# notifications.
export CONVO_NOTIFY_LOG="$PWD/target/e2e/notifications.log"
dbus-run-session -- bash -euo pipefail -c '
  export XDG_DATA_HOME=$(mktemp -d)
  printf %s e2e-keyring | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  /usr/bin/python3 tests/notifications.py > "$CONVO_NOTIFY_LOG" &
  for _ in $(seq 50); do grep -q READY "$CONVO_NOTIFY_LOG" && break; sleep 0.1; done
  grep -q READY "$CONVO_NOTIFY_LOG" || { echo "the test notification server did not start"; exit 1; }
  xvfb-run -a -s "-screen 0 1280x800x24" bash -euo pipefail -c "
    cargo test -p convo-e2e --test screen --locked -- --include-ignored --nocapture
    cargo test -p convo-e2e --test desktop --locked -- --include-ignored --nocapture
  "
'
