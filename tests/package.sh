#!/usr/bin/env bash
# Packages the desktop app as a .deb (Tauri's bundler, through the npm-installed tauri CLI),
# installs it with apt, and starts the installed binary once under Xvfb, asking it through
# tauri-driver what its window shows. Run by .ci/run after the tests (it needs root for apt,
# ui/dist built, and tauri-driver, as tests/desktop.sh leaves them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

echo "== .deb"
(cd client-tauri/app && ../../ui/node_modules/.bin/tauri build --debug --bundles deb --ci)
deb=$(ls -t target/debug/bundle/deb/*.deb | head -n 1)
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

echo "== install"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb"
test -x /usr/bin/convo-desktop

echo "== start the installed app once"
cat > /tmp/convo-installed-check.sh <<'CHECK'
set -euo pipefail
port=4491
# In a process group of its own, killed whole at the end: tauri-driver starts WebKitWebDriver
# (and that the app), which outlived it.
setsid tauri-driver --port $port --native-port 4492 >/tmp/convo-installed-driver.log 2>&1 &
driver=$!
trap 'kill -- -$driver 2>/dev/null || kill $driver 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
sleep 2
session=$(curl -sf -m 60 -X POST "http://127.0.0.1:$port/session" -H 'content-type: application/json' \
  -d '{"capabilities":{"alwaysMatch":{"tauri:options":{"application":"/usr/bin/convo-desktop"}}}}' | jq -r .value.sessionId)
text=""
for _ in $(seq 1 50); do
  text=$(curl -sf -m 20 -X POST "http://127.0.0.1:$port/session/$session/execute/sync" \
    -H 'content-type: application/json' -d '{"script":"return document.body.innerText","args":[]}' | jq -r .value)
  case "$text" in *"Sign in"*) break ;; esac
  sleep 0.3
done
curl -sf -m 20 -X DELETE "http://127.0.0.1:$port/session/$session" >/dev/null || true
case "$text" in
  *"Sign in"*) echo "the installed app shows its sign-in screen" ;;
  *) echo "the installed app did not show its sign-in screen: $text"; exit 1 ;;
esac
CHECK
CONVO_MEDIA=synthetic xvfb-run -a -s "-screen 0 1280x800x24" bash /tmp/convo-installed-check.sh
