"""How fast the simulated engine runs in virtual-clock mode: simulated seconds per wall second for 8 engines
(8 pods) under a shared-prefix workload with Poisson arrivals, as an offline planner would drive them.

    python bench/bench_sim_engine.py [--runs 5] [--sim-seconds 60] [--rate 40] [--json out.json]

Prints the median over runs (and each run) of: simulated/wall ratio, engine steps per wall second, output
tokens per wall second. Not a test: figures only.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_gpu.clock import VirtualClock  # noqa: E402
from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine  # noqa: E402
from sim_gpu.latency import LatencyModel  # noqa: E402


def make_workload(rate: float, duration: float, groups: int, seed: int) -> list[tuple[float, int, list[int], int]]:
    """(arrival time, prefix group, prompt tokens, max_tokens): a system prompt per group + unique question."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(32000) for _ in range(rng.randint(1000, 3000))] for _ in range(groups)]
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t > duration:
            return out
        g = rng.randrange(groups)
        suffix = [rng.randrange(32000) for _ in range(rng.randint(50, 400))]
        out.append((t, g, prefixes[g] + suffix, rng.randint(50, 300)))


def run_once(args: argparse.Namespace, seed: int) -> dict[str, float]:
    latency = LatencyModel.from_names(args.hardware, args.model)
    engines = [SimEngine(EngineConfig(latency=latency, seed=i, data_parallel_rank=i)) for i in range(args.pods)]
    work = make_workload(args.rate, args.sim_seconds, args.groups, seed)
    clock = VirtualClock()
    ready: list[tuple[float, int]] = []  # (time the engine's next step starts, engine)
    scheduled = [False] * len(engines)
    steps = tokens = events = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    i = 0
    while i < len(work) or ready:
        next_arrival = work[i][0] if i < len(work) else float("inf")
        if ready and ready[0][0] <= next_arrival:
            t, k = heapq.heappop(ready)
            clock.advance_to(t)
            res = engines[k].step(clock.now())
            steps += 1
            events += len(res.kv_events)
            tokens += sum(len(o.new_token_ids) for o in res.outputs)
            if engines[k].has_unfinished():
                heapq.heappush(ready, (clock.now() + max(res.duration_s, 1e-6), k))
            else:
                scheduled[k] = False
        else:
            t, g, prompt, max_tokens = work[i]
            clock.advance_to(t)
            k = g % len(engines)  # a prefix-affine router: each system prompt lives on one pod
            engines[k].add_request(EngineRequest(f"r{i}", prompt, max_tokens, arrival_time=t))
            if not scheduled[k]:
                scheduled[k] = True
                heapq.heappush(ready, (t, k))
            i += 1
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    hits = sum(e.stats().prefix_cache_hits_tokens for e in engines)
    queries = sum(e.stats().prefix_cache_queries_tokens for e in engines)
    return {
        "sim_seconds": clock.now(),
        "wall_seconds": wall,
        "sim_per_wall": clock.now() / wall,
        "sim_per_cpu": clock.now() / cpu,
        "steps_per_wall_s": steps / wall,
        "output_tokens_per_wall_s": tokens / wall,
        "requests": len(work),
        "kv_events": events,
        "prefix_hit_rate": hits / queries if queries else 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--pods", type=int, default=8)
    p.add_argument("--sim-seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=40.0, help="requests per simulated second, all pods together")
    p.add_argument("--groups", type=int, default=16, help="distinct shared system prompts")
    p.add_argument("--hardware", default="H100")
    p.add_argument("--model", default="Llama-3.1-8B")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    runs = [run_once(args, seed) for seed in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"sim engine, virtual clock: {args.pods} pods x {args.hardware}/{args.model}, "
        f"{args.rate:g} req/s Poisson, {args.groups} shared prefixes, {args.sim_seconds:g} simulated s, {args.runs} runs"
    )
    print(f"  simulated seconds per wall second (median): {med['sim_per_wall']:.1f}")
    print(f"  simulated seconds per CPU second (median):  {med['sim_per_cpu']:.1f}  (wall differs when the machine is shared)")
    print(f"  engine steps per wall second (median):      {med['steps_per_wall_s']:.0f}")
    print(f"  output tokens per wall second (median):     {med['output_tokens_per_wall_s']:.0f}")
    print(f"  requests per run: {med['requests']:.0f}, prefix hit rate {med['prefix_hit_rate']:.2f}")
    print("  per run sim/wall: " + ", ".join(f"{r['sim_per_wall']:.1f}" for r in runs))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "median": med, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
