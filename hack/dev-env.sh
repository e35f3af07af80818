#!/usr/bin/env bash
# Starts (or finds running) the real servers the tests and hack/run-local.sh use:
#   a single-node Kubernetes v1.20.2 (https://127.0.0.1:16443): etcd, kube-apiserver,
#     kube-controller-manager, kube-scheduler, containerd + runc, kubelet, kube-proxy, and the
#     project's volume provisioner (hack/provisioner) behind the default StorageClass `local`
#   PostgreSQL 15                                              (127.0.0.1:15432)
#   Redis 7                                                    (127.0.0.1:16379)
# Everything listens on loopback, except what pods must reach on the node's own bridge
# (knode0, 10.244.0.1/24, private to this machine: no masquerading, no forwarding in or out).
# Usage: hack/dev-env.sh up|down|reset|env. `up` is idempotent and safe to call from several test
# processes at once (it takes a lock); it prints shell exports, also written to $STATE/env.
# `down` deletes the pods first (so no container, shim or mount outlives the node), then stops
# every server; `reset` also wipes their data.
# Settings (environment): CLAWDBOT_DEV_STATE (state dir), CLAWDBOT_NODE=0 (API server only, no
# kubelet), CLAWDBOT_API_PORT, CLAWDBOT_ETCD_PORT (+1 for peers), CLAWDBOT_PG_PORT,
# CLAWDBOT_REDIS_PORT: a second instance on other ports can run beside the usual one, but only
# one node (kubelet, containerd, kube-proxy) per machine.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
STATE=${CLAWDBOT_DEV_STATE:-/tmp/clawdbot-dev}
CACHE=${CLAWDBOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawdbot}
BIN=$CACHE/k8s-v1.20.2/bin
PG_PORT=${CLAWDBOT_PG_PORT:-15432}
REDIS_PORT=${CLAWDBOT_REDIS_PORT:-16379}
API_PORT=${CLAWDBOT_API_PORT:-16443}
ETCD_PORT=${CLAWDBOT_ETCD_PORT:-12379}
ETCD_PEER_PORT=$((ETCD_PORT + 1))
NODE=${CLAWDBOT_NODE:-1}
NODE_NAME=node1
BRIDGE=knode0
BRIDGE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/12
# Which state dir owns the machine's one node (kubelet, containerd, kube-proxy, the bridge).
NODE_OWNER=/run/clawdbot-node.owner
D=$STATE/kube
mkdir -p "$STATE"

env_lines() {
  cat <<E
export KUBECONFIG=$D/kubeconfig
export CLAWDBOT_TEST_KUBECONFIG=$D/kubeconfig
export CLAWDBOT_TEST_DATABASE_URL=postgres://clawdbot:clawdbot@127.0.0.1:$PG_PORT/clawdbot
export DATABASE_URL=postgres://clawdbot:clawdbot@127.0.0.1:$PG_PORT/clawdbot
export CLAWDBOT_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
E
  if node_running; then
    # The host's address on the pods' bridge: a server the pods must reach listens here.
    echo "export CLAWDBOT_NODE_HOST_IP=$BRIDGE_IP"
    echo "export CONTAINERD_ADDRESS=$D/containerd.sock"
    echo "export CONTAINERD_NAMESPACE=k8s.io"
  fi
  # hack/run-local.sh writes how to reach the platform it started (router URL, demo token).
  if [ -f "$STATE/platform.env" ]; then cat "$STATE/platform.env"; fi
}

alive() { [ -f "$D/$1.pid" ] && kill -0 "$(cat "$D/$1.pid")" 2>/dev/null; }

api_ready() {
  curl -sf --max-time 2 --cacert "$D/pki/ca.crt" -H "Authorization: Bearer test-token" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}

node_running() { [ "$NODE" = 1 ] && alive kubelet; }

# Starts `name` in the background, detached (setsid: the servers outlive the test process that
# started them; 9>&-: they must not hold the lock), unless its pid is alive.
launch() {
  local name=$1; shift
  alive "$name" && return 0
  setsid "$@" >"$D/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$D/$name.pid"
}

fail() {
  echo "dev-env: $1 (log: $2)" >&2
  [ -f "$2" ] && tail -20 "$2" >&2
  exit 1
}

