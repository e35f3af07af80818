"""Entry point of the local model-server image (hack/build-images.sh): llama-cpp-python's
OpenAI-compatible server started with the command line a ModelEndpoint of engine `vllm` gets
from the operator (operator/src/build/model.rs: `--model SOURCE --served-model-name NAME --host
H --port P [extraArgs]`), and vLLM's `/health`, which the operator's probes ask for. So the
platform's own ModelEndpoint runs unchanged on a machine without a GPU or vLLM image."""
import sys

import llama_cpp.server.__main__ as server_main
import llama_cpp.server.app as server_app

VLLM_TO_LLAMA = {"--served-model-name": "--model_alias"}

def create_app(*args, **kwargs):
    app = original(*args, **kwargs)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    return app

original = server_app.create_app
server_app.create_app = create_app
server_main.create_app = create_app
sys.argv = [sys.argv[0]] + [VLLM_TO_LLAMA.get(a, a) for a in sys.argv[1:]]
server_main.main()
