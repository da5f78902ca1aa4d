"""`llmdctl doctor`: what each target needs on this machine, what is missing and how to fix it."""

from __future__ import annotations

import json
from typing import Optional

import typer

_HELP = """Check the prerequisites of every target and say how to fix what is missing: Python, the docker
daemon, kind and kubectl (versions), a kubeconfig, the NVIDIA driver and container toolkit (GPU
passthrough to kind, nvkind's way), free ports, the vLLM engine environment and the offline Kubernetes
schemas. Ends with which targets are ready. Exit status 1 when --target is given and that target is not
ready, else 0."""
HELP = "\n\n".join(" ".join(par.split()) for par in _HELP.split("\n\n"))  # one flowing paragraph each in --help


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    port: list[int] = typer.Option(
        [8000], "--port", "-p", help="Local ports to check are free (repeatable) (default: 8000, the router)."
    ),
    target: Optional[str] = typer.Option(
        None,
        "--target",
        "-t",
        help="Exit 1 unless this target is ready: local, kind, kube, 'kind --gpus', 'local --engine vllm'.",
    ),
) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmdctl.k8s.doctor import TARGETS, readiness, run_checks

    if target is not None and target not in TARGETS:
        typer.echo(f"error: --target: expected one of {', '.join(TARGETS)}, got {target!r}", err=True)
        raise typer.Exit(2)
    findings = run_checks(port)
    ready = readiness(findings)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "findings": [f.to_dict() for f in findings],
                    "targets": {t: {"ready": not b, "blocked_by": b} for t, b in ready.items()},
                },
                indent=2,
            )
        )
    else:
        console = Console()
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("check", "", "finding", "fix"):
            table.add_column(col, overflow="fold")
        marks = {"ok": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]", "skip": "[dim]–[/dim]"}
        for f in findings:
            table.add_row(f.name, marks[f.status], f.detail, f.fix)
        console.print(table)
        console.print()
        for t, blockers in ready.items():
            console.print(
                f"  {t:<20} "
                + ("[green]ready[/green]" if not blockers else f"[red]not ready[/red] ({', '.join(blockers)})"),
                highlight=False,
            )
    if target is not None and ready[target]:
        raise typer.Exit(1)


doctor.__doc__ = HELP
