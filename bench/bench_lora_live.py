"""Benchmark: LoRA-aware versus LoRA-blind routing on live simulated pods (real processes on loopback).

Three pods serve the base model and three adapters with `--max-loras 1` (one adapter per batch, as vLLM), so a
request for an adapter that another adapter's requests occupy on a pod waits there until they drain. Poisson
arrivals, each request for a random adapter, distinct ~300-token prompts (no prefix sharing: the effect is the
adapter slot alone), 32 output tokens. The same arrivals go through router_lite twice per rate:

- lora-aware: lora-affinity-scorer 2, queue-scorer 1, kv-cache-utilization-scorer 1 (the `lora` profile's
  scorers less the prefix one);
- lora-blind: queue-scorer 1, kv-cache-utilization-scorer 1.

TTFT and end-to-end latency are wall-clock, client side (streamed; first content chunk). The pods run at
`--time-scale 1` (simulated = wall seconds), so on a loaded machine the simulator's own CPU time adds to both.

    nice -n 15 python bench/bench_lora_live.py                       # rates 2,4,6 req/s, 60 requests each
    nice -n 15 python bench/bench_lora_live.py --rates 4 --requests 40 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmdctl.bench.load import Stage, poisson_arrivals  # noqa: E402
from sim_gpu.procs import free_port_block, spawn, stop, wait_http  # noqa: E402

ADAPTERS = ["sql-lora", "chat-lora", "code-lora"]
PODS = 3
PLUGINS = {
    "lora-aware": [("lora-affinity-scorer", 2), ("queue-scorer", 1), ("kv-cache-utilization-scorer", 1)],
    "lora-blind": [("queue-scorer", 1), ("kv-cache-utilization-scorer", 1)],
}
TIMEOUT_S = 120.0


def router_config(scorers: list[tuple[str, int]]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "llm-d.ai/v1alpha1",
            "kind": "EndpointPickerConfig",
            "plugins": [{"type": t} for t, _ in scorers] + [{"type": "max-score-picker"}],
            "schedulingProfiles": [
                {
                    "name": "default",
                    "plugins": [{"pluginRef": t, "weight": w} for t, w in scorers]
                    + [{"pluginRef": "max-score-picker"}],
                }
            ],
        }
    )


def start_pods(port: int) -> object:
    argv = [sys.executable, "-m", "sim_gpu", "serve", "--port", str(port), "--pods", str(PODS)]
    argv += ["--time-scale", "1", "--num-gpu-blocks", "4096", "--enable-lora", "--max-loras", "1"]
    for name in ADAPTERS:
        argv += ["--lora-modules", f"{name}=org/{name}"]
    proc = spawn(argv, cwd=ROOT)
    for i in range(PODS):
        wait_http(f"http://127.0.0.1:{port + i}/health", proc, 30)
    return proc


def start_router(pod_port: int, config: str, work: Path) -> tuple[object, str]:
    port = free_port_block(1)
    eps = work / "endpoints.yaml"
    eps.write_text(yaml.safe_dump({"endpoints": [{"address": f"127.0.0.1:{pod_port + i}"} for i in range(PODS)]}))
    cfg = work / "config.yaml"
    cfg.write_text(config)
    argv = [sys.executable, "-m", "router_lite", "serve", "--port", str(port), "--endpoints-file", str(eps)]
    argv += ["--config", str(cfg), "--log-level", "warning"]
    proc = spawn(argv, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 30)
    return proc, f"http://127.0.0.1:{port}"


def prompt(i: int) -> str:
    rng = random.Random(i)
    return " ".join(f"w{rng.randrange(100000)}" for _ in range(150))  # ~300 tokens, none shared


async def one(c: httpx.AsyncClient, url: str, model: str, i: int) -> tuple[float, float, str]:
    body = {"model": model, "prompt": prompt(i), "max_tokens": 32, "ignore_eos": True, "stream": True}
    t0 = time.perf_counter()
    ttft = -1.0
    async with c.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            return -1.0, -1.0, ""
        pod = r.headers.get("x-llmd-endpoint", "")
        async for line in r.aiter_lines():
            if ttft < 0 and line.startswith("data: {"):
                ttft = time.perf_counter() - t0
    return ttft, time.perf_counter() - t0, pod


async def run_load(url: str, rate: float, n: int, seed: int) -> dict:
    arrivals = poisson_arrivals([Stage(rate=rate, duration=n / rate * 2)], seed=seed, max_requests=n)
    models = [random.Random(seed * 1000 + k).choice(ADAPTERS) for k in range(len(arrivals))]
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=httpx.Limits(max_connections=256)) as c:
        t0 = time.perf_counter()

        async def fire(k: int, at: float) -> tuple[float, float, str]:
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - t0)))
            return await one(c, url, models[k], seed * 100000 + k)

        results = await asyncio.wait_for(
            asyncio.gather(*(fire(k, at) for k, (at, _) in enumerate(arrivals))), TIMEOUT_S * 2
        )
    ok = [r for r in results if r[0] >= 0]
    ttfts = sorted(r[0] for r in ok)
    spread = {}  # adapter -> pods that served it
    for (_, _, pod), model in zip(results, models):
        spread.setdefault(model, set()).add(pod)
    return {
        "rate": rate,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p90_ms": 1000 * ttfts[int(0.9 * (len(ttfts) - 1))],
        "e2e_p50_ms": 1000 * statistics.median(sorted(r[1] for r in ok)),
        "pods_per_adapter": round(statistics.mean(len(v) for v in spread.values()), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="2,4,6", help="Poisson rates (req/s), comma-separated")
    ap.add_argument("--requests", type=int, default=60, help="requests per rate and config")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    rows = []
    for ri, rate in enumerate(rates):
        for name, scorers in PLUGINS.items():
            pod_port = free_port_block(PODS)
            pods = start_pods(pod_port)  # fresh pods per run: no adapter residency or cache carried over
            try:
                with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
                    router, url = start_router(pod_port, router_config(scorers), Path(tmp))
                    try:
                        time.sleep(1.0)  # a few scrapes
                        row = asyncio.run(run_load(url, rate, args.requests, seed=ri + 1))
                    finally:
                        stop(router)
            finally:
                stop(pods)
            row["config"] = name
            rows.append(row)
            print(
                f"rate {rate:4.1f}/s {name:11s} TTFT p50 {row['ttft_p50_ms']:8.1f} ms  p90 {row['ttft_p90_ms']:8.1f} ms"
                f"  e2e p50 {row['e2e_p50_ms']:8.1f} ms  pods/adapter {row['pods_per_adapter']}"
                f"  errors {row['errors']}",
                file=sys.stderr,
            )
    print("\nrate  | TTFT p50 aware / blind (ratio) | TTFT p90 aware / blind (ratio) | pods per adapter aware / blind")
    for rate in rates:
        a, b = (next(r for r in rows if r["rate"] == rate and r["config"] == c) for c in PLUGINS)
        p50 = b["ttft_p50_ms"] / a["ttft_p50_ms"]
        p90 = b["ttft_p90_ms"] / a["ttft_p90_ms"]
        print(
            f"{rate:5.1f} | {a['ttft_p50_ms']:7.0f} / {b['ttft_p50_ms']:7.0f} ms ({p50:4.1f}x)"
            f" | {a['ttft_p90_ms']:7.0f} / {b['ttft_p90_ms']:7.0f} ms ({p90:4.1f}x)"
            f" | {a['pods_per_adapter']} / {b['pods_per_adapter']}"
        )
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
