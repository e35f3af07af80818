#!/usr/bin/env bash
# Installs the pinned OpenClaw runtime (Node 26.10.0 + openclaw@2026.9.6) for the tests, exactly
# the way the agent image does (agent-image/openclaw/install-runtime.sh with the committed
# package-lock.json), cached outside the repo:
#   ${CLAWDBOT_CACHE:-~/.cache/clawdbot}/openclaw-2026.9.6/{node/bin/node,app/node_modules/openclaw}
# Idempotent: reinstalls only when the cache is missing, incomplete, or the lock file changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=$here/../agent-image/openclaw

cache=${CLAWDBOT_CACHE:-$HOME/.cache/clawdbot}
dest=$cache/openclaw-2026.9.6
stamp=$dest/.installed
want=$(cat "$image/install-runtime.sh" "$image/package.json" "$image/package-lock.json" \
  $(find "$image/plugins" -type f | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dest/node/bin/node" ] &&
   [ -f "$dest/app/node_modules/openclaw/openclaw.mjs" ]; then
  echo "openclaw: ready ($dest)"
  exit 0
fi

command -v npm >/dev/null || { echo "install-openclaw: npm is needed (apt-get install npm)" >&2; exit 1; }
echo "openclaw: installing into $dest"
rm -rf "$dest.partial"
"$image/install-runtime.sh" "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$want" > "$stamp"
echo "openclaw: ready ($dest)"
