#!/usr/bin/env bash
# The main job on one machine: a real local control plane, the CRDs, the example tenants, and
# the operator reconciling them in the foreground. Ctrl-C stops the operator; the control
# plane keeps running (`hack/dev-env.sh down` stops it). Then try:
#   export KUBECONFIG=/tmp/clawdbot-dev/kube/kubeconfig
#   kubectl get uws,mep -A ; kubectl describe uws alice -n clawdbot-demo
set -euo pipefail
cd "$(dirname "$0")/.."
source "$HOME/.cargo/env" 2>/dev/null || true
bash hack/install-deps.sh
eval "$(bash hack/dev-env.sh up)"
cargo build -q -p clawdbot-operator --bin operator
# The local API server is 1.20: it predates CEL, so client-side validation is off for the
# CRDs (the server drops the rules; the operator enforces the same checks).
kubectl apply --validate=false -f crds/ 2>&1 | grep -v "version skew\|last-applied" || true
kubectl get namespace clawdbot-demo >/dev/null 2>&1 || kubectl create namespace clawdbot-demo
kubectl apply -n clawdbot-demo -f examples/ 2>&1 | grep -v "version skew" || true
echo "operator starting; in another shell: KUBECONFIG=$KUBECONFIG kubectl get uws,mep -A"
exec env RUST_LOG=${RUST_LOG:-info} POD_NAMESPACE=clawdbot-demo METRICS_ADDR=127.0.0.1:18080 \
  "${CARGO_TARGET_DIR:-target}/debug/operator"
