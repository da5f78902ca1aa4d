"""Planner speed, two source trees side by side: simulated seconds per CPU second, interleaved runs.

Each run is a fresh process per (tree, policy), alternating trees, so a busy machine slows both alike; the
table shows every run, the medians and new/base. The speed figure is `bench_plan.py`'s sim/cpu column.

    git worktree add /tmp/plan-base main
    python bench/bench_plan_ab.py --base /tmp/plan-base --new . --policies precise,approximate,load --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# One planner run in the tree on PYTHONPATH; prints {"sim_s", "cpu_s", "hit_rate"} as one JSON line.
_RUN = """
import json, sys
from llmdctl.plan.presets import SCENARIOS
from llmdctl.plan.run import run_policies
scenario, policy, ts, client = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
doc = run_policies(SCENARIOS[scenario], [policy], time_scale=ts, rate_scale=1.0, seed=0, max_wall_s=3600,
                   max_in_flight="scenario", client=client)
r = doc["runs"][policy]
print(json.dumps({"sim_s": r["sim_s"], "cpu_s": r["cpu_s"], "hit_rate": r["hit_rate"]}))
"""


def run_once(tree: Path, scenario: str, policy: str, time_scale: float, timeout_s: float, client: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
    out = subprocess.run(
        [sys.executable, "-c", _RUN, scenario, policy, str(time_scale), client],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {policy} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, type=Path, help="source tree of the reference (e.g. a worktree of main)")
    ap.add_argument("--new", default=Path("."), type=Path, help="source tree to compare (default: this one)")
    ap.add_argument("--scenario", default="llmd-73")
    ap.add_argument("--policies", default="precise")
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--client",
        default="scenario",
        choices=("scenario", "inference-perf", "open-loop"),
        help="how requests are released (issue 15's target was set with open-loop, before the stage barrier)",
    )
    ap.add_argument("--timeout-s", type=float, default=600.0, help="per run")
    a = ap.parse_args()
    if not 1 <= a.runs <= 50:
        raise SystemExit("--runs: expected 1..50")
    trees = {"base": a.base.resolve(), "new": a.new.resolve()}
    for name, tree in trees.items():
        if not (tree / "llmdctl" / "plan" / "sim.py").is_file():
            raise SystemExit(f"--{name}: {tree} is not an llmdctl source tree (no llmdctl/plan/sim.py)")
    policies = [p for p in a.policies.split(",") if p]
    speeds: dict[tuple[str, str], list[float]] = {}
    for i in range(a.runs):
        for policy in policies:
            for name, tree in trees.items() if i % 2 == 0 else reversed(trees.items()):
                r = run_once(tree, a.scenario, policy, a.time_scale, a.timeout_s, a.client)
                speeds.setdefault((policy, name), []).append(r["sim_s"] / r["cpu_s"])
                print(
                    f"run {i + 1}/{a.runs} {policy:12s} {name:4s} sim {r['sim_s']:.1f} s  cpu {r['cpu_s']:.2f} s  "
                    f"sim/cpu {r['sim_s'] / r['cpu_s']:.1f}  hit {r['hit_rate']:.4f}",
                    flush=True,
                )
    print(f"\n{a.scenario} x{a.time_scale:g}, client {a.client}, {a.runs} interleaved runs; sim/cpu medians")
    print(f"{'policy':12s} {'base':>7s} {'new':>7s} {'new/base':>8s}  runs (base | new)")
    for policy in policies:
        b, n = speeds[(policy, "base")], speeds[(policy, "new")]
        mb, mn = statistics.median(b), statistics.median(n)
        runs = " ".join(f"{x:.1f}" for x in b) + " | " + " ".join(f"{x:.1f}" for x in n)
        print(f"{policy:12s} {mb:7.1f} {mn:7.1f} {mn / mb:8.2f}  {runs}")


if __name__ == "__main__":
    main()
