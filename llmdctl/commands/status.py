"""`llmdctl status`: what runs, whether it is healthy, and each pod's load and cache figures."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

import typer

from llmdctl.commands import fail

HELP = """Show each component of the running stack (router, simulator or vLLM processes: pid alive, health)
and each pod endpoint (or data-parallel rank): health and, scraped from its /metrics, requests waiting
(vllm:num_requests_waiting), running (vllm:num_requests_running), KV-cache usage (vllm:kv_cache_usage_perc)
and prefix-cache hit rate (vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total, in tokens); with KV
tiers (kv-offload, semantic-kv), each tier's occupancy and the prompt tokens loaded from it
(llmd_sim:kv_tier_usage_perc, llmd_sim:kv_tier_hits_total).
Exits 0 when everything is healthy, 1 when something is down, 3 when nothing runs."""


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if pct else f"{value:g}"


def _ranges(ports: list[int]) -> str:
    """[5557, 5558, 8100, 8101] -> '5557-5558, 8100-8101'."""
    out: list[str] = []
    for p in sorted(set(ports)):
        if out and int(out[-1].rsplit("-", 1)[-1]) == p - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        else:
            out.append(str(p))
    return ", ".join(out) or "-"


def status_command(
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmdctl.local import stack
    from llmdctl.local.state import StateError

    try:
        report = stack.status()
    except StateError as exc:
        raise fail(str(exc)) from None
    if as_json:
        doc = {
            "running": report.running,
            "healthy": report.healthy,
            "profile": report.profile,
            "router_url": report.router_url,
            "started_at": report.started_at,
            "components": [asdict(c) for c in report.components],
            "pods": [asdict(p) for p in report.pods],
        }
        typer.echo(json.dumps(doc, indent=2))
        raise typer.Exit(0 if report.healthy else (3 if not report.running else 1))
    console = Console(width=None if sys.stdout.isatty() else 120)  # piped: do not squeeze the tables to 80
    if not report.running:
        console.print("Nothing is running. Start a stack with `llmdctl up PROFILE` (see `llmdctl profiles list`).")
        raise typer.Exit(3)
    up_for = time.time() - (report.started_at or time.time())
    state = "[green]healthy[/green]" if report.healthy else "[red]degraded[/red]"
    console.print(
        f"[bold]{report.profile}[/bold] {state} · router {report.router_url} · up {up_for:.0f}s", highlight=False
    )
    comps = Table(title="Components", title_justify="left")
    for col in ("name", "kind", "pid", "alive", "health", "ports", "note"):
        comps.add_column(col)
    for c in report.components:
        ports = _ranges(c.ports)
        note = c.detail or (
            f"stopped what was left of it: pids {', '.join(map(str, c.orphans_stopped))}" if c.orphans_stopped else ""
        )
        comps.add_row(
            c.name,
            c.kind,
            str(c.pid or "-"),
            "yes" if c.alive else "[red]no[/red]",
            "[green]ok[/green]" if c.healthy else "[red]down[/red]",
            ports,
            note,
        )
    console.print(comps)
    pods = Table(title="Pods", title_justify="left")
    tiers = [t for t in ("cpu", "disk") if any(f"tier_{t}_usage" in p.metrics for p in report.pods)]
    for col, just in (
        ("pod", "left"),
        ("role", "left"),
        ("address", "left"),
        ("health", "left"),
        ("waiting", "right"),
        ("running", "right"),
        ("KV used", "right"),
        ("prefix hits", "right"),
        *((f"{t.upper()} used·hits", "right") for t in tiers),
    ):
        pods.add_column(col, justify=just, no_wrap=True, min_width=len(col))  # type: ignore[arg-type]
    for p in report.pods:
        m = p.metrics
        tier_cells = [
            f"{_fmt(m.get(f'tier_{t}_usage'), True)} · {_fmt(m.get(f'tier_{t}_hits'))}" for t in tiers
        ]  # used · hit tokens
        pods.add_row(
            p.name,
            p.role,
            p.url.removeprefix("http://"),
            "[green]ok[/green]" if p.healthy else "[red]down[/red]",
            _fmt(m.get("waiting")),
            _fmt(m.get("running")),
            _fmt(m.get("kv_usage"), True),
            _fmt(m.get("prefix_hit_rate"), True),
            *tier_cells,
        )
    console.print(pods)
    if not report.healthy:
        raise typer.Exit(1)
