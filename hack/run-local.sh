#!/usr/bin/env bash
# The whole platform on this machine, README's first command:
#   1. installs and builds what is missing (cached under ~/.cache/clawdbot)
#   2. starts the real single-node Kubernetes, Postgres and Redis (hack/dev-env.sh up)
#   3. builds and imports the images (hack/build-images.sh; unchanged images are skipped)
#   4. installs the CRDs; the small model server (SmolLM2) as the platform ModelEndpoint `local`
#      (a pod of ghcr.io/clawdbot/model-server)
#   5. runs the operator and the router as processes on this machine (the router reaches the
#      tenant pods through their Services' ClusterIPs: SERVICE_ADDRESSES=cluster-ip)
#   6. creates a demo user with a running workspace (lite; `--openclaw` for the OpenClaw
#      runtime) and prints how to chat with it
# Ctrl-C stops the operator, the router and the demo's pods; `hack/dev-env.sh down` stops the
# node and the servers too. A second run starts in seconds. Each step's log is under
# $STATE/run-local/; a failed step names it. With TELEGRAM_BOT_TOKEN set, the router also
# talks to the real Telegram (long polling when no public URL is configured).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$HOME/.cargo/env" 2>/dev/null || true
RUNTIME=lite
for a in "$@"; do
  case $a in
    --openclaw) RUNTIME=openclaw ;;
    *) echo "usage: $0 [--openclaw]" >&2; exit 2 ;;
  esac
done
STATE=${CLAWDBOT_DEV_STATE:-/tmp/clawdbot-dev}
LOGS=$STATE/run-local
mkdir -p "$LOGS"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PROFILE=${CLAWDBOT_IMAGE_PROFILE:-release}
export CLAWDBOT_IMAGE_PROFILE=$PROFILE
NS=clawdbot-demo
ROUTER_PORT=${CLAWDBOT_ROUTER_PORT:-18090}
ROUTER_METRICS_PORT=$((ROUTER_PORT + 1))
OPERATOR_METRICS_PORT=$((ROUTER_PORT + 2))
T0=$(date +%s)

# step NAME COMMAND...: runs with its output in a log, prints its time, names the log on failure.
step() {
  local name=$1; shift
  local log=$LOGS/$(echo "$name" | tr ' /' '__').log start
  start=$(date +%s)
  printf '== %-48s' "$name"
  if "$@" >"$log" 2>&1; then
    printf ' %4ss\n' "$(( $(date +%s) - start ))"
  else
    printf ' FAILED after %ss\n' "$(( $(date +%s) - start ))"
    echo "   log: $log"; tail -15 "$log" | sed 's/^/   | /'
    exit 1
  fi
}

# Secrets of this local platform, made once and kept in the state dir (mode 0600).
secret() {
  local f=$STATE/run-local/$1
  [ -s "$f" ] || (umask 077; openssl rand -hex 24 > "$f")
  cat "$f"
}
# The accounts API's master key: 32 random bytes, base64 (ROUTER_MASTER_KEYS is `id:base64`).
master_key() {
  local f=$STATE/run-local/master-key
  [ -s "$f" ] || (umask 077; openssl rand -base64 32 > "$f")
  cat "$f"
}

