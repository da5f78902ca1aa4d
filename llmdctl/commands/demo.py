"""`llmdctl demo NAME`: scripted demos of llm-d's well-lit paths, side by side."""

from __future__ import annotations

from pathlib import Path

import typer

from llmdctl.commands import fail, paragraphs

HELP = """Run a scripted demo: it says what it runs and about how long before starting, brings up what it
needs (a local stack in a private run directory, or the offline planner for the heavy ones, and says which),
prints a side-by-side table with ratios against the first configuration, writes JSON and PNG plots, and
cleans up everything it started.

Demos: kv-cache-wins (random vs load vs approximate vs precise routing and the inference-scheduling,
precise-prefix-cache and predicted-latency profiles; --plan runs llm-d's 73%-capacity
benchmark on the planner), pd (aggregated vs prefill/decode disaggregation, planner), wide-ep (DeepSeek-R1
per-rank routing, planner), kv-offload (GPU-only vs a CPU KV tier, planner), semantic-kv (blind LRU vs typed
KV policies on an agentic workload, live). `llmdctl demo list` lists them."""


def demo_command(
    name: str = typer.Argument(..., help="Demo name, or `list`."),
    out: Path = typer.Option(Path("llmdctl-demo"), "--out", "-o", help="Directory for the JSON and PNG plots."),
    plan: bool = typer.Option(
        False, "--plan", help="kv-cache-wins: run llm-d's 73%-capacity benchmark on the planner instead of live."
    ),
    time_scale: float = typer.Option(
        0.1,
        "--time-scale",
        help=(
            "kv-cache-wins --plan: fraction of llm-d's ladder to simulate (1 = all of it, comparable with llm-d's "
            "published figures; below 1 an approximation, shown without them)."
        ),
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (progress goes to stderr)."),
) -> None:
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llmdctl.bench import report
    from llmdctl.demos.catalog import DEMOS, run_demo

    con, err = Console(), Console(stderr=True)
    if name == "list":
        for d in DEMOS.values():
            con.print(f"[bold]{d.name:14s}[/bold] {d.title} ({d.mode}, ~{d.minutes:g} min)", highlight=False)
        return
    if name not in DEMOS:
        raise fail(f"demo: expected one of {', '.join(DEMOS)} (or list), got {name!r}", 2)
    if not 0 < time_scale <= 1:
        raise fail(f"--time-scale: expected a fraction in (0, 1], got {time_scale}", 2)
    d = DEMOS[name]
    mode = "plan" if (plan or d.mode == "plan") else "live"
    what = (
        d.what
        if not (plan and name == "kv-cache-wins")
        else (
            f"the planner (offline): llm-d's 73%-capacity benchmark, ladder x{time_scale:g}, four policies and three "
            "profiles"
        )
    )
    minutes = d.minutes if not plan else max(1.0, 20 * time_scale)
    err.print(
        f"[bold]{d.title}[/bold] ({mode}): runs {what}. About {minutes:g} minutes. Results in {out}/.", highlight=False
    )
    kw = {"plan": plan, "time_scale": time_scale} if name == "kv-cache-wins" else {}
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=as_json,
        ) as prog:
            tasks: dict[str, int] = {}

            def cb(label: str, done: int, total: int) -> None:
                if label not in tasks:
                    tasks[label] = prog.add_task(label[:30], total=total)
                prog.update(tasks[label], completed=done, total=total)

            res = run_demo(name, out, lambda m: err.print(m, highlight=False), cb, **kw)
    except ValueError as exc:
        raise fail(str(exc), 1) from None
    except Exception as exc:  # a stack that did not come up, etc.: one line, not a traceback
        raise fail(f"demo {name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", 1) from None
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=2, default=str))
        return
    report.print_table(report.compare_table(f"{d.title}: {res.title}", res.summaries, res.ratios, res.published), con)
    for n in res.notes:
        con.print(f"[dim]{n}[/dim]", highlight=False)
    for f in res.files:
        con.print(f"wrote {f}", highlight=False)


demo_command.__doc__ = paragraphs(HELP)
app = demo_command
