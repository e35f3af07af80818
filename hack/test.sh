#!/usr/bin/env bash
# Runs every check and test of the project on a fresh Debian bookworm machine:
# installs what is missing (cached), starts the real servers on loopback, then
# fmt check, clippy -D warnings, the CRD drift check and all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
source "$HOME/.cargo/env" 2>/dev/null || true

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

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

step "cargo test"
# CI=true keeps insta from writing new snapshots: a changed object fails the test.
cargo test --workspace --locked -- --test-threads=2
