"""`llmdctl plan`: offline planning on a virtual clock — the real scheduler, simulated engines, no HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmdctl.commands import fail, paragraphs

HELP = """Simulate a deployment offline: the real router scheduler (same plugins and config as `llmdctl up`)
and one simulated engine per pod on a virtual clock, fed by the same workload generators and load shapes as
`llmdctl bench` — no HTTP and no sleeping, many times faster than real time.

SCENARIO is `llmd-73` (llm-d's 73%-capacity benchmark: 8 pods Qwen3-32B on 2xH100, shared-prefix 150x5,
6000+1200 -> 1000 tokens, Poisson 15 QPS warm-up then 3 -> 60 QPS, sent as inference-perf sends it: each
stage drains before the next opens), `small`, or `epd` (what an encode pool buys: multimodal chat, 2 images
per request, on 8 x H100 as aggregated, E/PD 1E+7, P/D 4P+4D and E/P/D 1E+4P+3D, each at 8 -> 40 req/s; TTFT,
E2E, goodput, per-role busy time). --policies picks schedulers (random, load, approximate, precise), or for
`epd` the deployments (aggregated, e-pd, pd, epd). The full ladder runs by default and prints llm-d's
published figures next to ours; anything that changes the setup (--time-scale, --rate-scale, --client,
--max-in-flight) is an approximation, labelled as such, and the published figures are left out.

Sweeps (--replicas 4,8 --hardware H100,H200 --prefix-weights 1,3 --pd 2:6,4:4 --cpu-blocks 0,20000) run every
combination and print the Pareto front of cost (GPUs x --price per GPU-hour, else GPU count) versus TTFT p90
and throughput.

