#!/usr/bin/env bash
# Runs every check and test of the project on a fresh Debian bookworm machine:
# installs what is missing (cached), starts the real servers on loopback, then
# fmt check, clippy -D warnings, the CRD drift check and all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
source "$HOME/.cargo/env" 2>/dev/null || true

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

# One cargo target dir outside the clone, keyed by the toolchain: a fresh clone (CI's) reuses
# every dependency already built on this machine and recompiles only the workspace's own
# crates; cargo's fingerprints decide what a change rebuilds. Pruned when it grows past 40 GB
# (artifacts of old dependency versions pile up there).
CACHE=${CLAWDBOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawdbot}
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$CACHE/target-$(rustc -V | sha256sum | cut -c1-12)"
  # A link to a target dir that is not there (a cache restored without it): cargo would fail
  # with "Not a directory"; start from an empty one instead.
  if [ -L "$CARGO_TARGET_DIR" ] && [ ! -e "$CARGO_TARGET_DIR" ]; then rm -f "$CARGO_TARGET_DIR"; fi
  if [ -d "$CARGO_TARGET_DIR" ] && [ "$(du -s --block-size=1G "$CARGO_TARGET_DIR" | cut -f1)" -gt 40 ]; then
    rm -rf "$CARGO_TARGET_DIR"
  fi
fi

step "install dependencies"
bash hack/install-deps.sh

step "start Postgres, Redis and the Kubernetes control plane"
# CI starts from empty servers; a developer keeps theirs (hack/dev-env.sh reset clears them).
if [ "${CI:-}" = "true" ]; then bash hack/dev-env.sh reset; fi
eval "$(bash hack/dev-env.sh up)"

step "cargo fmt --check"
cargo fmt --all -- --check

step "CRDs are generated from the Rust types"
cargo run -q -p clawdbot-operator --bin crdgen -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "images for the node's pods (hack/build-images.sh lite openclaw operator router chart-test; skipped when unchanged)"
# Debug build: the tests exercise the pod spec and the wiring, not the release optimiser, and
# the debug binaries come almost free after the test build's own compile of the same crates.
# operator, router and chart-test: the Helm chart installed on the node (router/tests/chart_install.rs).
CLAWDBOT_IMAGE_PROFILE=debug bash hack/build-images.sh lite openclaw operator router chart-test

step "cargo test"
# CI=true keeps insta from writing new snapshots: a changed object fails the test.
cargo test --workspace --locked -- --test-threads=2