pki() {
  mkdir -p "$D/pki" "$D/etcd-data"
  cd "$D/pki"
  [ -f sa.key ] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
  [ -f ca.key ] || {
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=clawdbot-test-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1\n" > ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile ext.cnf 2>/dev/null
  }
  echo "test-token,admin,admin,system:masters" > tokens.csv
  cd - >/dev/null
  cat > "$D/kubeconfig" <<EOK
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: $D/pki/ca.crt}}]
users: [{name: admin, user: {token: test-token}}]
contexts: [{name: local, context: {cluster: local, user: admin, namespace: default}}]
current-context: local
EOK
}

start_control_plane() {
  if ! api_ready; then
    # A half-started control plane: stopped and waited for (a dying etcd still counts as
    # alive, and `launch` would then start nothing). etcd's quota: 8 GiB rather than the
    # default 2, which six 1,000-tenant convergence runs and a 5,000 one filled in one sitting
    # ("mvcc: database space exceeded": every write refused until a reset).
    stop_pids "$D/etcd.pid" "$D/apiserver.pid"
    launch etcd etcd --data-dir "$D/etcd-data" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
      --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync \
      --quota-backend-bytes=8589934592
    # PodNodeSelector: a namespace annotated scheduler.alpha.kubernetes.io/node-selector keeps
    # its pods off the node (tests that play the kubelet's part themselves use that).
    # --kubelet-preferred-address-types: the node name resolves nowhere here.
    launch apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 \
      --advertise-address=127.0.0.1 --secure-port="$API_PORT" --tls-cert-file="$D/pki/server.crt" \
      --tls-private-key-file="$D/pki/server.key" --client-ca-file="$D/pki/ca.crt" \
      --token-auth-file="$D/pki/tokens.csv" --authorization-mode=RBAC \
      --service-account-key-file="$D/pki/sa.pub" --service-account-signing-key-file="$D/pki/sa.key" \
      --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range=$SERVICE_CIDR \
      --enable-admission-plugins=NodeRestriction,PodNodeSelector \
      --kubelet-preferred-address-types=InternalIP,Hostname \
      --allow-privileged=true --enable-priority-and-fairness=false \
      --max-requests-inflight=1600 --max-mutating-requests-inflight=800
    for _ in $(seq 1 120); do api_ready && break; sleep 0.5; done
    api_ready || fail "kube-apiserver did not become ready" "$D/apiserver.log"
  fi
  # Garbage collection, ReplicaSets, Deployments, default ServiceAccounts and, with a node, the
  # volume binder (PVC <-> PV) and the node lifecycle. Without a node: no kubelet, pods stay
  # Pending, so the controllers that would wait on one are off.
  local controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-ttl'
  [ "$NODE" = 1 ] && controllers='*,-nodeipam,-cloud-node-lifecycle,-service,-route'
  launch controller-manager "$BIN/kube-controller-manager" --kubeconfig="$D/kubeconfig" --leader-elect=false \
    --port=0 --secure-port=0 --service-account-private-key-file="$D/pki/sa.key" --root-ca-file="$D/pki/ca.crt" \
    --use-service-account-credentials=false --controllers="$controllers" \
    --kube-api-qps=200 --kube-api-burst=400
  # One client (and one rate limiter, 20 requests/s by default) serves every controller: with a
  # node, the volume binder's and node lifecycle's requests stalled ReplicaSets for 30 s while
  # a test created twenty tenants at once.
}

