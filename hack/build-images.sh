#!/usr/bin/env bash
# Builds the project's images on this machine, without a registry or a base image download,
# and imports them into the development node's containerd under the names the operator, the
# chart and hack/run-local.sh use:
#   ghcr.io/clawdbot/agent-lite:0.1.0          agent-image/lite/Dockerfile
#   ghcr.io/clawdbot/operator:0.1.0            operator/Dockerfile
#   ghcr.io/clawdbot/router:0.1.0              router/Dockerfile
#   ghcr.io/clawdbot/agent-openclaw:2026.9.6   agent-image/openclaw/Dockerfile (cached runtime)
#   ghcr.io/clawdbot/model-server:0.3.36       llama-cpp-python's server + SmolLM2 (no Dockerfile:
#                                              production uses vLLM or Ollama images)
#   ghcr.io/clawdbot/chart-test:0.1.0          curl and a shell from this machine's Debian, for the
#                                              chart's `helm test` pod on the local node (the
#                                              chart's default is docker.io/curlimages/curl)
# Each image holds the files its Dockerfile puts there (checked below: every COPY destination
# exists), plus the shared libraries the binaries need (what distroless/cc or Debian provide in
# production): one layer made by hack/oci-image.py.
# Usage: hack/build-images.sh [lite operator router openclaw model-server chart-test | all]
# (default: lite operator router). CLAWDBOT_IMAGE_PROFILE=release|debug (default release; the
# production images are release builds). An image whose inputs did not change (content hash)
# is neither rebuilt nor imported again. Needs the node up (hack/dev-env.sh up).
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HACK/.." && pwd)
CACHE=${CLAWDBOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawdbot}
STATE=${CLAWDBOT_DEV_STATE:-/tmp/clawdbot-dev}
PROFILE=${CLAWDBOT_IMAGE_PROFILE:-release}
OUT=$CACHE/images
SOCK=${CONTAINERD_ADDRESS:-$STATE/kube/containerd.sock}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OPENCLAW_VERSION=2026.9.6
LLAMA_VERSION=0.3.36
mkdir -p "$OUT"

ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }

