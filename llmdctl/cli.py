"""The `llmdctl` command: a root Typer app with its own commands and lazily mounted sub-apps.

Sub-apps owned by other packages (the simulator, the router, engines, Kubernetes rendering, ...) are found by
module path and imported only when their command runs, so `llmdctl --help` stays fast and a missing or
broken optional piece never breaks the rest of the CLI.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click
import typer
from typer.core import TyperGroup

from llmdctl import __version__

# name -> (module, attribute, one-line help shown in `llmdctl --help` without importing)
LAZY: dict[str, tuple[str, str, str]] = {
    "tui": (
        "llmdctl.commands.tui",
        "app",
        "Live terminal view: pods, cache hits and routing decisions as they happen.",
    ),
    "sim": ("sim_gpu.cli", "app", "The simulated vLLM-compatible model server (sim_gpu): serve, calibrate."),
    "router": (
        "router_lite.cli",
        "app",
        "The router / endpoint picker (router_lite): serve with an EndpointPickerConfig.",
    ),
    "engine": (
        "llmdctl.engines.cli",
        "engine_app",
        "Real inference engines: install vLLM into its own environment, check it.",
    ),
    "model": ("llmdctl.commands.model", "app", "Local models for real engines: build a tiny offline model."),
    "render": (
        "llmdctl.commands.render",
        "render",
        "Render Kubernetes objects for a profile (kind or a cloud cluster).",
    ),
    "doctor": (
        "llmdctl.commands.doctor",
        "doctor",
        "Check prerequisites (docker, kind, kubectl, GPU, ports, vLLM) and say how to fix them.",
    ),
    "bench": ("llmdctl.commands.bench", "app", "Benchmarks against the running stack; JSON and plots."),
    "demo": ("llmdctl.commands.demo", "app", "Scripted demos of llm-d's well-lit paths."),
    "plan": ("llmdctl.commands.plan", "app", "Offline planning on a virtual clock: many engines, the real scheduler."),
}


def _module_exists(module: str) -> bool:
    """Whether `module` is installed, found on disk without importing its parent packages (they may be heavy)."""
    from pathlib import Path

    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if not rest:
        return True
    for root in spec.submodule_search_locations or []:
        base = Path(root, *rest.split("."))
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def _find(name: str) -> tuple[str, str] | None:
    """The module and attribute of a lazy command, when its module is installed (found without importing it)."""
    module, attr, _ = LAZY[name]
    return (module, attr) if _module_exists(module) else None


def _as_click(obj: Any, name: str) -> click.Command:
    if isinstance(obj, click.Command):
        return obj
    if isinstance(obj, typer.Typer):
        cmd = typer.main.get_command(obj)
    else:  # a plain function: make it a command
        t = typer.Typer()
        t.command(name)(obj)
        cmd = typer.main.get_command(t)
    cmd.name = name
    return cmd


def _broken(name: str, why: str) -> click.Command:
    def run() -> None:
        typer.echo(f"error: llmdctl {name} is unavailable: {why}", err=True)
        raise typer.Exit(1)

    return click.Command(
        name,
        callback=run,
        help=f"(unavailable: {why})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class LazyGroup(TyperGroup):
    """Lists lazy sub-commands with static help; imports one only to run it or show its own help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = super().list_commands(ctx)
        return own + [n for n in LAZY if n not in own and _find(n) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None or cmd_name not in LAZY or _find(cmd_name) is None:
            return cmd
        if ctx.resilient_parsing or getattr(ctx, "_llmdctl_listing", False):
            return click.Command(cmd_name, help=LAZY[cmd_name][2], short_help=LAZY[cmd_name][2])
        return self.load(cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        ctx._llmdctl_listing = True  # type: ignore[attr-defined]  # list lazy commands without importing them
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx._llmdctl_listing = False  # type: ignore[attr-defined]

    def load(self, name: str) -> click.Command:
        """Import the command's module; a broken one becomes a one-line error, not a traceback."""
        found = _find(name)
        if found is None:
            return _broken(name, "its module is not installed")
        module, attr = found
        try:
            return _as_click(getattr(importlib.import_module(module), attr), name)
        except Exception as exc:  # a broken optional piece must not take the CLI down
            return _broken(name, f"{type(exc).__name__}: {exc}".splitlines()[0])


app = typer.Typer(
    cls=LazyGroup,
    name="llmdctl",
    help="llm-d in a box: run, watch and measure a KV-cache-centric LLM inference stack "
    "(router + model servers) on this machine, a kind cluster or a cloud cluster.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmdctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """llm-d in a box: run, watch and measure a KV-cache-centric LLM inference stack."""


def _register() -> None:
    from llmdctl.commands import down, logs, paragraphs, profiles, status, up

    app.command(
        "up",
        help=paragraphs(up.HELP),
        short_help="Start a profile's stack (router + model servers) and wait until it is healthy.",
        no_args_is_help=True,
    )(up.up_command)
    app.command(
        "down",
        help=paragraphs(down.HELP),
        short_help="Stop everything `up` started; verify no process or port is left.",
    )(down.down_command)
    app.command(
        "status",
        help=paragraphs(status.HELP),
        short_help="Components, health, and each pod's queue, running, KV usage and prefix-cache hit rate.",
    )(status.status_command)
    app.command(
        "logs",
        help=paragraphs(logs.HELP),
        short_help="Logs of a component or pod (or the tail of all), optionally following.",
    )(logs.logs_command)
    app.add_typer(profiles.app, name="profiles")


_register()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
