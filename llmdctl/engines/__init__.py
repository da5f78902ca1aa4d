"""Real inference engines run beside the simulator: today vLLM (CPU build on a laptop, GPU build on a GPU box).

The engine lives in its own virtualenv so its heavy, tightly pinned stack (torch, transformers) never
touches the project's environment; llmdctl only builds command lines for it and talks to it over HTTP/ZMQ.
"""

from llmdctl.engines.vllm_env import EngineError, install_vllm, vllm_python, vllm_status, vllm_venv_dir
from llmdctl.engines.vllm_local import VllmPod, vllm_components, vllm_env, vllm_pod_argv

__all__ = [
    "EngineError",
    "VllmPod",
    "install_vllm",
    "vllm_components",
    "vllm_env",
    "vllm_pod_argv",
    "vllm_python",
    "vllm_status",
    "vllm_venv_dir",
]
