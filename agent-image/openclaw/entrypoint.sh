#!/bin/sh
# Starts the OpenClaw gateway of one tenant. The image runs this under tini (PID 1 reaps the
# gateway's workers and the processes its tools start); the end-to-end test runs it too, with
# OPENCLAW_RUNTIME pointing at the cached install.
#
# The tenant volume starts empty: create the directories OpenClaw expects to exist. Every path
# comes from the env the operator renders (operator/src/openclaw.rs), with the image's defaults.
set -eu
runtime=${OPENCLAW_RUNTIME:-/opt/openclaw}
mkdir -p "${HOME:?}" "${OPENCLAW_STATE_DIR:?}" "${TMPDIR:-/tmp}"
exec "$runtime/node/bin/node" "$runtime/app/node_modules/openclaw/openclaw.mjs" gateway run "$@"
