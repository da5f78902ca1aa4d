"""Priorities under overload on a plain `llmdctl up` stack (issue 18, Medium 7).

For each router setting — `up`'s default (pods on vLLM's priority scheduling; the router's concurrency-detector
and priority-holdback-policy flow control, the objective's priority forwarded to the pods), `utilization`
(the default before: flow-control queue behind llm-d's utilization detector, queueDepthThreshold 5, fcfs pods),
`no-flow-control` (no queue, no objectives: `--set router.queue_size=0 --set router.objectives={}`) and, with
`--only queue-depth-1`, `utilization` with queueDepthThreshold 1 — it starts the stack, measures the pool's
throughput at saturation (closed loop, standard requests), then critical TTFT unloaded (sequential), then offers
`--load` times that throughput as Poisson arrivals for `--duration` seconds, split critical:standard:sheddable
by `--mix` (`x-gateway-inference-objective`), and prints per class: answered, refused (429 with Retry-After),
lost, TTFT p50/p90, and critical p90 over its unloaded p90. With the even mix critical alone arrives at
load/3 = 1.7x what the pool can serve at 5x: no scheduler can hold its TTFT; `--mix 1:3:6` offers it 0.5x.
Bounded: at most `--max-requests` arrivals, every request has a 120 s client timeout.

    python bench/bench_priority.py [--replicas 2] [--max-num-seqs 4] [--load 5] [--duration 20] [--mix 1:1:1]
        [--only default]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stackload import Record, fmt, pct, stream_completion, summarize, up  # noqa: E402

CLASSES = ("critical", "standard", "sheddable")
SETTINGS = {
    "default": [],  # what `llmdctl up` configures now
    "utilization": ["router.config.saturationDetector={queueDepthThreshold: 5}", "pools.0.scheduling_policy=fcfs"],
    "no-flow-control": ["router.queue_size=0", "router.objectives={}"],  # before issue 18
    "queue-depth-1": ["router.config.saturationDetector={queueDepthThreshold: 1}", "pools.0.scheduling_policy=fcfs"],
}


def _body(model: str, i: int, max_tokens: int) -> dict:
    return {
        "model": model,
        "prompt": " ".join(f"r{i}w{j}" for j in range(40)),
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }


async def _unloaded(url: str, model: str, n: int, max_tokens: int) -> list[float]:
    async with httpx.AsyncClient(timeout=60) as c:
        recs = [
            await stream_completion(
                c, url, _body(model, 10_000 + i, max_tokens), "critical", {"x-gateway-inference-objective": "critical"}
            )
            for i in range(n)
        ]
    bad = [r for r in recs if not r.ok]
    if bad:
        raise RuntimeError(f"unloaded requests failed: {bad[0]}")
    return [r.ttft_s for r in recs if r.ttft_s is not None]


async def _capacity(url: str, model: str, concurrency: int, seconds: float, max_tokens: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = 0
        async with httpx.AsyncClient(timeout=60) as c:
            while time.perf_counter() < stop:
                r = await stream_completion(c, url, _body(model, 20_000 + w * 1000 + i, max_tokens), "standard")
                i += 1
                done += r.ok

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done / (time.perf_counter() - t0)


async def _overload(
    url: str, model: str, rate: float, duration: float, max_requests: int, max_tokens: int, seed: int, mix: list[int]
) -> list[Record]:
    rng = random.Random(seed)
    cycle = [cls for cls, n in zip(CLASSES, mix) for _ in range(n)]
    arrivals, t = [], 0.0
    while len(arrivals) < max_requests:
        t += rng.expovariate(rate)
        if t > duration:
            break
        arrivals.append((t, cycle[len(arrivals) % len(cycle)]))
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        t0 = time.perf_counter()

        async def one(i: int, at: float, cls: str) -> Record:
            await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
            return await stream_completion(
                c, url, _body(model, i, max_tokens), cls, {"x-gateway-inference-objective": cls}
            )

        return list(await asyncio.gather(*(one(i, at, cls) for i, (at, cls) in enumerate(arrivals))))


def run_setting(name: str, args: argparse.Namespace) -> dict:
    sets = [f"pools.0.max_num_seqs={args.max_num_seqs}", *SETTINGS[name], *args.set]
    stack = up(args.profile, args.replicas, sets)
    try:
        model = stack.state["model"]
        # capacity first: standard traffic alone gets the whole pool, while critical requests seen in the last
        # seconds would hold it back (priority-holdback-policy) and understate the pool's throughput
        cap = asyncio.run(
            _capacity(stack.url, model, args.replicas * args.max_num_seqs * 2, args.capacity_s, args.max_tokens)
        )
        unloaded = asyncio.run(_unloaded(stack.url, model, args.unloaded, args.max_tokens))
        rate = cap * args.load
        print(
            f"[{name}] unloaded critical TTFT p50 {fmt(pct(unloaded, 0.5))} s p90 {fmt(pct(unloaded, 0.9))} s; "
            f"saturated throughput {cap:.2f} req/s; offering {rate:.2f} req/s for {args.duration:g} s",
            flush=True,
        )
        records = asyncio.run(
            _overload(stack.url, model, rate, args.duration, args.max_requests, args.max_tokens, args.seed, args.mix)
        )
    finally:
        stack.down()
    per_class = {cls: summarize([r for r in records if r.label == cls]) for cls in CLASSES}
    crit_p90 = per_class["critical"]["ttft_p90_s"]
    return {
        "setting": name,
        "sets": sets,
        "unloaded_ttft_p50_s": pct(unloaded, 0.5),
        "unloaded_ttft_p90_s": pct(unloaded, 0.9),
        "saturated_rps": cap,
        "offered_rps": rate,
        "arrivals": len(records),
        "classes": per_class,
        "load_average_1m_at_end": os.getloadavg()[0],  # a shared machine: other users' load shows here
        "failures": dict(
            Counter(f"{r.label} {r.status} {(r.error or '')[:90]}" for r in records if not (r.done and r.status == 200))
        ),
        "critical_p90_over_unloaded_p90": (crit_p90 / pct(unloaded, 0.9)) if crit_p90 and pct(unloaded, 0.9) else None,
    }


def _mix(text: str) -> list[int]:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or not any(int(p) for p in parts):
        raise argparse.ArgumentTypeError(f"expected CRITICAL:STANDARD:SHEDDABLE counts such as 1:3:6, got {text!r}")
    return [int(p) for p in parts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="inference-scheduling")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--max-num-seqs", type=int, default=4, help="per pod: small, so a laptop can overload the pool")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--load", type=float, default=5.0, help="offered load as a multiple of the saturated throughput")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-requests", type=int, default=600)
    ap.add_argument("--unloaded", type=int, default=15)
    ap.add_argument("--capacity-s", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=sorted(SETTINGS), action="append")
    ap.add_argument("--set", action="append", default=[], help="extra `llmdctl up --set` for every setting")
    ap.add_argument("--mix", type=_mix, default=[1, 1, 1], help="critical:standard:sheddable arrivals, e.g. 1:3:6")
    ap.add_argument("--out", default="bench/results/priority.json")
    args = ap.parse_args()
    results = [run_setting(name, args) for name in (args.only or ["default", "utilization", "no-flow-control"])]
    print(
        f"\n{'setting':<16} {'class':<10} {'n':>4} {'ok':>4} {'429+RA':>6} {'cut':>4} {'lost':>4} {'TTFT p50':>9} "
        f"{'TTFT p90':>9}"
    )
    for res in results:
        for cls, s in res["classes"].items():
            print(
                f"{res['setting']:<16} {cls:<10} {s['n']:>4} {s['ok']:>4} {s['refused_429']:>6} {s['cut']:>4} "
                f"{s['lost']:>4} {fmt(s['ttft_p50_s']):>9} {fmt(s['ttft_p90_s']):>9}"
            )
        ratio = res["critical_p90_over_unloaded_p90"]
        print(
            f"{res['setting']:<16} critical TTFT p90 / unloaded p90 ({fmt(res['unloaded_ttft_p90_s'])} s) = "
            f"{'-' if ratio is None else f'{ratio:.1f}x'}; offered {res['offered_rps']:.2f} req/s = {args.load:g}x "
            f"{res['saturated_rps']:.2f}; load average {res['load_average_1m_at_end']:.1f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