# Copies a dynamically linked program's libraries (and the loader) into a root, at their paths.
copy_libs() {
  local root=$1; shift
  local lib
  for lib in $(ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(/ {print $1}' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

# What every image has, as distroless/base-debian12 has it: the nonroot and app users, /tmp.
base_root() {
  local root=$1
  rm -rf "$root"; mkdir -p "$root/etc" "$root/tmp" "$root/usr/local/bin"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\nclawdbot:x:10001:10001::/data/home:/usr/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\nclawdbot:x:10001:\n' > "$root/etc/group"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && mkdir -p "$root/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  return 0
}

# Checks that every `COPY ... <dest>` of a Dockerfile's final stage exists in the root.
check_dockerfile() {
  local dockerfile=$1 root=$2 dest
  for dest in $(awk '/^FROM /{stage++} {lines[stage]=lines[stage] "\n" $0} END{print lines[stage]}' "$dockerfile" \
                | grep '^COPY ' | awk '{print $NF}'); do
    [ -e "$root$dest" ] || { echo "image from $dockerfile lacks $dest (a COPY of the Dockerfile)" >&2; exit 1; }
  done
}

# Builds the OCI archive unless one with the same key exists, then imports it unless the node
# already has it. Arguments after the name go to oci-image.py.
finish() {
  local name=$1 ref=$2 key=$3 root=$4; shift 4
  local tar=$OUT/$name-$key.tar
  if [ ! -f "$tar" ]; then
    rm -f "$OUT/$name"-*.tar
    python3 "$HACK/oci-image.py" "$root" "$ref" "$tar.part" "$@" >/dev/null
    mv "$tar.part" "$tar"
  fi
  local stamp=$STATE/kube/images/$name
  mkdir -p "$(dirname "$stamp")"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$key" ] || ! ctr_ images ls -q | grep -qx "$ref"; then
    ctr_ images import "$tar" >/dev/null
    echo "$key" > "$stamp"
    echo "imported $ref"
  else
    echo "unchanged $ref"
  fi
}

key_of() { cat "$@" | sha256sum | cut -c1-16; }

cargo_build() {
  # CLAWDBOT_IMAGE_NO_CARGO=1: the binaries are built already (by the caller's own cargo run).
  [ "${CLAWDBOT_IMAGE_NO_CARGO:-0}" = 1 ] && return 0
  local flag=(); [ "$PROFILE" = release ] && flag=(--release)
  (cd "$ROOT" && cargo build -q --locked "${flag[@]}" "$@")
}

rust_image() {
  local name=$1 ref=$2 dockerfile=$3 user=$4; shift 4
  local bins=("$@") root=$OUT/root-$name b
  local paths=(); for b in "${bins[@]}"; do paths+=("$TARGET/$PROFILE/$b"); done
  local key; key=$(key_of "${paths[@]}" "$dockerfile" "$HACK/build-images.sh" "$HACK/oci-image.py")
  if [ ! -f "$OUT/$name-$key.tar" ]; then
    base_root "$root"
    for b in "${paths[@]}"; do install -m 0755 "$b" "$root/usr/local/bin/"; done
    copy_libs "$root" "${paths[@]}"
    mkdir -p "$root/data" && chown 65532:65532 "$root/data"
    check_dockerfile "$dockerfile" "$root"
  fi
  local env=() e
  while read -r e; do [ -n "$e" ] && env+=(--env "$e"); done < <(dockerfile_env "$dockerfile")
  finish "$name" "$ref" "$key" "$root" --user "$user" "${env[@]}" --entrypoint "[\"/usr/local/bin/${bins[0]}\"]"
}

# The ENV lines of a Dockerfile's last stage as K=V (the one-line and continued forms used here).
dockerfile_env() {
  awk '/^FROM /{env=""} /^ENV /{on=1} on{line=$0; sub(/^ENV /,"",line); sub(/\\$/,"",line); env=env " " line; if ($0 !~ /\\$/) on=0} END{print env}' "$1" \
    | tr ' ' '\n' | grep '=' || true
}

lite() {
  cargo_build -p clawdbot-lite-agent --bin clawdbot-lite-agent
  rust_image lite ghcr.io/clawdbot/agent-lite:0.1.0 "$ROOT/agent-image/lite/Dockerfile" 65532:65532 clawdbot-lite-agent
}
operator() {
  cargo_build -p clawdbot-operator --bin operator
  rust_image operator ghcr.io/clawdbot/operator:0.1.0 "$ROOT/operator/Dockerfile" 65532:65532 operator
}
router() {
  cargo_build -p clawdbot-router --bin clawdbot-router --bin clawdbot-admin
  rust_image router ghcr.io/clawdbot/router:0.1.0 "$ROOT/router/Dockerfile" 65532:65532 clawdbot-router clawdbot-admin
}

openclaw() {
  local rt=$CACHE/openclaw-$OPENCLAW_VERSION root=$OUT/root-openclaw
  [ -x "$rt/node/bin/node" ] || bash "$HACK/install-openclaw.sh"
  local dockerfile=$ROOT/agent-image/openclaw/Dockerfile
  local key; key=$( (cat "$ROOT/agent-image/openclaw/package-lock.json" "$ROOT/agent-image/openclaw/entrypoint.sh" \
    "$dockerfile" "$HACK/build-images.sh" "$HACK/oci-image.py"; ls -la "$rt/node/bin/node") | sha256sum | cut -c1-16)
  if [ ! -f "$OUT/openclaw-$key.tar" ]; then
    base_root "$root"
    mkdir -p "$root/opt/openclaw" "$root/bin" "$root/usr/bin" "$root/data"
    cp -a "$rt/node" "$rt/app" "$root/opt/openclaw/"
    install -m 0755 "$ROOT/agent-image/openclaw/entrypoint.sh" "$root/usr/local/bin/clawdbot-openclaw"
    # What entrypoint.sh runs (sh, mkdir) and PID 1 (tini), from the host's Debian packages.
    cp /bin/dash "$root/bin/sh"; cp /bin/mkdir "$root/bin/mkdir"
    local tini; tini=$(command -v tini-static || command -v tini || true)
    if [ -z "$tini" ]; then apt-get install -y -qq --no-install-recommends tini >/dev/null; tini=$(command -v tini); fi
    cp "$tini" "$root/usr/bin/tini"
    copy_libs "$root" "$root/bin/sh" "$root/bin/mkdir" "$root/usr/bin/tini" "$rt/node/bin/node"
    chown 10001:10001 "$root/data"
    check_dockerfile "$dockerfile" "$root"
  fi
  local env=() e
  while read -r e; do [ -n "$e" ] && env+=(--env "$e"); done < <(dockerfile_env "$dockerfile")
  finish openclaw "ghcr.io/clawdbot/agent-openclaw:$OPENCLAW_VERSION" "$key" "$root" --user 10001:10001 \
    --workdir /data "${env[@]}" --entrypoint '["/usr/bin/tini", "--", "/usr/local/bin/clawdbot-openclaw"]'
}

# llama-cpp-python's OpenAI server with the SmolLM2 weights at /models/model.gguf, started by
# hack/model-server/vllm_compat.py (vLLM's flags and /health, as a ModelEndpoint's pod gets
# them); the Python runtime (interpreter, standard library, shared libraries) copied from here.
model_server() {
  local venv=$CACHE/llama-venv gguf=$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf root=$OUT/root-model-server
  [ -x "$venv/bin/python" ] && [ -s "$gguf" ] || bash "$HACK/install-model-server.sh"
  local py; py=$(readlink -f "$venv/bin/python")
  local stdlib; stdlib=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
  local key; key=$( (cat "$HACK/build-images.sh" "$HACK/oci-image.py" "$HACK/model-server/vllm_compat.py"; ls -la "$gguf" "$py"; \
    "$venv/bin/pip" freeze 2>/dev/null) | sha256sum | cut -c1-16)
  if [ ! -f "$OUT/model-server-$key.tar" ]; then
    base_root "$root"
    mkdir -p "$root/models" "$root$(dirname "$py")" "$root$(dirname "$stdlib")"
    cp "$py" "$root$py"
    cp -a "$stdlib" "$root$stdlib"
    rm -rf "$root$stdlib"/{test,idlelib,tkinter,turtledemo,ensurepip}
    mkdir -p "$root/opt"
    cp -a "$venv" "$root/opt/venv"
    ln -sfn "$py" "$root/opt/venv/bin/python"
    cp "$gguf" "$root/models/model.gguf"
    cp "$HACK/model-server/vllm_compat.py" "$root/opt/vllm_compat.py"
    copy_libs "$root" "$py" $(find "$root$stdlib/lib-dynload" "$root/opt/venv" -name '*.so*' -type f)
  fi
  finish model-server "ghcr.io/clawdbot/model-server:$LLAMA_VERSION" "$key" "$root" --user 65532:65532 \
    --env PYTHONUNBUFFERED=1 --entrypoint '["/opt/venv/bin/python", "/opt/vllm_compat.py"]'
}

# What the chart's test and uninstall hooks run (/bin/sh -ec with curl, cat, grep, sleep), from
# the host's Debian binaries and their libraries: no registry to pull curlimages/curl from.
chart_test() {
  local root=$OUT/root-chart-test bins=(/usr/bin/curl /bin/cat /bin/grep /bin/sleep)
  local key; key=$( (cat "$HACK/build-images.sh" "$HACK/oci-image.py"; ls -la /bin/dash "${bins[@]}") | sha256sum | cut -c1-16)
  if [ ! -f "$OUT/chart-test-$key.tar" ]; then
    base_root "$root"
    mkdir -p "$root/bin" "$root/usr/bin"
    cp /bin/dash "$root/bin/sh"
    local b; for b in "${bins[@]}"; do cp "$b" "$root$b"; done
    copy_libs "$root" /bin/dash "${bins[@]}"
  fi
  finish chart-test ghcr.io/clawdbot/chart-test:0.1.0 "$key" "$root" --user 65532:65532 --entrypoint '["/bin/sh"]'
}

want=("$@"); [ ${#want[@]} -eq 0 ] && want=(lite operator router)
[ "${want[0]}" = all ] && want=(lite operator router openclaw model-server chart-test)
for w in "${want[@]}"; do
  start=$(date +%s)
  case $w in
    lite) lite ;; operator) operator ;; router) router ;; openclaw) openclaw ;;
    model-server) model_server ;; chart-test) chart_test ;;
    *) echo "unknown image $w" >&2; exit 2 ;;
  esac
  echo "  ($w: $(( $(date +%s) - start )) s)"
done
