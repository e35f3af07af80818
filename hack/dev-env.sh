#!/usr/bin/env bash
# Starts (or finds running) the real servers the tests use, all on loopback:
#   etcd + kube-apiserver + kube-controller-manager v1.20.2  (https://127.0.0.1:16443)
#   PostgreSQL 15                                              (127.0.0.1:15432)
#   Redis 7                                                    (127.0.0.1:16379)
# Usage: hack/dev-env.sh up|down|reset|env. `up` is idempotent and safe to call from several test
# processes at once (it takes a lock); it prints shell exports, also written to $STATE/env.
set -euo pipefail
STATE=${CLAWDBOT_DEV_STATE:-/tmp/clawdbot-dev}
CACHE=${CLAWDBOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawdbot}
BIN=$CACHE/k8s-v1.20.2/bin
PG_PORT=15432
REDIS_PORT=16379
API_PORT=16443
mkdir -p "$STATE"

env_lines() {
  cat <<E
export KUBECONFIG=$STATE/kube/kubeconfig
export CLAWDBOT_TEST_KUBECONFIG=$STATE/kube/kubeconfig
export CLAWDBOT_TEST_DATABASE_URL=postgres://clawdbot:clawdbot@127.0.0.1:$PG_PORT/clawdbot
export DATABASE_URL=postgres://clawdbot:clawdbot@127.0.0.1:$PG_PORT/clawdbot
export CLAWDBOT_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
E
}

api_ready() {
  curl -sf --max-time 2 --cacert "$STATE/kube/pki/ca.crt" -H "Authorization: Bearer test-token" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}

start_kube() {
  if api_ready; then return; fi
  [ -x "$BIN/kube-apiserver" ] || "$(dirname "$0")/build-kube-control-plane.sh"
  local D=$STATE/kube
  mkdir -p "$D/pki" "$D/etcd-data"
  for p in etcd apiserver controller-manager; do
    [ -f "$D/$p.pid" ] && kill "$(cat "$D/$p.pid")" 2>/dev/null || true
  done
  (
    cd "$D/pki"
    [ -f sa.key ] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
    [ -f ca.key ] || {
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=clawdbot-test-ca" 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=kube-apiserver" 2>/dev/null
      printf "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1\n" > ext.cnf
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile ext.cnf 2>/dev/null
    }
    echo "test-token,admin,admin,system:masters" > tokens.csv
  )
  # setsid: the servers outlive the test process that started them.
  setsid etcd --data-dir "$D/etcd-data" --listen-client-urls http://127.0.0.1:12379 \
    --advertise-client-urls http://127.0.0.1:12379 --listen-peer-urls http://127.0.0.1:12380 \
    --initial-advertise-peer-urls http://127.0.0.1:12380 --initial-cluster default=http://127.0.0.1:12380 \
    --unsafe-no-fsync >"$D/etcd.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$D/etcd.pid"
  setsid "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:12379 --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 --secure-port=$API_PORT --tls-cert-file="$D/pki/server.crt" \
    --tls-private-key-file="$D/pki/server.key" --client-ca-file="$D/pki/ca.crt" \
    --token-auth-file="$D/pki/tokens.csv" --authorization-mode=RBAC \
    --service-account-key-file="$D/pki/sa.pub" --service-account-signing-key-file="$D/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range=10.96.0.0/12 \
    --allow-privileged=true --enable-priority-and-fairness=false \
    --max-requests-inflight=1600 --max-mutating-requests-inflight=800 >"$D/apiserver.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$D/apiserver.pid"
  cat > "$D/kubeconfig" <<EOK
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: $D/pki/ca.crt}}]
users: [{name: admin, user: {token: test-token}}]
contexts: [{name: local, context: {cluster: local, user: admin, namespace: default}}]
current-context: local
EOK
  for _ in $(seq 1 120); do api_ready && break; sleep 0.5; done
  api_ready || { echo "kube-apiserver did not become ready; log:" >&2; tail -30 "$D/apiserver.log" >&2; exit 1; }
  # Garbage collection of ownerReferences, ReplicaSets, default ServiceAccounts. No kubelet:
  # pods are stored and stay Pending.
  setsid "$BIN/kube-controller-manager" --kubeconfig="$D/kubeconfig" --leader-elect=false --port=0 --secure-port=0 \
    --service-account-private-key-file="$D/pki/sa.key" --root-ca-file="$D/pki/ca.crt" \
    --use-service-account-credentials=false \
    --controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-ttl' \
    >"$D/controller-manager.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$D/controller-manager.pid"
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }

start_postgres() {
  if pg_isready -h 127.0.0.1 -p $PG_PORT -q 2>/dev/null; then return; fi
  local D=$STATE/pg B
  B=$(pg_bin)
  if [ ! -f "$D/data/PG_VERSION" ]; then
    rm -rf "$D"; mkdir -p "$D"; chown postgres:postgres "$D"
    runuser -u postgres -- "$B/initdb" -D "$D/data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  # fsync off: test data need not survive a machine crash, and it makes tests much faster.
  runuser -u postgres -- "$B/pg_ctl" -D "$D/data" -l "$D/log" -w 9>&- -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $D -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start >/dev/null
  runuser -u postgres -- psql -h 127.0.0.1 -p $PG_PORT -U postgres -qtc \
    "SELECT 1 FROM pg_roles WHERE rolname='clawdbot'" | grep -q 1 || \
    runuser -u postgres -- psql -h 127.0.0.1 -p $PG_PORT -U postgres -qc \
      "CREATE ROLE clawdbot LOGIN SUPERUSER PASSWORD 'clawdbot'" >/dev/null
  runuser -u postgres -- psql -h 127.0.0.1 -p $PG_PORT -U postgres -qtc \
    "SELECT 1 FROM pg_database WHERE datname='clawdbot'" | grep -q 1 || \
    runuser -u postgres -- psql -h 127.0.0.1 -p $PG_PORT -U postgres -qc "CREATE DATABASE clawdbot OWNER clawdbot" >/dev/null
}

start_redis() {
  if redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; then return; fi
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --logfile "$STATE/redis.log" --pidfile "$STATE/redis.pid" >/dev/null 9>&-
  for _ in $(seq 1 50); do redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
}

stop_all() {
  local pids=()
  for f in "$STATE"/kube/*.pid "$STATE/redis.pid"; do
    [ -f "$f" ] && pids+=("$(cat "$f")")
  done
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  # Wait for them to go, so the ports are free for the next `up`.
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  [ -d "$STATE/pg/data" ] && runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$STATE/pg/data" -m fast stop >/dev/null 2>&1 || true
}

case "${1:-up}" in
  up)
    exec 9>"$STATE/lock"; flock 9
    start_postgres; start_redis; start_kube
    env_lines > "$STATE/env"; cat "$STATE/env" ;;
  down) stop_all ;;
  # A fresh cluster and databases: CI starts from one, and a developer can after heavy benches.
  reset) stop_all; rm -rf "$STATE" ;;
  env) env_lines ;;
  *) echo "usage: $0 up|down|reset|env" >&2; exit 2 ;;
esac
