"""Benchmark: E/P/D (encoders on their own pods) versus P/D with the prefill pod encoding, on live simulated pods.

Pods (real processes on loopback, `--time-scale 1`): 2 encoder pods (L40S), 1 prefill and 1 decode pod (H100),
Llama-3.1-8B's shape, rdma-200g. Poisson arrivals of chat requests, each with one distinct high-resolution
image (a 1344x896 PNG: 1536 placeholder tokens) and ~100 words of text, 32 output tokens. The same arrivals go
through router_lite with two configs on fresh pods:

- epd: disagg-profile-handler with `deciders: {encode: always-disagg-multimodal-decider, prefill:
  always-disagg-pd-decider}` (the image is encoded on an encoder pod, the prefill pod pulls the embeddings);
- pd: the same without the encode decider (the prefill pod runs the encoder itself).

The pods run at `--time-scale 0.25` (a simulated second lasts four wall seconds), so the machine keeps up with
loads near the prefill pod's capacity; rates and latencies are in simulated time (wall-clock, client side,
streamed, times the scale). HTTP and the simulator's CPU time shrink by the same factor but stay in both columns.

    nice -n 15 python bench/bench_epd_live.py                   # rates 4,8,12,14 req/s, 40 requests each
    nice -n 15 python bench/bench_epd_live.py --rates 8 --requests 30 --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmdctl.bench.load import Stage, poisson_arrivals  # noqa: E402
from sim_gpu.procs import free_port_block, spawn, stop, wait_http  # noqa: E402

POOLS = [("encode", 2, "L40S"), ("prefill", 1, "H100"), ("decode", 1, "H100")]
TIMEOUT_S = 120.0


def config(encode: bool) -> str:
    deciders = {"prefill": "always-disagg-pd-decider"}
    if encode:
        deciders["encode"] = "always-disagg-multimodal-decider"

    def profile(name: str, flt: str) -> dict:
        refs = [{"pluginRef": flt}, {"pluginRef": "queue-scorer"}, {"pluginRef": "max-score-picker"}]
        return {"name": name, "plugins": refs}

    return yaml.safe_dump(
        {
            "apiVersion": "llm-d.ai/v1alpha1",
            "kind": "EndpointPickerConfig",
            "plugins": [
                {"type": t}
                for t in (
                    "encode-filter",
                    "prefill-filter",
                    "decode-filter",
                    "queue-scorer",
                    "max-score-picker",
                    "always-disagg-pd-decider",
                    "always-disagg-multimodal-decider",
                    "disagg-headers-handler",
                )
            ]
            + [{"type": "disagg-profile-handler", "parameters": {"deciders": deciders}}],
            "schedulingProfiles": [
                profile("encode", "encode-filter"),
                profile("prefill", "prefill-filter"),
                profile("decode", "decode-filter"),
            ],
        }
    )


def png(width: int, height: int, tag: int) -> str:
    """A PNG header of that size, made distinct by a text chunk (a different image to the simulator)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tEXt", f"n\0{tag}".encode()) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def start_pods(scale: float) -> tuple[list, list[dict]]:
    procs, entries = [], []
    for role, n, hw in POOLS:
        port = free_port_block(n)
        argv = [sys.executable, "-m", "sim_gpu", "serve", "--port", str(port), "--pods", str(n), "--role", role]
        argv += ["--hardware", hw, "--time-scale", str(scale), "--num-gpu-blocks", "8192", "--network", "rdma-200g"]
        proc = spawn(argv, cwd=ROOT)
        procs.append(proc)
        for i in range(n):
            wait_http(f"http://127.0.0.1:{port + i}/health", proc, 30)
            entries.append({"address": f"127.0.0.1:{port + i}", "labels": {"llm-d.ai/role": role}})
    return procs, entries


def start_router(entries: list[dict], cfg_text: str, work: Path) -> tuple[object, str]:
    port = free_port_block(1)
    (work / "endpoints.yaml").write_text(yaml.safe_dump({"endpoints": entries}))
    (work / "config.yaml").write_text(cfg_text)
    argv = [sys.executable, "-m", "router_lite", "serve", "--port", str(port)]
    argv += ["--endpoints-file", str(work / "endpoints.yaml"), "--config", str(work / "config.yaml")]
    proc = spawn(argv + ["--log-level", "warning"], cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 30)
    return proc, f"http://127.0.0.1:{port}"