PIDS=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping the operator, the router and the demo's pods"
  [ ${#PIDS[@]} -gt 0 ] && kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${KUBECONFIG:-}" ]; then
    # Scale the demo to nothing: the kubelet stops the containers (no shim or mount is left);
    # the next run scales it back.
    kubectl -n "$NS" scale deployment --all --replicas=0 >/dev/null 2>&1 || true
    kubectl -n "$NS" delete pods --all --wait=true --timeout=60s >/dev/null 2>&1 || true
  fi
  rm -f "$STATE/platform.env"
}
trap cleanup INT TERM EXIT

step "install dependencies" bash hack/install-deps.sh
step "start the node, Postgres, Redis" bash hack/dev-env.sh up
eval "$(bash hack/dev-env.sh env)"
images=(lite operator router model-server)
[ "$RUNTIME" = openclaw ] && images+=(openclaw)
step "build binaries ($PROFILE)" cargo build --locked $([ "$PROFILE" = release ] && echo --release) \
  -p clawdbot-operator --bin operator -p clawdbot-router --bin clawdbot-router --bin clawdbot-admin
step "build and import images" bash hack/build-images.sh "${images[@]}"
BIN=$CARGO_TARGET_DIR/$PROFILE

apply_base() {
  # The local API server is 1.20: it predates CEL, so client-side validation is off for the
  # CRDs (the server drops the rules; the operator enforces the same checks).
  kubectl apply --validate=false -f crds/
  kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS"
  # The platform model: SmolLM2 behind llama-cpp-python's server, through its vLLM-compatible
  # entry point (vLLM's flags, /health), on CPU: no GPU.
  kubectl apply -n "$NS" -f - <<'EOF'
apiVersion: clawdbot.io/v1alpha1
kind: ModelEndpoint
metadata: {name: local}
spec:
  engine: vllm
  image: ghcr.io/clawdbot/model-server:0.3.36
  models: [{name: smollm2, source: /models/model.gguf}]
  replicas: 1
  gpusPerReplica: 0
  extraArgs: ["--n_ctx", "2048", "--n_threads", "1"]
EOF
  kubectl -n "$NS" scale deployment --all --replicas=1 2>/dev/null || true
}
step "CRDs, namespace, ModelEndpoint" apply_base

ADMIN_TOKEN=$(secret admin-token)
WEB_SECRET=$(secret web-secret)
ROUTER_URL=http://127.0.0.1:$ROUTER_PORT
env RUST_LOG=${RUST_LOG:-info} POD_NAMESPACE=$NS WATCH_NAMESPACE=$NS METRICS_ADDR=127.0.0.1:$OPERATOR_METRICS_PORT \
  SERVICE_ADDRESSES=cluster-ip "$BIN/operator" >"$LOGS/operator.log" 2>&1 &
PIDS+=($!)
env RUST_LOG=${RUST_LOG:-info} DATABASE_URL="$DATABASE_URL" REDIS_URL="$CLAWDBOT_TEST_REDIS_URL" \
  ROUTER_LISTEN=127.0.0.1:$ROUTER_PORT ROUTER_METRICS_LISTEN=127.0.0.1:$ROUTER_METRICS_PORT \
  ROUTER_ADMIN_TOKEN="$ADMIN_TOKEN" ROUTER_WEB_TOKEN_SECRET="$WEB_SECRET" ROUTER_WATCH_NAMESPACE=$NS \
  ROUTER_JWT_SECRET="$(secret jwt-secret)" ROUTER_MASTER_KEYS="local1:$(master_key)" \
  ROUTER_WORKSPACE_NAMESPACE=$NS ROUTER_WORKSPACE_MODEL=smollm2 ROUTER_WORKSPACE_MODEL_ENDPOINT=local \
  ROUTER_DASHBOARD_ORIGIN=$ROUTER_URL \
  POD_NAMESPACE=$NS "$BIN/clawdbot-router" >"$LOGS/router.log" 2>&1 &
PIDS+=($!)
wait_router() {
  for _ in $(seq 1 120); do
    curl -sf "$ROUTER_URL/readyz" >/dev/null && return 0
    kill -0 "${PIDS[1]}" 2>/dev/null || { echo "the router exited; log: $LOGS/router.log"; return 1; }
    sleep 0.5
  done
  return 1
}
step "start the operator and the router" wait_router

demo() {
  local user_file=$LOGS/demo-user user
  user=$(cat "$user_file" 2>/dev/null || true)
  if [ -z "$user" ] || ! psql "$DATABASE_URL" -qtAc "SELECT 1 FROM users WHERE id = '$user'" | grep -q 1; then
    user=$("$BIN/clawdbot-admin" create-user --plan pro)
    echo "$user" > "$user_file"
  fi
  kubectl apply -n "$NS" -f - <<EOF
apiVersion: clawdbot.io/v1alpha1
kind: UserWorkspace
metadata: {name: demo}
spec:
  ownerId: "$user"
  plan: pro
  runtime: $RUNTIME
  model: {name: smollm2, endpointRef: {name: local}, maxTokens: 128, contextWindow: 4096}
  storage: {size: 1Gi, retention: Retain}
  idleTimeout: 30m
EOF
  curl -sf -X POST "$ROUTER_URL/api/v1/web/token" -H "Authorization: Bearer $ADMIN_TOKEN" \
    -H 'content-type: application/json' -d "{\"user_id\": \"$user\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$LOGS/web-token"
  local limit=120; [ "$RUNTIME" = openclaw ] && limit=600
  # Running, and its model ready too: the model server loads its weights after the agent
  # starts, and until then a message gets "the model server is unavailable".
  local ready='{.status.phase} {.status.conditions[?(@.type=="ModelReady")].status}'
  for _ in $(seq 1 $((limit * 2))); do
    [ "$(kubectl -n "$NS" get uws demo -o jsonpath="$ready" 2>/dev/null)" = "Running True" ] && return 0
    sleep 0.5
  done
  echo "the demo workspace is not Running with its model ready after ${limit}s:"
  kubectl -n "$NS" get uws,mep,pods -o wide
  kubectl -n "$NS" get uws demo -o jsonpath='{.status.conditions}'
  return 1
}
step "demo user and $RUNTIME workspace running, model ready" demo

WEB_TOKEN=$(cat "$LOGS/web-token")
cat > "$STATE/platform.env" <<EOF
export CLAWDBOT_ROUTER_URL=$ROUTER_URL
export CLAWDBOT_DEMO_USER=$(cat "$LOGS/demo-user")
export CLAWDBOT_DEMO_WEB_TOKEN=$WEB_TOKEN
EOF
chmod 600 "$STATE/platform.env"
cat <<EOF

The platform runs ($(( $(date +%s) - T0 )) s). Chat with the demo assistant (SmolLM2-135M, small and
quick, not clever):

  eval "\$(hack/dev-env.sh env)"
  curl -N \$CLAWDBOT_ROUTER_URL/api/v1/web/messages -H "Authorization: Bearer \$CLAWDBOT_DEMO_WEB_TOKEN" \\
    -H 'content-type: application/json' -d '{"id": "'\$RANDOM'", "text": "What is the capital of France?"}'

  The web dashboard: $ROUTER_URL/dashboard (sign up there: each account gets its own
  assistant, a pod on this node; connect channels, chat, keys, settings).

  kubectl get uws,mep,pods -n $NS          # KUBECONFIG=$KUBECONFIG
  logs: $LOGS/{operator,router}.log, pod logs under /var/log/pods/

Ctrl-C stops the operator, the router and the demo's pods.
EOF
wait "${PIDS[@]}"
