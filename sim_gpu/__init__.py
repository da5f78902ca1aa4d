"""sim_gpu: a vLLM-compatible simulated model server (llm-d-inference-sim's wire, BLIS-style physics).

Most users run it from the CLI (`llmdctl sim serve`, `python -m sim_gpu serve`). In Python:
`ServeConfig` + `SimProcess` host pods in an event loop; `SimEngine` is the pure engine the offline
planner drives with a virtual clock; `BuiltinTokenizer` / `load_tokenizer` tokenize as the pods do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BuiltinTokenizer",
    "ServeConfig",
    "SimEngine",
    "SimProcess",
    "EngineConfig",
    "load_tokenizer",
    "__version__",
]

_LAZY = {
    "BuiltinTokenizer": "kvtiers.tokenizer",
    "load_tokenizer": "kvtiers.tokenizer",
    "ServeConfig": "sim_gpu.server",
    "SimProcess": "sim_gpu.server",
    "SimEngine": "sim_gpu.engine",
    "EngineConfig": "sim_gpu.engine",
}

if TYPE_CHECKING:  # pragma: no cover
    from kvtiers.tokenizer import BuiltinTokenizer, load_tokenizer
    from sim_gpu.engine import EngineConfig, SimEngine
    from sim_gpu.server import ServeConfig, SimProcess


def __getattr__(name: str) -> Any:
    """Import on first use so `import sim_gpu.engine` (the planner) does not pull in the HTTP stack."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sim_gpu' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
