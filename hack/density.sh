#!/usr/bin/env bash
# Tenant density on the local node (issue 10's "Numbers"): how much of the machine a running
# lite tenant takes, and what a hibernated one costs.
#   hack/density.sh [N]        (default N=10 running lite tenants)
# Needs the node (`hack/dev-env.sh up`) and the lite image (`hack/build-images.sh lite`). Starts
# the operator (debug build) on a fresh namespace, creates N lite workspaces (own-key model, no
# message is sent: an idle agent, as most tenants are), waits until all are Running, and
# prints the node's memory before and after, per running tenant, and the capacity it implies
# for this machine. Then it hibernates them (idle timeout) and prints the memory once their
# pods are gone. The namespace is deleted at the end.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HACK/.." && pwd)
N=${1:-10}
eval "$(bash "$HACK/dev-env.sh" up)"
[ -n "${CLAWDBOT_NODE_HOST_IP:-}" ] || { echo "density: needs the node (CLAWDBOT_NODE=1)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build -q -p clawdbot-operator --bin operator)
NS=density-$(date +%s)
kubectl create namespace "$NS" >/dev/null
LOG=$(mktemp /tmp/density-operator.XXXX.log)
WATCH_NAMESPACE=$NS POD_NAMESPACE=$NS METRICS_ADDR=127.0.0.1:0 SERVICE_ADDRESSES=cluster-ip \
  OPENAI_BASE_URL="http://$CLAWDBOT_NODE_HOST_IP:9/v1" "$TARGET/debug/operator" >"$LOG" 2>&1 &
OP=$!
cleanup() {
  kill "$OP" 2>/dev/null || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

avail_mib() { awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo; }
# The node's pod processes (agents, pause containers, containerd shims): their pids, and the
# proportional set size of a list of pids in MiB. MemAvailable moves with whatever else the
# machine does (a compiler); the processes that appear with the tenants are theirs alone.
pod_pids() { { pgrep -x clawdbot-lite-a; pgrep -x pause; pgrep -x containerd-shim; } | sort || true; }
pss_mib() {
  local kb=0 p v
  for p in "$@"; do
    v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    kb=$((kb + ${v:-0}))
  done
  echo $((kb / 1024))
}
running() {
  kubectl -n "$NS" get userworkspaces -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' \
    | grep -c "^$1$" || true
}
wait_count() {
  local phase=$1 want=$2 limit=$3 t=0
  until [ "$(running "$phase")" -ge "$want" ]; do
    sleep 2; t=$((t + 2))
    [ "$t" -lt "$limit" ] || { echo "density: only $(running "$phase")/$want $phase after ${limit}s (operator log: $LOG)" >&2; exit 1; }
  done
}

kubectl -n "$NS" create secret generic keys --from-literal=OPENAI_API_KEY=sk-density >/dev/null
sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
before=$(avail_mib)
pids_before=$(pod_pids)
start=$(date +%s)
for i in $(seq 1 "$N"); do
  cat <<EOF
apiVersion: clawdbot.io/v1alpha1
kind: UserWorkspace
metadata: {name: t$i}
spec:
  ownerId: 00000000-0000-4000-8000-$(printf '%012d' "$i")
  plan: pro
  runtime: lite
  idleTimeout: "0"
  keysSecretRef: {name: keys}
  model: {provider: openai, name: gpt-4o-mini, maxTokens: 64}
  storage: {size: 1Gi, retention: Delete}
---
EOF
done | kubectl -n "$NS" apply -f - >/dev/null
wait_count Running "$N" $((60 + N * 10))
ready_s=$(( $(date +%s) - start ))
sleep 10 # let the agents settle (start-up allocations freed)
sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
after=$(avail_mib)
mapfile -t new_pids < <(comm -13 <(echo "$pids_before") <(pod_pids))
pss=$(pss_mib "${new_pids[@]}")
per=$(( (before - after) / N ))
[ "$per" -gt 0 ] || per=1
# Processes in the tenant pods: the agent and its containerd shim and pause container.
# (comm is cut to 15 characters: clawdbot-lite-a)
agent_rss=$(for p in $(pgrep -x clawdbot-lite-a); do awk '/^VmRSS:/ {print $2}' "/proc/$p/status"; done \
  | awk '{s+=$1} END {printf "%d", s/1024}')
total=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
echo "running lite tenants: $N Running in ${ready_s}s"
echo "  node MemAvailable: ${before} MiB before, ${after} MiB after: $((before - after)) MiB, ${per} MiB per running tenant"
echo "  agent processes' RSS: ${agent_rss} MiB in all ($((agent_rss / N)) MiB each); the rest is shim, pause, kernel (cgroups, netns, veth, mounts)"
echo "  the tenants' own processes (${#new_pids[@]}: agents, pause, shims), proportional set size: ${pss} MiB, $((pss / N)) MiB per running tenant"
# The larger of the two per-tenant costs: MemAvailable also sees the kernel's share, but moves
# with everything else on the machine; the processes' PSS is theirs alone.
cost=$(( per > pss / N ? per : pss / N )); [ "$cost" -gt 0 ] || cost=1
echo "  capacity of this ${total} MiB machine at ${cost} MiB per running tenant, keeping 4 GiB for the platform: $(( (total - 4096) / cost )) running tenants (memory only; a kubelet's default --max-pods is 110)"

# Hibernate them all: an idle timeout of 1 s with no activity.
for i in $(seq 1 "$N"); do
  kubectl -n "$NS" patch userworkspace "t$i" --type merge -p '{"spec":{"idleTimeout":"1s"}}' >/dev/null
done
wait_count Hibernated "$N" 180
until [ -z "$(kubectl -n "$NS" get pods -o name)" ]; do sleep 2; done
sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
slept=$(avail_mib)
echo "hibernated: $N tenants, no pods; node MemAvailable ${slept} MiB ($((before - slept)) MiB below the start)"
echo "  a hibernated tenant keeps its API objects (workspace, Deployment at 0, Service, Secret, ConfigMap, PVC) and its volume directory: no memory on the node"
