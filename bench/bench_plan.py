"""Benchmark of the offline planner: llm-d's 73%-capacity run under four policies, and the planner's speed.

Prints, per policy, TTFT p90 / mean and output tok/s next to llm-d's published figures, the prefix-cache hit
rate, and simulated seconds per wall second. Policies run in parallel processes (`--jobs`).

    python bench/bench_plan.py                       # full run (minutes); JSON to bench-plan.json
    python bench/bench_plan.py --time-scale 0.1      # the same ladder 10x shorter (quick look)
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

from llmdctl.plan.presets import POLICIES, SCENARIOS  # noqa: E402
from llmdctl.plan.run import run_policies  # noqa: E402


def _one(args: tuple[str, str, float, float, int, int]) -> dict:
    scenario, policy, ts, rs, seed, cap = args
    mif = "scenario" if cap < 0 else (cap or None)
    return run_policies(
        SCENARIOS[scenario], [policy], time_scale=ts, rate_scale=rs, seed=seed, max_wall_s=3600, max_in_flight=mif
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="llmd-73", choices=sorted(SCENARIOS))
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="bench-plan.json")
    ap.add_argument(
        "--max-in-flight", type=int, default=-1, help="client cap on open requests (-1: the scenario's, 0: open loop)"
    )
    ap.add_argument("--plots", default=None, help="directory for PNG plots (policies vs llm-d, per-stage curves)")
    ap.add_argument("--from-json", default=None, help="only print the table (and plots) of an earlier run's JSON")
    ap.add_argument("--profile", default=None, help="cProfile one policy in-process and print the top functions")
    a = ap.parse_args()
    if a.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        _one((a.scenario, a.profile, a.time_scale, a.rate_scale, a.seed, a.max_in_flight))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    if a.from_json:
        doc = json.loads(Path(a.from_json).read_text())
        wall = doc.get("total_wall_s", 0.0)
        a.time_scale = doc.get("time_scale", a.time_scale)
    else:
        policies = [p for p in a.policies.split(",") if p]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as ex:
            parts = list(
                ex.map(_one, [(a.scenario, p, a.time_scale, a.rate_scale, a.seed, a.max_in_flight) for p in policies])
            )
        wall = time.perf_counter() - t0
        doc = parts[0]
        for p in parts[1:]:
            doc["runs"].update(p["runs"])
            doc["summaries"].update(p["summaries"])
        doc["total_wall_s"] = wall
        Path(a.out).write_text(json.dumps(doc, indent=1, default=str))
    if a.plots:
        from llmdctl.bench import report

        pub = doc.get("published_reference") if a.time_scale == 1.0 else doc.get("published_reference")
        title = f"{doc['scenario']} (ladder x{a.time_scale:g})"
        print(
            "plot:",
            report.plot_bars(
                doc["summaries"],
                Path(a.plots) / f"plan-{doc['scenario']}-x{a.time_scale:g}.png",
                title=title,
                published=pub,
                source="llmdctl plan, virtual clock",
            ),
        )
        print(
            "plot:",
            report.plot_stages(
                doc["summaries"], Path(a.plots) / f"plan-{doc['scenario']}-x{a.time_scale:g}-stages.png", title=title
            ),
        )
    pub = doc.get("published_reference", {})
    print(
        f"{doc['description']}\n{doc['requests']} requests, time scale {a.time_scale:g}, client cap "
        f"{doc.get('max_in_flight') or 'none'}, total wall {wall:.1f}s\n"
    )
    print(
        f"{'policy':12s} {'TTFT p90':>9s} {'(llm-d)':>8s} {'TTFT mean':>9s} {'(llm-d)':>8s} {'out tok/s':>9s} "
        f"{'(llm-d)':>8s} {'hit':>5s} {'sim s':>7s} {'wall s':>7s} {'sim/wall':>8s} {'sim/cpu':>8s}"
    )
    for name, r in doc["runs"].items():
        p = pub.get(name, {})
        f = lambda v, w=8, d=3: f"{v:{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}"  # noqa: E731
        print(
            f"{name:12s} {f(r['ttft_p90_s'], 9)} {f(p.get('ttft_p90_s'))} {f(r['ttft_mean_s'], 9)} "
            f"{f(p.get('ttft_mean_s'))} {f(r['output_tok_s'], 9, 0)} {f(p.get('output_tok_s'), 8, 0)} "
            f"{f(r['hit_rate'], 5, 2)} {f(r['sim_s'], 7, 0)} {f(r['wall_s'], 7, 1)} {f(r['sim_to_wall'], 8, 1)} "
            f"{f(r.get('sim_to_cpu'), 8, 1)}"
        )
    runs = doc["runs"]
    if "precise" in runs and "approximate" in runs and runs["precise"]["ttft_p90_s"]:
        print(
            "\nprecise vs approximate TTFT p90: "
            f"{runs['approximate']['ttft_p90_s'] / runs['precise']['ttft_p90_s']:.1f}x (llm-d: 57x)"
        )
    if "precise" in runs and "random" in runs and runs["random"]["output_tok_s"]:
        print(
            f"precise vs random output tok/s: {runs['precise']['output_tok_s'] / runs['random']['output_tok_s']:.2f}x "
            "(llm-d: 1.97x)"
        )
    if not a.from_json:
        print(f"JSON: {a.out}")


if __name__ == "__main__":
    main()
