"""The CLI's hook for `llmdctl up PROFILE --target kind|kube` (called by llmdctl/commands/up.py).

`up(target, profile, **options)` resolves the profile exactly as the local target does (same --engine,
--model, --replicas, --set handling), then runs `llmdctl.k8s.target.up_stack`; failures exit non-zero with
one line. Options other than the common ones (namespace, context, gpus, gateway, port, ...) are the fields
of `llmdctl.k8s.target.K8sOptions`.
"""

from __future__ import annotations

from typing import Any

import typer


def up(
    target: str,
    profile: str,
    *,
    engine: str | None = None,
    model: str | None = None,
    replicas: int | None = None,
    sets: list[str] | None = None,
    timeout: float | None = None,
    as_json: bool = False,
    port: int | None = None,
    **options: Any,
) -> None:
    import json

    from rich.console import Console

    from llmdctl.k8s.target import K8sOptions, load_state, up_stack
    from llmdctl.local.stack import StackError, resolve_profile
    from llmdctl.profile import ProfileError

    console = Console(stderr=as_json)
    try:
        prof, _ = resolve_profile(profile, engine=engine, model=model, replicas=replicas, sets=list(sets or []))
        opts = K8sOptions.from_any({**options, "engine": engine, "timeout_s": timeout, "local_port": port})
    except (ProfileError, StackError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    code = up_stack(prof, target, opts, console)
    if as_json and code == 0:
        typer.echo(json.dumps(load_state(), indent=2))
    if code:
        raise typer.Exit(code)
