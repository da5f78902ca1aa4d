"""`llmdctl bench`: a workload at a load shape against an OpenAI endpoint (the local stack by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmdctl.commands import fail

HELP = """Benchmark an OpenAI-compatible endpoint (the running local stack's router by default): stream a
workload at a load shape and report TTFT, inter-token latency, end-to-end latency, throughput, goodput under
an SLO, errors and shed (429) counts, and the pods' prefix-cache hit rate.

Workloads: shared-prefix (llm-d's benchmark shape: groups x prompts, system prompt, question, output),
multi-turn (sessions whose history grows with each actual answer), agentic (shared system prompt + tool
definitions, ReAct loops, tree-of-thought branches), random. Load: Poisson rate stages (--rate 3:20,10:20 or
--rate llmd-73), a closed loop (--concurrency N) or a JSONL trace (--trace FILE).

--compare random,load,approximate,precise (or profile names) runs the same workload once per router config
on the same pods, switching the router live and resetting the pods' caches in between, and prints the
results and the ratios side by side.

Examples: `llmdctl bench --rate 4:10`, `llmdctl bench --compare round-robin,precise-prefix-cache --json`,
`llmdctl bench --workload multi-turn --sessions 8 --turns 4 --concurrency 8 --out results/`."""


def _require_reachable(url: str) -> None:
    """Fail at once, in one line, when nothing answers at `url` (rather than timing out every request)."""
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/v1/models", timeout=3.0, trust_env=False)
    except httpx.HTTPError as exc:
        raise fail(
            f"--url {url}: nothing answers there ({type(exc).__name__}); start a stack with `llmdctl up PROFILE` or "
            "pass --url",
            1,
        ) from None


def _default_target() -> tuple[str, str]:
    try:
        from llmdctl.local.state import load_state

        st = load_state()
        if st is not None:
            return st.router_url, st.model
    except Exception:  # no state, unreadable: fall back to the documented default
        pass
    return "http://127.0.0.1:8000", "sim-model"


def bench_command(
    url: Optional[str] = typer.Option(
        None, "--url", "-u", help="Base URL of the OpenAI endpoint (default: the running local stack's router)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model name to send (default: the stack's served model, or sim-model)."
    ),
    workload: str = typer.Option(
        "shared-prefix", "--workload", "-w", help="shared-prefix | multi-turn | agentic | random."
    ),
    groups: int = typer.Option(8, "--groups", help="shared-prefix: number of groups (distinct system prompts)."),
    prompts_per_group: int = typer.Option(4, "--prompts-per-group", help="shared-prefix: prompts (users) per group."),
    system_len: int = typer.Option(1024, "--system-len", help="System prompt tokens."),
    question_len: int = typer.Option(128, "--question-len", help="Question / user message / observation tokens."),
    output_len: int = typer.Option(32, "--output-len", help="Output tokens per request (ignore_eos)."),
    sessions: int = typer.Option(4, "--sessions", help="multi-turn / agentic: sessions (agents)."),
    turns: int = typer.Option(3, "--turns", help="multi-turn / agentic: turns (ReAct steps) per session."),
    tools_len: int = typer.Option(512, "--tools-len", help="agentic: tool definition tokens."),
    branches: int = typer.Option(2, "--branches", help="agentic: tree-of-thought branches per step (1 = none)."),
    think_time: float = typer.Option(
        0.0, "--think-time", help="multi-turn / agentic: seconds between a turn's answer and the next turn."
    ),
    input_len: int = typer.Option(256, "--input-len", help="random: prompt tokens."),
    num_requests: Optional[int] = typer.Option(
        None, "--num-requests", "-n", help="Requests (default: what the load shape sends, or one full set)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for prompts and arrivals (same seed, same run)."),
    rate: Optional[str] = typer.Option(
        None, "--rate", help="Poisson stages RATE:SECONDS[,...] or llmd-73 (default: 4:10)."
    ),
    concurrency: Optional[int] = typer.Option(
        None, "--concurrency", "-c", help="Closed loop with N requests in flight (instead of --rate)."
    ),
    trace: Optional[Path] = typer.Option(None, "--trace", help='JSONL trace of arrivals ({"timestamp": s} per line).'),
    mode: str = typer.Option("tokens", "--mode", help="Prompt form: tokens (exact lengths) | text | chat."),
    slo_ttft: float = typer.Option(2.0, "--slo-ttft", help="Goodput SLO: TTFT seconds."),
    slo_itl: float = typer.Option(0.1, "--slo-itl", help="Goodput SLO: time per output token, seconds."),
    timeout: float = typer.Option(120.0, "--timeout", help="Per-request timeout, seconds."),
    max_duration: float = typer.Option(600.0, "--max-duration", help="Stop the whole run after this many seconds."),
    max_requests: int = typer.Option(10_000, "--max-requests", help="Never send more than this many requests."),
    max_in_flight: int = typer.Option(256, "--max-in-flight", help="Never have more than this many requests open."),
    pods: Optional[str] = typer.Option(
        None,
        "--pods",
        help=(
            "Comma-separated pod base URLs to read prefix-cache hit rates from (default: the router's "
            "/debug/endpoints)."
        ),
    ),
    compare: Optional[str] = typer.Option(
        None,
        "--compare",
        help=(
            "Comma-separated router configs (random, load, approximate, precise, or profile names) to run side by side."
        ),
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for bench.json and PNG plots."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (progress goes to stderr)."),
    records: bool = typer.Option(False, "--records", help="Include every request's record in the JSON."),
) -> None:
    import json
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llmdctl.bench import report
    from llmdctl.bench.load import LoadSpec, parse_stages, read_trace
    from llmdctl.bench.metrics import SLO
    from llmdctl.bench.runner import BenchConfig, run_bench, run_compare
    from llmdctl.bench.workloads import WorkloadSpec

    d_url, d_model = _default_target()
    url, model = url or d_url, model or d_model
    try:
        if num_requests is not None:  # -n bounds what is sent, whatever the load shape would offer
            if num_requests < 1:
                raise ValueError(f"--num-requests: expected >= 1, got {num_requests}")
            max_requests = min(max_requests, num_requests)
        if sum(x is not None for x in (rate, concurrency, trace)) > 1:
            raise ValueError("--rate, --concurrency and --trace: pick one load shape")
        if concurrency is not None:
            load = LoadSpec(kind="concurrency", concurrency=concurrency, seed=seed, max_requests=max_requests)
        elif trace is not None:
            load = LoadSpec(kind="trace", trace=read_trace(trace, max_requests), seed=seed, max_requests=max_requests)
        else:
            load = LoadSpec(kind="poisson", stages=parse_stages(rate or "4:10"), seed=seed, max_requests=max_requests)
        spec = WorkloadSpec(
            kind=workload,
            seed=seed,
            num_requests=num_requests,
            num_groups=groups,
            prompts_per_group=prompts_per_group,
            system_prompt_len=system_len,
            question_len=question_len,
            output_len=output_len,
            num_sessions=sessions,
            turns=turns,
            tool_defs_len=tools_len,
            branches=branches,
            think_time_s=think_time,
            input_len=input_len,
        )
        cfg = BenchConfig(
            url=url,
            model=model,
            workload=spec,
            load=load,
            mode=mode,
            slo=SLO(slo_ttft, slo_itl),
            timeout_s=timeout,
            max_duration_s=max_duration,
            max_in_flight=max_in_flight,
            keep_records=records,
            pods=[p.strip().rstrip("/") for p in pods.split(",") if p.strip()] if pods else None,
        )
        for p in cfg.pods or []:
            if not p.startswith(("http://", "https://")):
                raise ValueError(f"--pods: expected http(s)://HOST:PORT URLs, got {p!r}")
        cfg.check()
        names = [n.strip() for n in compare.split(",") if n.strip()] if compare else []
        if compare is not None and len(names) < 1:
            raise ValueError("--compare: expected comma-separated config names, e.g. random,precise")
    except ValueError as exc:
        raise fail(str(exc), 2) from None

    _require_reachable(url)
    err = Console(stderr=True)
    err.print(
        f"[bold]bench[/bold] {url}: {spec.describe()}; {load.describe()}; prompts as {mode}"
        + (f"; comparing {', '.join(names)}" if names else ""),
        highlight=False,
    )
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

            def cb(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = prog.add_task(name, total=total)
                prog.update(tasks[name], completed=done, total=total)

            if names:
                doc = run_compare(cfg, names, cb)
            else:
                doc = run_bench(cfg, lambda d, t: cb("requests", d, t))
    except ValueError as exc:
        raise fail(str(exc), 1) from None
    except OSError as exc:
        raise fail(f"{url}: {exc}", 1) from None

    plots = []
    if out is not None:
        report.write_json(out / "bench.json", doc)
        summaries = {n: r["summary"] for n, r in doc["runs"].items()} if names else {"run": doc["summary"]}
        p = report.plot_stages(summaries, out / "bench_stages.png", title=f"{spec.describe()}; {load.describe()}")
        if p:
            plots.append(str(p))
        if names:
            plots.append(
                str(
                    report.plot_bars(
                        summaries,
                        out / "bench_compare.png",
                        title=spec.describe(),
                        source=f"llmdctl bench, live ({url})",
                    )
                )
            )
        doc["files"] = [str(out / "bench.json"), *plots]
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    con = Console(width=None if sys.stdout.isatty() else 200)  # piped: tables not cut to 80 columns
    if names:
        summaries = {n: r["summary"] for n, r in doc["runs"].items()}
        report.print_table(report.compare_table(f"bench --compare ({spec.describe()})", summaries, doc["ratios"]), con)
        bad = {n: s for n, s in summaries.items() if s["ok"] < s["requests"]}
        for n, s in bad.items():
            con.print(
                f"[yellow]{n}: {s['requests'] - s['ok']} of {s['requests']} requests failed (errors {s['errors']}, "
                f"shed {s['shed']}, timeouts {s['timeouts']}); e.g. {s['first_error']}[/yellow]",
                highlight=False,
            )
    else:
        report.print_table(report.summary_table(f"bench {url}", doc["summary"]), con)
        s = doc["summary"]
        if s["requests"] and s["ok"] < s["requests"]:
            con.print(
                f"[yellow]{s['requests'] - s['ok']} of {s['requests']} requests failed; e.g. "
                f"{s['first_error']}[/yellow]",
                highlight=False,
            )
        if s["requests"] and s["ok"] == 0:
            raise typer.Exit(1)
    for f in doc.get("files", []):
        con.print(f"wrote {f}", highlight=False)


from llmdctl.commands import paragraphs  # noqa: E402

bench_command.__doc__ = paragraphs(HELP)
app = bench_command
