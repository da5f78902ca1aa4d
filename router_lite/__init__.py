"""router_lite: llm-d's inference scheduler (endpoint picker) and an OpenAI gateway, in Python.

The pure core (config, scheduler, plugins, prefix indexes) imports nothing from the web stack; the
gateway names below load lazily so `import router_lite.scheduler` stays light for offline planning.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RouterSettings",
    "RouterState",
    "Scheduler",
    "build_app",
    "iter_decisions",
    "aiter_decisions",
    "load_config",
    "load_config_file",
    "serve",
]

_LAZY = {
    "RouterSettings": "router_lite.app_state",
    "RouterState": "router_lite.app_state",
    "build_app": "router_lite.gateway",
    "serve": "router_lite.server",
    "iter_decisions": "router_lite.decisions",
    "aiter_decisions": "router_lite.decisions",
    "Scheduler": "router_lite.scheduler",
    "load_config": "router_lite.config",
    "load_config_file": "router_lite.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'router_lite' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
