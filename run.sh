#!/usr/bin/env bash
# The README's first command: runs ConvoConnect on this machine — the server on an embedded
# SQLite database and the desktop app signed in to it — and stops the server when the app
# quits. Sets up what is missing first: on Debian/Ubuntu the system packages (with sudo when
# not root), Node.js 20+ (the official build, in ~/.cache/convoconnect) and Rust (rustup).
#
#   CONVO_PROFILE=debug   build without optimisation (quicker to build, slower to run)
#   CONVO_MEDIA=synthetic a synthetic camera and microphone instead of the real ones
#   CONVO_BIND, CONVO_DATA_DIR, ... the server's settings (README, "Configuration")
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '== %s\n' "$*"; }

# --- system packages (Debian/Ubuntu) ---
packages=(build-essential pkg-config curl ca-certificates cmake libwebkit2gtk-4.1-dev libgtk-3-dev
  libayatana-appindicator3-dev librsvg2-dev libdbus-1-dev libasound2-dev libclang-dev libwebrtc-audio-processing-dev
  libpipewire-0.3-dev fonts-noto-color-emoji xz-utils)
if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
else
  say "not Debian/Ubuntu: install the packages the README lists for your system yourself"
fi

# --- Node.js 20+ for the ui ---
node_ok() { command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; }
if ! node_ok; then
  version=v20.19.5
  dir="$HOME/.cache/convoconnect/node-$version-linux-x64"
  if [ ! -x "$dir/bin/node" ]; then
    say "Node.js 20+ is missing: fetching the official $version build"
    mkdir -p "$HOME/.cache/convoconnect"
    curl -fsSL "https://nodejs.org/dist/$version/node-$version-linux-x64.tar.xz" |
      tar -xJ -C "$HOME/.cache/convoconnect"
  fi
  export PATH="$dir/bin:$PATH"
fi

# --- Rust ---
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    say "Rust is missing: installing it with rustup"
    curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal
  }
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# --- build ---
profile=${CONVO_PROFILE:-release}
say "building the ui, the server and the app ($profile)"
(cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run build)
if [ "$profile" = release ]; then flag=(--release) bin=target/release; else flag=() bin=target/debug; fi
# (One at a time: built together, their dependencies' features would be unified differently
# from the tests' builds, and both rebuilt.)
cargo build "${flag[@]}" --locked -p convo-server
cargo build "${flag[@]}" --locked -p convo-desktop --features custom-protocol

# --- run: the server, then the app; the server stops when the app quits ---
bind=${CONVO_BIND:-127.0.0.1:8080}
url="http://${bind/0.0.0.0/127.0.0.1}"
answers() { curl -sf -o /dev/null -m 2 "$url/healthz"; }
server=""
if answers; then
  say "a server already answers at $url: the app uses it (and leaves it running)"
else
  say "starting the server at $url"
  "$bin/convo-server" &
  server=$!
  trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true' EXIT
  trap 'exit 130' INT TERM
  for _ in $(seq 1 150); do
    answers && break
    kill -0 "$server" 2>/dev/null || { echo "the server stopped (see above)"; exit 1; }
    sleep 0.2
  done
fi
say "starting the app"
CONVO_SERVER="$url" "$bin/convo-desktop"
