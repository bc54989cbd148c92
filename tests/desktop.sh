#!/usr/bin/env bash
# The desktop app's tests: the ui's unit tests (Vitest), then the app end to end under Xvfb
# through tauri-driver and WebKitWebDriver (tests/desktop.rs). Builds what they need first:
# the ui (`ui/dist`) and the app with the ui embedded.
# Needs: Node.js 20+, the Debian packages listed in .ci/run (webkit2gtk-driver, xvfb,
# pulseaudio, ...),
# and tauri-driver (installed with cargo when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ui: install, type check (tsc, strict), unit tests, build"
(cd ui && { [ -n "${CONVO_UI_INSTALLED:-}" ] || npm ci --no-audit --no-fund; } && npm run typecheck && npx vitest run && npm run build)

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

echo "== the README's first command (run.sh, debug build): the app runs with its own server, which stops when the app quits"
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data=$(mktemp -d)
log="$PWD/target/e2e/run.log"
CONVO_PROFILE=debug CONVO_MEDIA=synthetic CONVO_BIND="127.0.0.1:$port" CONVO_DATA_DIR="$data" \
  xvfb-run -a bash run.sh >"$log" 2>&1 &
runner=$!
app_up() { pgrep -f "^target/debug/convo-desktop" >/dev/null; }
for _ in $(seq 600); do
  app_up && curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break
  kill -0 "$runner" 2>/dev/null || { cat "$log"; echo "run.sh ended before the app ran"; exit 1; }
  sleep 0.5
done
app_up || { cat "$log"; echo "run.sh did not start the app within 5 minutes"; exit 1; }
pkill -f "^target/debug/convo-desktop"
wait "$runner" || true
if curl -sf -o /dev/null -m 2 "http://127.0.0.1:$port/healthz"; then
  echo "the server still answers after the app quit"; exit 1
fi
echo "run.sh started the server and the app, and the server stopped with the app"
