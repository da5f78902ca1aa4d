"""`llmdctl down`: stop everything `up` started and verify nothing is left."""

from __future__ import annotations

import json

import typer

from llmdctl.commands import fail

HELP = """Stop every component of the running stack (also after a component crashed): SIGTERM to each
process group, SIGKILL after a grace period, then check that no process and no listening port remains and
remove the run state. Logs stay in $LLMDCTL_HOME/logs. Does nothing when nothing runs."""


def down_command(
    grace: float = typer.Option(5.0, "--grace", min=0.0, help="Seconds to wait after SIGTERM before SIGKILL."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    from llmdctl.local import stack
    from llmdctl.local.state import StateError

    try:
        result = stack.down(grace_s=grace)
    except StateError as exc:
        raise fail(str(exc)) from None
    k8s_code = _down_k8s(as_json)
    if result.profile is None and k8s_code is not None:
        raise typer.Exit(k8s_code)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "profile": result.profile,
                    "seconds": round(result.seconds, 3),
                    "stopped": result.stopped,
                    "killed": result.killed,
                    "remaining_pids": result.remaining_pids,
                    "listening": result.listening,
                    "leftovers": result.leftovers,
                },
                indent=2,
            )
        )
    elif result.profile is None:
        typer.echo(
            f"Nothing was recorded as running; stopped {len(result.leftovers)} leftover process(es) of an interrupted "
            f"`up`: pids {', '.join(map(str, result.leftovers))}."
            if result.leftovers
            else "Nothing is running."
        )
    else:
        typer.echo(
            f"Stopped {result.profile}: {len(result.stopped)} running component(s) in {result.seconds:.2f}s"
            + (f" ({', '.join(result.killed)} ignored SIGTERM for {grace:g}s and got SIGKILL)" if result.killed else "")
            + "."
        )
        if result.leftovers:
            typer.echo(
                f"Also stopped {len(result.leftovers)} process(es) of this run that its state did not name: pids "
                f"{', '.join(map(str, result.leftovers))}."
            )
        for line in result.listening:
            typer.echo(f"warning: {line}", err=True)
    if result.remaining_pids:
        raise fail(
            f"processes still alive after SIGKILL: {', '.join(map(str, result.remaining_pids))}; run state kept so "
            "`llmdctl down` can retry"
        )


def _down_k8s(as_json: bool) -> int | None:
    """Also remove a Kubernetes stack recorded by `up --target kind|kube`; None when there is none."""
    from llmdctl.paths import home_dir

    if not (home_dir() / "k8s.json").exists():
        return None
    from rich.console import Console

    from llmdctl.k8s import down_stack

    return down_stack(console=Console(stderr=as_json))
