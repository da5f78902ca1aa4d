"""`llmdctl tui`: parse the options, build the Textual app, run it."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from llmdctl.commands import fail, paragraphs

HELP = """Live terminal view of a running stack: one row per pod (and data-parallel rank) with its queue, KV
usage and prefix-cache hit rate; every routing decision as it happens with the prefix blocks matched on the
chosen pod vs the best alternative and each scorer's weighted score (enter: all candidates side by side);
cluster hit rate, TTFT p50/p90 and request rate over the last minutes.

Keys: d demo load on/off, s switch the router's scheduling profile live (round-robin -> inference-scheduling
-> precise-prefix-cache), space pause, f filter the feed by pod, ? help, q quit.

Attaches to the local stack started by `llmdctl up` (from $LLMDCTL_HOME) unless --url names a router, e.g.
a port-forwarded cluster router. Says so when nothing runs, and reconnects when the router comes back."""

app = typer.Typer(add_completion=False)


@app.command("tui", help=paragraphs(HELP))
def tui_command(
    url: Optional[str] = typer.Option(None, "--url", help="Router URL (default: the running local stack's router)."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="LLMD_ROUTER_API_KEY", help="The router's API key, when it requires one."
    ),
    demo: bool = typer.Option(False, "--demo", help="Start the built-in demo load right away (loopback routers only)."),
    demo_rate: float = typer.Option(8.0, "--demo-rate", help="Demo load requests per second (Poisson), at most 200."),
    demo_duration: float = typer.Option(
        300.0, "--demo-duration", help="Seconds the demo load runs before it stops by itself, at most 3600."
    ),
    refresh_hz: float = typer.Option(
        5.0, "--refresh-hz", help="Screen updates per second (1-30); data arriving faster is coalesced."
    ),
    poll_s: float = typer.Option(1.0, "--poll-s", help="Seconds between polls of the router's and pods' metrics."),
) -> None:
    from llmdctl.tui.demo_load import DemoLoadError, DemoSpec

    if not 1 <= refresh_hz <= 30:
        raise fail(f"--refresh-hz: expected 1 to 30, got {refresh_hz:g}")
    if not 0.2 <= poll_s <= 60:
        raise fail(f"--poll-s: expected 0.2 to 60 seconds, got {poll_s:g}")
    spec = DemoSpec(rate=demo_rate, duration_s=demo_duration)
    try:
        spec.check()
    except DemoLoadError as exc:
        raise fail(str(exc).replace("demo rate", "--demo-rate").replace("demo duration", "--demo-duration")) from None
    if url is not None and not url.strip():
        raise fail("--url: expected a router URL such as http://127.0.0.1:8000")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise fail("llmdctl tui needs an interactive terminal (use `llmdctl status` in scripts)")
    from llmdctl.tui.app import LlmdTui

    LlmdTui(url, api_key, demo=demo, demo_spec=spec, refresh_hz=refresh_hz, poll_s=poll_s).run()