async def one(c: httpx.AsyncClient, url: str, i: int) -> tuple[float, float]:
    content = [
        {"type": "text", "text": " ".join(f"q{i}w{k}" for k in range(100))},
        {"type": "image_url", "image_url": {"url": png(1344, 896, i)}},
    ]
    body = {
        "model": "sim-model",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 32,
        "ignore_eos": True,
        "stream": True,
    }
    t0 = time.perf_counter()
    ttft = -1.0
    async with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return -1.0, -1.0
        async for line in r.aiter_lines():
            if ttft < 0 and line.startswith("data: {") and '"content":""' not in line:
                ttft = time.perf_counter() - t0
    return ttft, time.perf_counter() - t0


async def run_load(url: str, rate: float, n: int, seed: int, scale: float) -> dict:
    """`rate` in simulated requests per second; latencies returned in simulated ms."""
    arrivals = poisson_arrivals([Stage(rate=rate * scale, duration=n / (rate * scale) * 2)], seed=seed, max_requests=n)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=httpx.Limits(max_connections=256)) as c:
        t0 = time.perf_counter()

        async def fire(k: int, at: float) -> tuple[float, float]:
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - t0)))
            return await one(c, url, seed * 100000 + k)

        results = await asyncio.wait_for(
            asyncio.gather(*(fire(k, at) for k, (at, _) in enumerate(arrivals))), TIMEOUT_S * 2
        )
    ok = [r for r in results if r[0] >= 0]
    ttfts = sorted(r[0] for r in ok)
    return {
        "rate": rate,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "ttft_p50_ms": 1000 * scale * statistics.median(ttfts),
        "ttft_p90_ms": 1000 * scale * ttfts[int(0.9 * (len(ttfts) - 1))],
        "e2e_p50_ms": 1000 * scale * statistics.median(sorted(r[1] for r in ok)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="4,8,12,14", help="Poisson rates (simulated req/s), comma-separated")
    ap.add_argument("--time-scale", type=float, default=0.25, help="the pods' --time-scale")
    ap.add_argument("--requests", type=int, default=40, help="requests per rate and config")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    rows = []
    for ri, rate in enumerate(rates):
        for name in ("epd", "pd"):
            procs, entries = start_pods(args.time_scale)  # fresh pods per run: no cache carried over
            try:
                with tempfile.TemporaryDirectory(prefix="bench-epd-") as tmp:
                    router, url = start_router(entries, config(name == "epd"), Path(tmp))
                    try:
                        time.sleep(1.0)
                        row = asyncio.run(run_load(url, rate, args.requests, seed=ri + 1, scale=args.time_scale))
                    finally:
                        stop(router)
            finally:
                for p in procs:
                    stop(p)
            row["config"] = name
            rows.append(row)
            print(
                f"rate {rate:4.1f}/s {name:4s} TTFT p50 {row['ttft_p50_ms']:8.1f} ms  p90 {row['ttft_p90_ms']:8.1f} ms"
                f"  e2e p50 {row['e2e_p50_ms']:8.1f} ms  errors {row['errors']}",
                file=sys.stderr,
            )
    print("\nrate  | TTFT p50 epd / pd (ratio) | TTFT p90 epd / pd (ratio) | e2e p50 epd / pd")
    for rate in rates:
        a, b = (next(r for r in rows if r["rate"] == rate and r["config"] == c) for c in ("epd", "pd"))
        p50, p90 = b["ttft_p50_ms"] / a["ttft_p50_ms"], b["ttft_p90_ms"] / a["ttft_p90_ms"]
        print(
            f"{rate:5.1f} | {a['ttft_p50_ms']:6.0f} / {b['ttft_p50_ms']:6.0f} ms ({p50:4.2f}x)"
            f" | {a['ttft_p90_ms']:6.0f} / {b['ttft_p90_ms']:6.0f} ms ({p90:4.2f}x)"
            f" | {a['e2e_p50_ms']:6.0f} / {b['e2e_p50_ms']:6.0f} ms"
        )
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
