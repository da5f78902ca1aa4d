"""The planner's E/P/D flow against the live one: bench_epd_live.py's setup, run on the virtual clock.

Same pods (2 L40S encoders, 1 prefill + 1 decode H100, Llama-3.1-8B's shape, 8192 blocks, rdma-200g), same
router configs (`bench_epd_live.config`: epd with the encode decider, pd without), same Poisson arrivals
(its seeds, in simulated seconds), the same prompt shape (one 1344x896 image = 1536 tokens + 417 text tokens,
what the simulator's /tokenize counts for its body; 32 output tokens). Prints the planner's TTFT p50 / p90
and E2E p50 (simulated ms) beside the live run kept in bench/results/epd_live.json; `--requests 400` gives
steadier planner figures than the live run's 40.

    nice -n 15 python bench/bench_epd_plan_vs_live.py
    nice -n 15 python bench/bench_epd_plan_vs_live.py --requests 400 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_epd_live import POOLS, config  # noqa: E402

from llmdctl.bench.load import Stage, poisson_arrivals  # noqa: E402
from llmdctl.plan.epd import MMWorkload, mm_requests  # noqa: E402
from llmdctl.plan.sim import PlanConfig, PoolPlan, simulate  # noqa: E402

LIVE_SCALE = 0.25  # bench_epd_live's --time-scale: its arrivals are drawn in wall time at rate x scale
WORKLOAD = MMWorkload(images_per_request=1, system_prompt_len=0, question_len=417, output_len=32)


def pools() -> list[PoolPlan]:
    base = PoolPlan(model="Llama-3.1-8B", block_size=16, num_gpu_blocks=8192, max_model_len=131072)
    return [dataclasses.replace(base, name=r, role=r, replicas=n, hardware=hw) for r, n, hw in POOLS]


def _p90(v: list[float]) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="4,8,12,14", help="Poisson rates (simulated req/s), as the live run's")
    ap.add_argument("--requests", type=int, default=40, help="requests per rate and config (live: 40)")
    ap.add_argument("--json", action="store_true", help="print JSON rows")
    args = ap.parse_args()
    live_doc = json.loads((ROOT / "bench/results/epd_live.json").read_text())
    live = {(r["rate"], r["config"]): r for r in live_doc["rows"]}
    rows = []
    for ri, rate in enumerate(float(r) for r in args.rates.split(",")):
        n = args.requests
        drawn = poisson_arrivals([Stage(rate * LIVE_SCALE, n / (rate * LIVE_SCALE) * 2)], seed=ri + 1, max_requests=n)
        arrivals = [(t * LIVE_SCALE, s) for t, s in drawn]
        for name, encode in (("epd", True), ("pd", False)):
            cfg = PlanConfig(pools=pools(), router=yaml.safe_load(config(encode)), name=name, network="rdma-200g")
            res = simulate(cfg, mm_requests(WORKLOAD, len(arrivals), ri + 1), arrivals)
            ttft = [r.ttft * 1000 for r in res.records if r.ttft is not None]
            e2e = [r.e2e * 1000 for r in res.records if r.e2e is not None]
            lv = live.get((rate, name), {})
            rows.append(
                {
                    "rate": rate,
                    "config": name,
                    "requests": len(res.records),
                    "plan_ttft_p50_ms": round(statistics.median(ttft), 1),
                    "plan_ttft_p90_ms": round(_p90(ttft), 1),
                    "plan_e2e_p50_ms": round(statistics.median(e2e), 1),
                    "live_ttft_p50_ms": round(lv["ttft_p50_ms"], 1) if lv else None,
                    "live_ttft_p90_ms": round(lv["ttft_p90_ms"], 1) if lv else None,
                    "live_e2e_p50_ms": round(lv["e2e_p50_ms"], 1) if lv else None,
                }
            )
    if args.json:
        print(json.dumps({"requests": args.requests, "rows": rows}, indent=1))
        return 0
    print("rate config  TTFT p50 plan/live   TTFT p90 plan/live   E2E p50 plan/live   (simulated ms)")
    for r in rows:
        print(
            f"{r['rate']:>4g} {r['config']:<6} {r['plan_ttft_p50_ms']:>8.0f} / {r['live_ttft_p50_ms'] or 0:<8.0f}"
            f" {r['plan_ttft_p90_ms']:>8.0f} / {r['live_ttft_p90_ms'] or 0:<8.0f}"
            f" {r['plan_e2e_p50_ms']:>8.0f} / {r['live_e2e_p50_ms'] or 0:<8.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
