#!/usr/bin/env bash
# schemathesis (PyPI) in a cached venv, for the API's property-based test
# (router/tests/api_schema.rs). `hack/schemathesis.sh install` makes the venv once;
# `hack/schemathesis.sh run <args>` runs `st` from it.
set -euo pipefail
VERSION=4.32.5
VENV="${CLAWDBOT_CACHE:-$HOME/.cache/clawdbot}/schemathesis-$VERSION"

install() {
    # A venv cannot be moved (its scripts name their own path): build it in place and mark
    # it complete last, so an interrupted install is redone.
    if [ ! -f "$VENV/.complete" ]; then
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION" >&2
        touch "$VENV/.complete"
    fi
    echo "$VENV/bin/st"
}

case "${1:-install}" in
    install) install ;;
    run) shift; st="$(install)"; exec "$st" run "$@" ;;
    *) echo "usage: $0 install | run <st args>" >&2; exit 2 ;;
esac
