"""Benchmark of the offline planner: llm-d's 73%-capacity run under four policies, and the planner's speed.

Prints, per policy, TTFT p90 / mean and output tok/s, the prefix-cache hit rate, and simulated seconds per
wall second; llm-d's published figures stand beside ours only when the run is set up like theirs (full
ladder, inference-perf's client, the published routers), otherwise the table says why they are left out.
Policies run in parallel processes (`--jobs`); with `--jobs 1` progress goes to stderr.

    nice -n 15 python bench/bench_plan.py --jobs 1             # full ladder, llm-d's client (long)
    python bench/bench_plan.py --time-scale 0.1                # an approximation: 10x shorter stages
    python bench/bench_plan.py --client open-loop              # every Poisson arrival on time, stages overlap
    python bench/bench_plan.py --profile precise --time-scale 0.05   # cProfile the hot path
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmdctl.bench.inference_perf import CLIENTS  # noqa: E402
from llmdctl.plan.presets import POLICIES, SCENARIOS  # noqa: E402
from llmdctl.plan.run import run_policies  # noqa: E402


def _one(args: tuple[str, str, float, float, int, int, str, bool]) -> dict:
    scenario, policy, ts, rs, seed, cap, client, verbose = args
    mif = "scenario" if cap < 0 else (cap or None)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(name: str, now: float, done: int, total: int) -> None:
        if time.perf_counter() - last[0] >= 30:
            last[0] = time.perf_counter()
            print(
                f"  {name}: {done}/{total} finished, sim {now:.0f}s, wall {last[0] - t0:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    return run_policies(
        SCENARIOS[scenario],
        [policy],
        time_scale=ts,
        rate_scale=rs,
        seed=seed,
        max_wall_s=4 * 3600,
        max_in_flight=mif,
        client=client,
        progress=progress if verbose else None,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="llmd-73", choices=sorted(SCENARIOS))
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--time-scale", type=float, default=1.0, help="stage durations x this (1: the full ladder)")
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default="bench-plan.json")
    ap.add_argument("--client", default="scenario", choices=("scenario", *CLIENTS), help="how requests are released")
    ap.add_argument(
        "--max-in-flight", type=int, default=-1, help="client cap on open requests (-1: the scenario's, 0: none)"
    )
    ap.add_argument("--plots", default=None, help="directory for PNG plots (policies, per-stage curves)")
    ap.add_argument("--from-json", default=None, help="only print the table (and plots) of an earlier run's JSON")
    ap.add_argument("--profile", default=None, help="cProfile one policy in-process and print the top functions")
    a = ap.parse_args()
    args = (a.scenario, "", a.time_scale, a.rate_scale, a.seed, a.max_in_flight, a.client, a.jobs == 1)
    if a.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        _one((a.scenario, a.profile, *args[2:]))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    if a.from_json:
        doc = json.loads(Path(a.from_json).read_text())
        wall = doc.get("total_wall_s", 0.0)
    else:
        policies = [p for p in a.policies.split(",") if p]
        t0 = time.perf_counter()
        jobs = [(a.scenario, p, *args[2:]) for p in policies]
        if a.jobs == 1:
            parts = [_one(j) for j in jobs]
        else:
            with ProcessPoolExecutor(max_workers=a.jobs) as ex:
                parts = list(ex.map(_one, jobs))
        wall = time.perf_counter() - t0
        doc = parts[0]
        for p in parts[1:]:
            doc["runs"].update(p["runs"])
            doc["summaries"].update(p["summaries"])
            doc["published"].update(p["published"])
            doc["not_comparable"] = doc["not_comparable"] or p["not_comparable"]
        if doc["not_comparable"]:
            doc["published"] = {}
        doc["total_wall_s"] = wall
        Path(a.out).write_text(json.dumps(doc, indent=1, default=str))
    ts = doc.get("time_scale", 1.0)
    pub = doc.get("published") or {}
    if a.plots:
        from llmdctl.bench import report

        title = f"{doc['scenario']} (ladder x{ts:g}, {doc.get('client', 'open-loop')})"
        stem = Path(a.plots) / f"plan-{doc['scenario']}-x{ts:g}-{doc.get('client', 'open-loop')}"
        shown = report.in_published_form(doc)
        print("plot:", report.plot_bars(shown, Path(f"{stem}.png"), title=title, published=pub or None))
        print("plot:", report.plot_stages(doc["summaries"], Path(f"{stem}-stages.png"), title=title))
    print(
        f"{doc['description']}\n{doc['requests']} requests, ladder x{ts:g}, client: "
        f"{doc.get('client_description', doc.get('client'))}, total wall {wall:.1f}s"
    )
    if not pub:
        print(f"llm-d's published figures left out: this run is not comparable ({doc.get('not_comparable')})")
    print()
    f = lambda v, w=8, d=3: f"{v:{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}"  # noqa: E731
    head = f"{'policy':12s} {'TTFT p90':>9s} " + (f"{'(llm-d)':>8s} " if pub else "") + f"{'TTFT mean':>9s} "
    head += (f"{'(llm-d)':>8s} " if pub else "") + f"{'out tok/s':>9s} " + (f"{'(llm-d)':>8s} " if pub else "")
    print(head + f"{'hit':>5s} {'sim s':>7s} {'wall s':>7s} {'sim/wall':>8s} {'sim/cpu':>8s}")
    if pub:
        print("ours in the published row's form: the main stages' requests; tok/s = mean of the stages' tok/s")
    for name, r in doc["runs"].items():
        p = pub.get(name, {})
        r = {**r, **(r.get("as_published") or {})} if pub else r
        row = f"{name:12s} {f(r['ttft_p90_s'], 9)} " + (f"{f(p.get('ttft_p90_s'))} " if pub else "")
        row += f"{f(r['ttft_mean_s'], 9)} " + (f"{f(p.get('ttft_mean_s'))} " if pub else "")
        row += f"{f(r['output_tok_s'], 9, 0)} " + (f"{f(p.get('output_tok_s'), 8, 0)} " if pub else "")
        print(
            row + f"{f(r['hit_rate'], 5, 2)} {f(r['sim_s'], 7, 0)} {f(r['wall_s'], 7, 1)} "
            f"{f(r['sim_to_wall'], 8, 1)} {f(r.get('sim_to_cpu'), 8, 1)}"
            + (f"  [{r['truncated']}]" if r.get("truncated") else "")
        )
    runs = {k: ({**r, **(r.get("as_published") or {})} if pub else r) for k, r in doc["runs"].items()}
    if "precise" in runs and "approximate" in runs and runs["precise"]["ttft_p90_s"]:
        ratio = runs["approximate"]["ttft_p90_s"] / runs["precise"]["ttft_p90_s"]
        print(f"\nprecise vs approximate TTFT p90: {ratio:.1f}x" + (" (llm-d: 57x)" if pub else ""))
    if "precise" in runs and "random" in runs and runs["random"]["output_tok_s"]:
        ratio = runs["precise"]["output_tok_s"] / runs["random"]["output_tok_s"]
        print(f"precise vs random output tok/s: {ratio:.2f}x" + (" (llm-d: 1.97x)" if pub else ""))
    if not a.from_json:
        print(f"JSON: {a.out}")


if __name__ == "__main__":
    main()
