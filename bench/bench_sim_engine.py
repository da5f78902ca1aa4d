"""How fast the simulated engine runs on a virtual clock: step-by-step (`step`) vs `fast_forward`, side by side.

8 engines (8 pods) behind a prefix-affine router (each shared system prompt lives on one pod), Poisson
arrivals; between two arrivals every engine is advanced to the arrival time — with a `step()` loop, or with one
`fast_forward(t, arrival)` call — as an offline planner does. Both drivers consume every output and KV event and
must end in the same state (checked). Presets:

- `llmd` (default): llm-d's 73%-capacity benchmark shape — Qwen3-32B on 2 x H100 (TP 2), 64-token blocks,
  307k tokens of KV per pod, 150 shared 6000-token system prompts + 1200-token questions -> 1000 tokens.
  Capacity is about 9 req/s in all; moderate = 6 req/s, high = 35 req/s (the ladder's middle: KV-bound, queues build).
- `small`: Llama-3.1-8B on one H100, 16 shared 1-3k prompts + 50-400 token questions -> 50-300 tokens;
  moderate = 20 req/s, high = 60 req/s.

    python bench/bench_sim_engine.py [--preset llmd|small] [--runs 3] [--sim-seconds 60] [--arrive-seconds S]
                                     [--rates MODERATE,HIGH] [--json out.json]

Prints medians over runs of simulated seconds per wall second and per CPU second (the machine may be
shared: CPU seconds are the steadier figure), and the fast-forward / step speedup; a third row runs
fast_forward with driver-side GC tuning (gc.freeze + a higher gen-0 threshold), which a planner can apply
too. Figures only, not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine  # noqa: E402
from sim_gpu.latency import LatencyModel  # noqa: E402

PRESETS = {
    "llmd": dict(
        hardware="H100",
        model="Qwen3-32B",
        tp=2,
        block_size=64,
        num_gpu_blocks=307_328 // 64,
        groups=150,
        system=(6000, 6000),
        question=(1200, 1200),
        output=(1000, 1000),
        rates=(6.0, 35.0),
    ),
    "small": dict(
        hardware="H100",
        model="Llama-3.1-8B",
        tp=1,
        block_size=16,
        num_gpu_blocks=None,
        groups=16,
        system=(1000, 3000),
        question=(50, 400),
        output=(50, 300),
        rates=(20.0, 60.0),
    ),
}


def make_workload(
    p: dict, rate: float, duration: float, pods: int, seed: int
) -> list[tuple[float, int, EngineRequest]]:
    """(arrival time, pod, request): a system prompt per group + a unique question; group g lives on pod g % pods."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(32000) for _ in range(rng.randint(*p["system"]))] for _ in range(p["groups"])]
    t, out, i = 0.0, [], 0
    while True:
        t += rng.expovariate(rate)
        if t > duration:
            return out
        g = rng.randrange(p["groups"])
        prompt = prefixes[g] + [rng.randrange(32000) for _ in range(rng.randint(*p["question"]))]
        out.append(
            (t, g % pods, EngineRequest(f"r{i}", prompt, rng.randint(*p["output"]), ignore_eos=True, arrival_time=t))
        )
        i += 1