Examples: `llmdctl plan llmd-73`, `llmdctl plan llmd-73 --time-scale 0.1 --policies load,precise --json`,
`llmdctl plan small --replicas 2,4,8 --policies load,precise --out plan/`, `llmdctl plan epd --policies pd,epd`."""

SCENARIO_NAMES = ("llmd-73", "small", "epd")  # kept in step with presets.SCENARIOS + epd.EPD_SCENARIOS (tested)


def _ints(text: Optional[str], flag: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def plan_command(
    scenario: str = typer.Argument("llmd-73", help=f"Scenario: {', '.join(SCENARIO_NAMES)}."),
    policies: Optional[str] = typer.Option(
        None,
        "--policies",
        "-p",
        help=(
            "Comma-separated schedulers: random, load, approximate, precise (default: all four); for epd the "
            "deployments: aggregated, e-pd, pd, epd (default: all four)."
        ),
    ),
    time_scale: float = typer.Option(
        1.0,
        "--time-scale",
        help="Approximation: multiply every stage's duration (0.1: 10x shorter run, not comparable with llm-d's).",
    ),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="Multiply every stage's rate."),
    seed: int = typer.Option(0, "--seed", help="Seed for prompts, arrivals and random pickers."),
    slo_ttft: Optional[float] = typer.Option(
        None, "--slo-ttft", help="Goodput SLO: TTFT seconds (default 2; epd: 0.5)."
    ),
    slo_itl: Optional[float] = typer.Option(
        None, "--slo-itl", help="Goodput SLO: time per output token, seconds (default 0.1; epd: 0.05)."
    ),
    replicas: Optional[str] = typer.Option(None, "--replicas", help="Sweep: pod counts, e.g. 4,8."),
    hardware: Optional[str] = typer.Option(None, "--hardware", help="Sweep: hardware profiles, e.g. H100,H200."),
    prefix_weights: Optional[str] = typer.Option(
        None, "--prefix-weights", help="Sweep: prefix scorer weights, e.g. 1,3,5."
    ),
    pd: Optional[str] = typer.Option(None, "--pd", help="Sweep: P/D splits PREFILL:DECODE, e.g. 2:6,4:4."),
    cpu_blocks: Optional[str] = typer.Option(
        None, "--cpu-blocks", help="Sweep: CPU KV tier blocks per pod, e.g. 0,20000."
    ),
    price: list[str] = typer.Option(
        [], "--price", help="Price per GPU-hour, HARDWARE=USD (repeatable), for sweep costs."
    ),
    client: str = typer.Option(
        "scenario",
        "--client",
        help=(
            "How the benchmark client releases requests: inference-perf (stages drain before the next opens), "
            "open-loop (every Poisson arrival on time), or scenario (the scenario's own: llmd-73 uses inference-perf)."
        ),
    ),
    max_in_flight: Optional[int] = typer.Option(
        None,
        "--max-in-flight",
        help="Client cap on open requests, as a benchmark client's worker pool (default: the scenario's, none).",
    ),
    max_wall: float = typer.Option(1800.0, "--max-wall", help="Stop any one simulation after this many wall seconds."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for plan.json and PNG plots."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (progress goes to stderr)."),
    decisions: int = typer.Option(
        0, "--decisions", help="epd: keep this many routing decisions per run in the JSON (the encode leg shows)."
    ),
) -> None:
    import json
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llmdctl.bench import report
    from llmdctl.bench.inference_perf import CLIENTS
    from llmdctl.bench.metrics import SLO
    from llmdctl.plan.epd import EPD_SCENARIOS
    from llmdctl.plan.presets import POLICIES, SCENARIOS
    from llmdctl.plan.run import SweepSpec, run_policies, sweep

    if scenario in EPD_SCENARIOS:
        given = [
            flag
            for flag, v in (
                ("--replicas", replicas),
                ("--hardware", hardware),
                ("--prefix-weights", prefix_weights),
                ("--pd", pd),
                ("--cpu-blocks", cpu_blocks),
                ("--price", price),
                ("--max-in-flight", max_in_flight),
            )
            if v
        ] + (["--client"] if client != "scenario" else [])
        if given:
            raise fail(f"{given[0]}: not used by scenario {scenario} (it compares fixed deployments, open loop)", 2)
        _plan_epd(
            scenario, policies, time_scale, rate_scale, seed, slo_ttft, slo_itl, max_wall, out, as_json, decisions
        )
        return
    try:
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario: expected one of {', '.join(SCENARIO_NAMES)}, got {scenario!r}")
        if decisions:
            raise ValueError(f"--decisions: kept by scenario epd only, not {scenario}")
        pols = [p.strip() for p in (policies or ",".join(POLICIES)).split(",") if p.strip()]
        for p in pols:
            if p not in POLICIES:
                raise ValueError(f"--policies: expected names from {', '.join(POLICIES)}, got {p!r}")
        if max_in_flight is not None and max_in_flight < 0:
            raise ValueError(f"--max-in-flight: expected 0 (open loop) or a positive integer, got {max_in_flight}")
        if not (time_scale > 0 and rate_scale > 0):
            raise ValueError("--time-scale and --rate-scale: expected > 0")
        if client not in ("scenario", *CLIENTS):
            raise ValueError(f"--client: expected one of scenario, {', '.join(CLIENTS)}, got {client!r}")
        splits = []
        for part in (pd or "").split(","):
            if part.strip():
                a, sep, b = part.partition(":")
                if not sep or not a.strip().isdigit() or not b.strip().isdigit() or int(a) < 1 or int(b) < 1:
                    raise ValueError(f"--pd: expected PREFILL:DECODE pod counts like 2:6, got {part!r}")
                splits.append((int(a), int(b)))
        prices = {}
        for item in price:
            hw, sep, usd = item.partition("=")
            try:
                prices[hw.strip().lower()] = float(usd)
            except ValueError:
                raise ValueError(f"--price {item!r}: expected HARDWARE=USD, e.g. H100=2.5") from None
            if not sep:
                raise ValueError(f"--price {item!r}: expected HARDWARE=USD, e.g. H100=2.5")
        spec = SweepSpec(
            replicas=_ints(replicas, "--replicas"),
            hardware=[h for h in (hardware or "").split(",") if h],
            policies=pols,
            prefix_weights=[float(x) for x in (prefix_weights or "").split(",") if x.strip()],
            pd_splits=splits,
            cpu_blocks=_ints(cpu_blocks, "--cpu-blocks"),
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    is_sweep = bool(spec.replicas or spec.hardware or spec.prefix_weights or spec.pd_splits or spec.cpu_blocks)
    sc = SCENARIOS[scenario]
    err = Console(stderr=True)
    total_sim = sum(s.duration for s in sc.stages) * time_scale
    n_runs = len(pols) if not is_sweep else None
    err.print(
        f"[bold]plan[/bold] {sc.description}; ladder of {total_sim:.0f} s of sends (x{time_scale:g}"
        + (", an approximation" if time_scale != 1.0 else "")
        + ")"
        + (f", {n_runs} policies" if n_runs else ", sweep")
        + "; llmd-73's full ladder takes under a CPU minute per policy",
        highlight=False,
    )
    slo = SLO(2.0 if slo_ttft is None else slo_ttft, 0.1 if slo_itl is None else slo_itl)
    _out_dir(out)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sim {task.fields[sim]:.0f}s"),
            TimeElapsedColumn(),
            console=err,
            transient=as_json,
        ) as prog:
            tasks: dict[str, int] = {}

            def cb(name: str, now: float, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = prog.add_task(name[:40], total=total, sim=0.0)
                prog.update(tasks[name], completed=done, total=total, sim=now)

            if is_sweep:
                doc = sweep(
                    sc,
                    spec,
                    time_scale=time_scale,
                    rate_scale=rate_scale,
                    seed=seed,
                    slo=slo,
                    max_wall_s=max_wall,
                    price=prices or None,
                    progress=cb,
                )
            else:
                mif = "scenario" if max_in_flight is None else (max_in_flight or None)
                doc = run_policies(
                    sc,
                    pols,
                    time_scale=time_scale,
                    rate_scale=rate_scale,
                    seed=seed,
                    slo=slo,
                    max_wall_s=max_wall,
                    progress=cb,
                    max_in_flight=mif,
                    client=client,
                )
    except ValueError as exc:
        raise fail(str(exc), 1) from None

    files = []
    if out is not None:
        files.append(str(report.write_json(out / "plan.json", doc)))
        if is_sweep:
            files.append(str(report.plot_pareto(doc, out / "plan_pareto_ttft.png", "ttft_p90_s", sc.name)))
            files.append(str(report.plot_pareto(doc, out / "plan_pareto_throughput.png", "output_tok_s", sc.name)))
        else:
            p = report.plot_stages(doc["summaries"], out / "plan_stages.png", title=sc.description)
            if p:
                files.append(str(p))
            files.append(
                str(
                    report.plot_bars(
                        report.in_published_form(doc),
                        out / "plan_policies.png",
                        title=sc.name,
                        published=doc.get("published") or None,
                        source="llmdctl plan, virtual clock",
                    )
                )
            )
        doc["files"] = files
    if as_json:
        if not is_sweep:
            doc = {k: v for k, v in doc.items() if k != "summaries"} | {
                "summaries": {
                    k: {kk: vv for kk, vv in v.items() if kk != "endpoints"} for k, v in doc["summaries"].items()
                }
            }
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    con = Console(width=None if sys.stdout.isatty() else 200)  # piped: tables not cut to 80 columns
    if is_sweep:
        report.print_table(report.sweep_table(doc, "pareto_ttft_p90", "Pareto front: cost vs TTFT p90"), con)
        report.print_table(report.sweep_table(doc, "pareto_throughput", "Pareto front: cost vs output tok/s"), con)
    else:
        report.print_table(report.plan_table(doc), con)
        pub = bool(doc.get("published"))
        runs = {k: ({**r, **(r.get("as_published") or {})} if pub else r) for k, r in doc["runs"].items()}
        if "precise" in runs and "approximate" in runs and runs["precise"]["ttft_p90_s"]:
            con.print(
                "precise vs approximate TTFT p90: "
                f"{runs['approximate']['ttft_p90_s'] / runs['precise']['ttft_p90_s']:.1f}x faster"
                + (" (llm-d: 57x)" if pub else "")
            )
        base = runs.get("random") or runs.get("load")
        if "precise" in runs and base and base["output_tok_s"]:
            con.print(
                f"precise vs cache-blind output tok/s: {runs['precise']['output_tok_s'] / base['output_tok_s']:.2f}x"
                + (" (llm-d: ~2x)" if pub else "")
            )
        if doc.get("not_comparable") and sc.published:
            con.print(
                f"[yellow]llm-d's published figures left out: not comparable ({doc['not_comparable']})[/yellow]",
                highlight=False,
            )
    for r in (doc.get("runs") or {}).values():
        if r.get("truncated"):
            con.print(f"[yellow]{r['name']}: {r['truncated']}[/yellow]")
    for f in files:
        con.print(f"wrote {f}", highlight=False)


def _out_dir(out: Optional[Path]) -> None:
    """Create --out before a run of minutes, so an unwritable path fails at once in one line, not after."""
    if out is None:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"--out {out}: cannot create the directory ({exc.strerror or exc})", 2) from None


def _plan_epd(
    scenario: str,
    policies: Optional[str],
    time_scale: float,
    rate_scale: float,
    seed: int,
    slo_ttft: Optional[float],
    slo_itl: Optional[float],
    max_wall: float,
    out: Optional[Path],
    as_json: bool,
    decisions: int,
) -> None:
    """`llmdctl plan epd`: each deployment at each load, one table (or JSON)."""
    import json
    import sys

    from rich.console import Console

    from llmdctl.bench import report
    from llmdctl.bench.metrics import SLO
    from llmdctl.plan.epd import EPD_SCENARIOS, run_epd

    sc = EPD_SCENARIOS[scenario]
    names = [p.strip() for p in (policies or ",".join(sc.deployments)).split(",") if p.strip()]
    if decisions < 0:
        raise fail(f"--decisions: expected an integer >= 0, got {decisions}", 2)
    for flag, value in (("--slo-ttft", slo_ttft), ("--slo-itl", slo_itl)):
        if value is not None and not value > 0:
            raise fail(f"{flag}: expected seconds > 0, got {value:g}", 2)
    _out_dir(out)
    err = Console(stderr=True)
    err.print(f"[bold]plan[/bold] {sc.description}", highlight=False)
    try:
        with err.status("planning ...") as status:

            def cb(name: str, now: float, done: int, total: int) -> None:
                status.update(f"{name}: sim {now:.0f}s, {done}/{total} requests")

            doc = run_epd(
                sc,
                names,
                time_scale=time_scale,
                rate_scale=rate_scale,
                seed=seed,
                slo=SLO(sc.slo.ttft_s if slo_ttft is None else slo_ttft, sc.slo.itl_s if slo_itl is None else slo_itl),
                max_wall_s=max_wall,
                progress=None if as_json else cb,
                keep_decisions=decisions,
            )
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if out is not None:  # the JSON first: a plot that cannot be written loses no result
        doc["files"] = [str(out / "plan.json"), str(out / "plan_epd.png")]
        try:
            report.write_json(out / "plan.json", doc)
            report.plot_epd(doc, out / "plan_epd.png")
        except OSError as exc:
            raise fail(f"--out {out}: cannot write ({exc.strerror or exc})", 1) from None
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    con = Console(width=None if sys.stdout.isatty() else 200)
    report.print_table(_epd_table(doc), con)
    for r in doc["rows"]:
        if r.get("truncated"):
            con.print(f"[yellow]{r['deployment']} @ {r['rate']:g}/s: {r['truncated']}[/yellow]")
    for f in doc.get("files", []):
        con.print(f"wrote {f}", highlight=False)


def _epd_table(doc: dict) -> "Table":  # noqa: F821 (rich, imported at call time)
    from rich.table import Table

    def f(v: object, nd: int = 3) -> str:
        return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)

    slo = doc["slo"]
    t = Table(
        title=(
            f"plan {doc['scenario']}: {doc['workload']}; {doc['duration_s']:g} s per load; times in s; goodput = "
            f"req/s with TTFT <= {slo['ttft_s']:g} s and TPOT <= {slo['itl_s']:g} s; busy = share of time stepping "
            "(encode: encoding), per role E/P/D/both"
        ),
        header_style="bold",
    )
    for c in (
        "req/s",
        "deployment",
        "TTFT mean",
        "TTFT p90",
        "E2E mean",
        "E2E p90",
        "TPOT",
        "goodput",
        "busy",
        "enc ms",
    ):
        t.add_column(c, justify="left" if c in ("deployment", "busy") else "right", no_wrap=True)
    from llmdctl.plan.epd import ROLE_LETTERS

    for r in doc["rows"]:
        busy = " ".join(f"{ROLE_LETTERS[k]} {v:.2f}" for k, v in r["utilization"].items())
        enc = r["encode_leg_mean_s"]
        t.add_row(
            f"{r['rate']:g}",
            f"{r['deployment']} {r['layout']}",
            f(r["ttft_mean_s"]),
            f(r["ttft_p90_s"]),
            f(r["e2e_mean_s"]),
            f(r["e2e_p90_s"]),
            f(r["tpot_mean_s"], 4),
            f(r["goodput_req_s"], 2),
            busy,
            f(enc * 1000, 1) if enc is not None else "-",
        )
    return t


plan_command.__doc__ = paragraphs(HELP)
app = plan_command