# The bridge the pods live on, made before any pod so that host servers can bind its address
# first; the CNI bridge plugin adopts it. The forwarding rules keep pod traffic on the machine:
# pods reach each other and Services (kube-proxy DNATs to pod IPs, hence ip_forward) and the
# host's bridge address, never anything beyond it, and nothing beyond reaches them.
network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  sysctl -qw net.ipv4.ip_forward=1
  iptables -N CLAWDBOT-NODE 2>/dev/null || iptables -F CLAWDBOT-NODE
  iptables -A CLAWDBOT-NODE -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  iptables -A CLAWDBOT-NODE -s "$POD_CIDR" -j DROP
  iptables -A CLAWDBOT-NODE -d "$POD_CIDR" -j DROP
  iptables -C FORWARD -j CLAWDBOT-NODE 2>/dev/null || iptables -I FORWARD 1 -j CLAWDBOT-NODE
  mkdir -p "$D/cni"
  # Pods get one route besides their bridge: the Service range, through the host (kube-proxy's
  # DNAT happens there). Without it a pod could not reach any ClusterIP (no default route, on
  # purpose: every other address stays unreachable at once, as before).
  # Written only when it changed, in place and never truncated first: containerd reloads its
  # CNI configuration on a write event (it ignores a file created or renamed in, and a removed
  # file leaves the node NotReady), and a plain `cat >` on every `up` showed it an empty file
  # ("unexpected end of JSON input"; it kept its old configuration).
  # 00-: containerd uses the first file of the directory by name (an older dev-env wrote
  # 10-node.conflist, without the Service route; removed here, it would lose to this one anyway).
  local conf=$D/cni/00-node.conflist want
  want=$(cat <<EOC
{"cniVersion":"0.4.0","name":"node","plugins":[{"type":"bridge","bridge":"$BRIDGE","isGateway":true,"ipMasq":false,"hairpinMode":true,
 "ipam":{"type":"host-local","dataDir":"$D/cni-ipam","ranges":[[{"subnet":"$POD_CIDR","gateway":"$BRIDGE_IP"}]],
  "routes":[{"dst":"$SERVICE_CIDR"}]}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}
EOC
)
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" | dd of="$conf" conv=notrunc status=none
    truncate -s "$(printf '%s\n' "$want" | wc -c)" "$conf"
  fi
  rm -f "$D/cni/10-node.conflist"
}

start_containerd() {
  # restrict_oom_score_adj: these machines lack CAP_SYS_RESOURCE, so runc cannot set the
  # sandbox's oom_score_adj of -998 ("can't get final child's PID from pipe: EOF") without it.
  cat > "$D/containerd.toml" <<EOC
version = 2
root = "$D/containerd-root"
state = "$D/containerd-state"
[grpc]
  address = "$D/containerd.sock"
[ttrpc]
  address = "$D/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni"
EOC
  launch containerd containerd --config "$D/containerd.toml"
  for _ in $(seq 1 80); do ctr --address "$D/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.25; done
  ctr --address "$D/containerd.sock" version >/dev/null 2>&1 || fail "containerd did not start" "$D/containerd.log"
  # The sandbox image: the static pause binary in a one-file image, under the name containerd
  # asks for (no registry here).
  if ! ctr --address "$D/containerd.sock" -n k8s.io images ls -q | grep -qx "registry.k8s.io/pause:3.6"; then
    rm -rf "$D/pause-root" && mkdir -p "$D/pause-root" && cp "$BIN/pause" "$D/pause-root/pause"
    python3 "$HACK/oci-image.py" "$D/pause-root" registry.k8s.io/pause:3.6 "$D/pause.tar" --entrypoint '["/pause"]' >/dev/null
    ctr --address "$D/containerd.sock" -n k8s.io images import "$D/pause.tar" >/dev/null
  fi
}

node_ready() {
  kubectl --kubeconfig "$D/kubeconfig" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True
}

# The provisioner binary: built once into a target dir of its own, so that `up` called from
# inside `cargo test` never waits on the test's own build lock.
provisioner_bin() {
  local target=$CACHE/tools-target
  local bin=$target/debug/clawdbot-local-provisioner
  if [ ! -x "$bin" ] || [ -n "$(find "$HACK/provisioner" -newer "$bin" -type f 2>/dev/null | head -1)" ]; then
    (cd "$HACK/.." && CARGO_TARGET_DIR=$target cargo build -q -p clawdbot-local-provisioner) \
      >"$D/provisioner-build.log" 2>&1 || fail "building hack/provisioner failed" "$D/provisioner-build.log"
  fi
  echo "$bin"
}

start_node() {
  if [ -f "$NODE_OWNER" ] && [ "$(cat "$NODE_OWNER")" != "$STATE" ] \
     && [ -f "$(cat "$NODE_OWNER")/kube/kubelet.pid" ] && kill -0 "$(cat "$(cat "$NODE_OWNER")/kube/kubelet.pid")" 2>/dev/null; then
    echo "dev-env: the node of $(cat "$NODE_OWNER") runs on this machine; only one kubelet per machine." >&2
    echo "  stop it (CLAWDBOT_DEV_STATE=$(cat "$NODE_OWNER") hack/dev-env.sh down) or use CLAWDBOT_NODE=0" >&2
    exit 1
  fi
  for b in kube-scheduler kubelet kube-proxy pause; do
    [ -x "$BIN/$b" ] || "$HACK/build-kube-control-plane.sh"
  done
  echo "$STATE" > "$NODE_OWNER"
  launch scheduler "$BIN/kube-scheduler" --kubeconfig="$D/kubeconfig" --leader-elect=false --port=0 --secure-port=0 \
    --kube-api-qps=200 --kube-api-burst=400
  network
  start_containerd
  mkdir -p "$D/kubelet" "$D/volumes"
  # cgroupfs driver, no QoS cgroup tree, no swap check, no disk eviction: a development node.
  # Loopback only: `kubectl logs/exec` do not work (a node's InternalIP cannot be loopback);
  # container logs are under /var/log/pods/<ns>_<pod>_<uid>/.
  launch kubelet "$BIN/kubelet" --kubeconfig="$D/kubeconfig" --container-runtime=remote \
    --container-runtime-endpoint="unix://$D/containerd.sock" --cgroup-driver=cgroupfs \
    --cgroups-per-qos=false --enforce-node-allocatable= --fail-swap-on=false --eviction-hard= \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99 --root-dir="$D/kubelet" \
    --hostname-override="$NODE_NAME" --anonymous-auth=false --authentication-token-webhook=false \
    --authorization-mode=AlwaysAllow --address=127.0.0.1 --port=10250 --healthz-bind-address=127.0.0.1 \
    --read-only-port=0 --cluster-domain=cluster.local --volume-plugin-dir="$D/kubelet/plugins" \
    --max-pods=250 --serialize-image-pulls=false --sync-frequency=10s
  # --masquerade-all: a pod calling a Service whose endpoint is on the same bridge gets its
  # reply back through the host (hairpin); the address stays on this machine.
  launch kube-proxy "$BIN/kube-proxy" --kubeconfig="$D/kubeconfig" --hostname-override="$NODE_NAME" \
    --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --masquerade-all \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 --conntrack-max-per-core=0
  api_for_pods
  local provisioner
  provisioner=$(provisioner_bin)
  launch provisioner "$provisioner" --kubeconfig "$D/kubeconfig" --node "$NODE_NAME" --root "$D/volumes"
  for _ in $(seq 1 120); do node_ready && break; sleep 0.5; done
  node_ready || fail "the node did not become Ready" "$D/kubelet.log"
  # The default StorageClass, served by hack/provisioner: a `local` PersistentVolume (the
  # kubelet applies the pod's fsGroup to it) per claim, once a pod that uses it is scheduled.
  kubectl --kubeconfig "$D/kubeconfig" apply -f - >/dev/null 2>&1 <<EOS || fail "StorageClass apply failed" "$D/apiserver.log"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: clawdbot.io/local
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOS
}

# Pods reach the API server as in any cluster, through the `kubernetes` Service (10.96.0.1:443,
# a name in the server certificate; pods get it as KUBERNETES_SERVICE_HOST): kube-proxy sends it
# to the host's bridge address, where hack/tcp-forward.py passes it on to the loopback API
# server (TLS untouched). The API server advertises 127.0.0.1, which an Endpoints object may not
# hold, so it never writes the Service's endpoints (its reconciler logs "may not be in the
# loopback range" every 10 s and changes nothing); dev-env writes them (the controller-manager
# mirrors them into the EndpointSlice kube-proxy reads). The Helm chart's operator and router run
# in pods this way.
api_for_pods() {
  launch api-bridge /usr/bin/python3 "$HACK/tcp-forward.py" "$BRIDGE_IP:$API_PORT" "127.0.0.1:$API_PORT"
  kubectl --kubeconfig "$D/kubeconfig" apply -f - >/dev/null 2>&1 <<EOS || fail "the kubernetes Service's endpoints" "$D/apiserver.log"
apiVersion: v1
kind: Endpoints
metadata: {name: kubernetes, namespace: default}
subsets: [{addresses: [{ip: "$BRIDGE_IP"}], ports: [{name: https, port: $API_PORT, protocol: TCP}]}]
EOS
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }

start_postgres() {
  if pg_isready -h 127.0.0.1 -p "$PG_PORT" -q 2>/dev/null; then return; fi
  local P=$STATE/pg B
  B=$(pg_bin)
  if [ ! -f "$P/data/PG_VERSION" ]; then
    rm -rf "$P"; mkdir -p "$P"; chown postgres:postgres "$P"
    runuser -u postgres -- "$B/initdb" -D "$P/data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  # fsync off: test data need not survive a machine crash, and it makes tests much faster.
  runuser -u postgres -- "$B/pg_ctl" -D "$P/data" -l "$P/log" -w 9>&- -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $P -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start >/dev/null
  runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qtc \
    "SELECT 1 FROM pg_roles WHERE rolname='clawdbot'" | grep -q 1 || \
    runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc \
      "CREATE ROLE clawdbot LOGIN SUPERUSER PASSWORD 'clawdbot'" >/dev/null
  runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qtc \
    "SELECT 1 FROM pg_database WHERE datname='clawdbot'" | grep -q 1 || \
    runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE clawdbot OWNER clawdbot" >/dev/null
}

start_redis() {
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then return; fi
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --logfile "$STATE/redis.log" --pidfile "$STATE/redis.pid" >/dev/null 9>&-
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

stop_pids() {
  local pids=() f
  for f in "$@"; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  # Wait for them to go, so the ports are free for the next `up`.
  for _ in $(seq 1 100); do
    local alive=0 p
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  rm -f "$@"
}

# Pods first, while the kubelet still runs: with the scheduler and controllers stopped nothing
# replaces them, and the kubelet stops their containers (shims and mounts go with them). Their
# Deployments stay, so the next `up` runs them again.
stop_node() {
  local k=(kubectl --kubeconfig "$D/kubeconfig")
  stop_pids "$D/controller-manager.pid" "$D/scheduler.pid"
  if alive kubelet && api_ready; then
    "${k[@]}" delete pods --all -A --grace-period=5 --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do
      [ -z "$(ctr --address "$D/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null)" ] \
        && [ -z "$("${k[@]}" get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  stop_pids "$D/provisioner.pid" "$D/api-bridge.pid" "$D/kubelet.pid" "$D/kube-proxy.pid" "$D/containerd.pid"
  # Anything a dead kubelet left behind: shims of this containerd, then their mounts.
  local shim
  for shim in $(pgrep -f "containerd-shim.*-address $D/containerd.sock" || true); do kill -9 "$shim" 2>/dev/null || true; done
  # (`|| true`: no mount left is the usual case, and grep then fails the pipeline.)
  { grep -o " $STATE/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ "$(cat "$NODE_OWNER" 2>/dev/null)" = "$STATE" ]; then rm -f "$NODE_OWNER"; fi
}

stop_all() {
  stop_node
  stop_pids "$D/apiserver.pid" "$D/etcd.pid" "$STATE/redis.pid"
  [ -d "$STATE/pg/data" ] && runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$STATE/pg/data" -m fast stop >/dev/null 2>&1 || true
}

case "${1:-up}" in
  up)
    exec 9>"$STATE/lock"; flock 9
    mkdir -p "$D"
    [ -x "$BIN/kube-apiserver" ] || "$HACK/build-kube-control-plane.sh" >&2
    pki
    start_postgres; start_redis; start_control_plane
    if [ "$NODE" = 1 ]; then start_node; fi
    env_lines > "$STATE/env"; cat "$STATE/env" ;;
  down) stop_all ;;
  # A fresh cluster and databases: CI starts from one, and a developer can after heavy benches.
  reset)
    stop_all
    if [ "$NODE" = 1 ] && [ -x "$BIN/kube-proxy" ] && ! [ -f "$NODE_OWNER" ]; then
      "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
      iptables -D FORWARD -j CLAWDBOT-NODE 2>/dev/null || true
      iptables -F CLAWDBOT-NODE 2>/dev/null && iptables -X CLAWDBOT-NODE 2>/dev/null || true
      ip link del "$BRIDGE" 2>/dev/null || true
    fi
    rm -rf "$STATE" ;;
  env) env_lines ;;
  *) echo "usage: $0 up|down|reset|env" >&2; exit 2 ;;
esac
