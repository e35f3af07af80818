#!/usr/bin/env bash
# Builds the Kubernetes v1.20.2 binaries of a single-node cluster from Debian bookworm's source
# package (no prebuilt binaries can be downloaded here): the control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler), the node (kubelet, kube-proxy) and the static
# `pause` every pod sandbox runs. About 12 minutes on 2 cores in one pass (one source tree, one
# Go cache), so the result is cached under $CLAWDBOT_CACHE and rebuilt only when missing.
set -euo pipefail
CACHE=${CLAWDBOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawdbot}
OUT=$CACHE/k8s-v1.20.2/bin
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
have_all() { for b in $BINS pause; do [ -x "$OUT/$b" ] || return 1; done; }
if have_all; then exit 0; fi
VERSION=1.20.5+really1.20.2-1.1+deb12u1
W=$(mktemp -d /tmp/clawdbot-k8s-build.XXXXXX)
trap 'rm -rf "$W"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs "deb-src" /etc/apt/sources.list.d/ /etc/apt/sources.list; then
  cat > /etc/apt/sources.list.d/clawdbot-debsrc.sources <<'S'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
S
  apt-get update -qq
fi
echo "building $BINS v1.20.2 from Debian source (~12 min on 2 cores)"
cd "$W"
apt-get source -qq --download-only "kubernetes=$VERSION"
dpkg-source -x "kubernetes_$VERSION.dsc" src >/dev/null
cd src
# The vendored reflect2 1.0.1 crashes under Go >= 1.18 on the first custom resource write;
# Debian's reflect2 1.0.2 and json-iterator 1.1.12 are drop-in replacements.
for d in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  rm -rf "vendor/$d" && mkdir -p "vendor/$d"
  find "/usr/share/gocode/src/$d" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "vendor/$d/" \;
done
export GOPATH=$PWD/.go CGO_ENABLED=0 GOCACHE=$W/gocache HOME=$W
mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
if ! make WHAT="$(printf 'cmd/%s ' $BINS)" KUBE_GIT_VERSION=v1.20.2 \
     KUBE_GIT_TREE_STATE=clean >"$W/make.log" 2>&1; then
  tail -50 "$W/make.log"; exit 1
fi
mkdir -p "$OUT"
for b in $BINS; do cp "$(ls _output/bin/$b _output/local/go/bin/$b 2>/dev/null | head -n1)" "$OUT/"; done
# The pod sandbox: Kubernetes' own pause.c, static, so its image needs nothing else.
gcc -Os -static -o "$OUT/pause" build/pause/linux/pause.c -DVERSION=3.4.1
echo "control plane binaries cached in $OUT"