def run_once(p: dict, mode: str, rate: float, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """One run; mode "step", "ff", or "ff+gc" (fast_forward with the driver-side GC tuning a planner can do:
    gc.freeze() after setup and a higher gen-0 threshold; restored afterwards)."""
    if mode == "ff+gc":
        saved = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        try:
            return run_once(p, "ff", rate, args, seed)
        finally:
            gc.set_threshold(*saved)
            gc.unfreeze()
    latency = LatencyModel.from_names(p["hardware"], p["model"], tp=p["tp"])
    engines = [
        SimEngine(
            EngineConfig(
                latency=latency,
                seed=i,
                data_parallel_rank=i,
                block_size=p["block_size"],
                num_gpu_blocks=p["num_gpu_blocks"],
            )
        )
        for i in range(args.pods)
    ]
    work = make_workload(p, rate, args.arrive_seconds or args.sim_seconds, args.pods, seed)
    clock = [0.0] * len(engines)  # when each engine's next step starts
    steps = tokens = events = finished = 0
    horizon = args.sim_seconds
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for ta, k, req in [*work, (horizon, -1, None)]:
        for j, eng in enumerate(engines):
            t = clock[j]
            if mode == "step":
                while t < ta and eng.has_unfinished():
                    res = eng.step(t)
                    steps += 1
                    events += len(res.kv_events)
                    for o in res.outputs:
                        tokens += len(o.new_token_ids)
                        finished += o.finished
                    if res.idle and res.duration_s <= 0:
                        break
                    t += res.duration_s
            elif (t < ta and eng.has_unfinished()) or req is None:
                # at the horizon, flush: report every token produced so far (lazy decodes report late)
                ff = eng.fast_forward(t, ta, flush=req is None)
                steps += ff.num_steps
                events += len(ff.kv_events)
                for o in ff.outputs:
                    tokens += len(o.new_token_ids)
                    finished += o.finished
                t = ff.end_s
            clock[j] = t
        if req is not None:
            engines[k].add_request(req)
            clock[k] = max(clock[k], ta)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    stats = [e.stats() for e in engines]
    return {
        "sim_per_wall": horizon / wall,
        "sim_per_cpu": horizon / cpu,
        "wall_s": wall,
        "steps": steps,
        "output_tokens": tokens,
        "kv_events": events,
        "finished": finished,
        "requests": len(work),
        "generated_total": sum(s.generation_tokens_total for s in stats),
        "running_end": sum(s.num_running for s in stats),
        "waiting_end": sum(s.num_waiting for s in stats),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="llmd")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pods", type=int, default=8)
    ap.add_argument("--sim-seconds", type=float, default=60.0)
    ap.add_argument(
        "--arrive-seconds",
        type=float,
        default=None,
        help="arrivals stop here (default: --sim-seconds); later, queues drain: the decode-bound tail",
    )
    ap.add_argument("--rates", type=str, default=None, help="moderate,high requests/s (all pods); default per preset")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    p = PRESETS[args.preset]
    rates = tuple(float(x) for x in args.rates.split(",")) if args.rates else p["rates"]
    print(
        f"sim engine on a virtual clock, preset {args.preset}: {args.pods} pods x {p['hardware']}/{p['model']} "
        f"tp{p['tp']}, {args.sim_seconds:g} simulated s (arrivals for {args.arrive_seconds or args.sim_seconds:g} s), "
        f"medians of {args.runs} runs"
    )
    print(
        f"{'load':>14} {'mode':>12} {'sim/wall':>9} {'sim/CPU':>9} {'steps':>7} {'tokens':>8} {'events':>7} "
        f"{'done':>5} {'queued':>6}"
    )
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "loads": {}}
    for label, rate in zip(("moderate", "high"), rates):
        med: dict[str, dict[str, float]] = {}
        for mode in ("step", "ff", "ff+gc"):
            runs = [run_once(p, mode, rate, args, seed) for seed in range(args.runs)]
            med[mode] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            m = med[mode]
            name = {"step": "step", "ff": "fast_forward", "ff+gc": "ff + gc tune"}[mode]
            print(
                f"{label + f' {rate:g}/s':>14} {name:>12} {m['sim_per_wall']:9.1f} "
                f"{m['sim_per_cpu']:9.1f} {m['steps']:7.0f} {m['output_tokens']:8.0f} {m['kv_events']:7.0f} "
                f"{m['finished']:5.0f} {m['waiting_end']:6.0f}"
            )
        same = all(
            med["step"][k] == med[m][k]
            for m in ("ff", "ff+gc")
            for k in ("steps", "output_tokens", "kv_events", "finished", "generated_total", "waiting_end")
        )
        sp_wall = med["ff"]["sim_per_wall"] / med["step"]["sim_per_wall"]
        sp_cpu = med["ff"]["sim_per_cpu"] / med["step"]["sim_per_cpu"]
        sp_gc = med["ff+gc"]["sim_per_cpu"] / med["step"]["sim_per_cpu"]
        print(
            f"{'':>14} {'speedup':>12} {sp_wall:8.1f}x {sp_cpu:8.1f}x   (ff + gc tune: {sp_gc:.1f}x CPU)   "
            f"same totals in both modes: {'yes' if same else 'NO'}"
        )
        report["loads"][label] = {
            "rate": rate,
            "step": med["step"],
            "fast_forward": med["ff"],
            "ff_gc_tuned": med["ff+gc"],
            "speedup_wall": sp_wall,
            "speedup_cpu": sp_cpu,
            "speedup_cpu_gc_tuned": sp_gc,
            "same_totals": same,
        }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
