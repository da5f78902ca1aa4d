"""`llmdctl tui`: a live terminal view of the stack — pods, routing decisions and cache hits as they happen.

Public names: `LlmdTui` (the Textual app), `Subscriber` (the one data source), `Model` (what it fills),
`DemoLoad` (the built-in load). Imported lazily so `import llmdctl.tui` stays cheap; `app` is the
`llmdctl tui` Typer command, found here by the CLI's lazy loader.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LlmdTui", "Subscriber", "Model", "DemoLoad", "app"]

_WHERE = {
    "LlmdTui": ("llmdctl.tui.app", "LlmdTui"),
    "Subscriber": ("llmdctl.tui.subscriber", "Subscriber"),
    "Model": ("llmdctl.tui.model", "Model"),
    "DemoLoad": ("llmdctl.tui.demo_load", "DemoLoad"),
    "app": ("llmdctl.commands.tui", "app"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'llmdctl.tui' has no attribute {name!r}")
    import importlib

    module, attr = _WHERE[name]
    return getattr(importlib.import_module(module), attr)
