"""What the TUI costs while decisions stream at 100 / 300 / 1000 per second.

A publisher process serves router_lite's real decision stream (`DecisionHub.sse`, the code `/debug/decisions`
runs) fed with synthetic decisions at a fixed rate (4 candidates, 3 scorers, like precise-prefix-cache), plus a
`/debug/endpoints` and pod-style `/metrics`, so nothing but the TUI's own work is measured: the app runs
headless (Textual's `run_test`, the same rendering minus terminal writes) with its real `Subscriber` for
`--seconds` per rate. Reports decisions received per second, the TUI process's CPU % of one core, feed renders
per second (the coalescing), the worst event-loop lag (responsiveness) and peak feed length (boundedness).

    python bench/bench_tui.py                      # rates 100, 300, 1000; 10 s each
    python bench/bench_tui.py --rates 500 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim_gpu.procs import free_port  # noqa: E402

# ---- the publisher (run in its own process) ------------------------------------------------------------


def serve(port: int, rate: float) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    from router_lite.decisions import DecisionHub

    hub = DecisionHub(queue_size=10_000)
    pods = [f"127.0.0.1:{port}"] * 1
    keys = [f"10.0.0.{i}:8000" for i in range(4)]  # candidates; their /metrics are served here under one key
    scorers = ("queue-scorer", "kv-cache-utilization-scorer", "precise-prefix-cache-scorer")

    def decision(i: int) -> dict:
        chosen = keys[i % 4]
        cands = [
            {
                "endpoint": k,
                "role": "both",
                "profile": "default",
                "prefix_match_blocks": 48 if k == chosen else 0,
                "total": 6.9 if k == chosen else 4.0,
                "scores": {
                    s: {"raw": 1.0 if k == chosen or s != scorers[2] else 0.0, "weighted": 2.0} for s in scorers
                },
            }
            for k in keys
        ]
        return {
            "request_id": f"bench-{i}",
            "ts": time.time(),
            "model": "m",
            "target_model": "m",
            "prompt_tokens": 800,
            "priority": 0,
            "profiles_run": ["default"],
            "candidates": cands,
            "chosen": {"decode": chosen, "prefill": None},
            "reason": "",
            "scheduling_ms": 0.1,
            "served_by": chosen,
            "status": 200,
            "attempts": [{"endpoint": chosen, "outcome": "ok"}],
            "retries": 0,
        }

    async def publisher() -> None:
        i = 0
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            due = int((time.monotonic() - t0) * rate)
            while i < due:
                hub.publish(decision(i))
                i += 1

    async def decisions(request):
        return StreamingResponse(hub.sse(), media_type="text/event-stream")

    async def endpoints(request):
        eps = [
            {
                "endpoint": pods[0],
                "name": "pod-0",
                "role": "both",
                "healthy": True,
                "running": 3,
                "waiting": 0,
                "kv_cache_usage": 0.2,
            }
        ]
        return JSONResponse(
            {"endpoints": eps, "config": {"version": 1, "profiles": ["default"]}, "kv_events": {"sockets": []}}
        )

    n = {"q": 0}

    async def metrics(request):
        n["q"] += 1000
        return PlainTextResponse(
            f"vllm:num_requests_running 3\nvllm:prefix_cache_queries_total {n['q']}\nvllm:prefix_cache_hits_total "
            f"{n['q'] * 0.8}\n"
        )

    import contextlib

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.get_running_loop().create_task(publisher())
        yield
        task.cancel()

    app = Starlette(
        routes=[Route("/debug/decisions", decisions), Route("/debug/endpoints", endpoints), Route("/metrics", metrics)],
        lifespan=lifespan,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---- the measurement -----------------------------------------------------------------------------------


async def measure(url: str, seconds: float) -> dict:
    from llmdctl.tui.app import LlmdTui

    app = LlmdTui(url, poll_s=1.0)
    async with app.run_test(size=(160, 48)) as pilot:
        deadline = time.monotonic() + 10
        while app.model.status != "live" and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.pause(1.0)
        d0, r0, c0, t0 = app.model.decisions_total, app.renders, time.process_time(), time.monotonic()
        lag = 0.0
        peak = 0
        while time.monotonic() - t0 < seconds:
            s = time.monotonic()
            await asyncio.sleep(0.05)
            lag = max(lag, time.monotonic() - s - 0.05)
            peak = max(peak, len(app.model.feed))
        wall = time.monotonic() - t0
        return {
            "decisions_per_s": (app.model.decisions_total - d0) / wall,
            "cpu_pct": 100 * (time.process_time() - c0) / wall,
            "renders_per_s": (app.renders - r0) / wall,
            "max_loop_lag_ms": lag * 1000,
            "feed_peak": peak,
            "feed_cap": app.model.feed.maxlen,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "RATE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(int(args.serve[0]), float(args.serve[1]))
        return
    rows = []
    for rate in args.rates:
        port = free_port()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(rate)], cwd=ROOT)
        try:
            import httpx

            for _ in range(100):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/debug/endpoints", timeout=0.5)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            res = asyncio.run(measure(f"http://127.0.0.1:{port}", args.seconds))
        finally:
            proc.terminate()
            proc.wait(10)
        res["rate"] = rate
        rows.append(res)
        print(
            f"rate {rate:6.0f}/s  received {res['decisions_per_s']:7.1f}/s  TUI CPU {res['cpu_pct']:5.1f}% of a core  "
            f"renders {res['renders_per_s']:4.1f}/s  max loop lag {res['max_loop_lag_ms']:6.1f} ms  feed "
            f"{res['feed_peak']}/{res['feed_cap']}",
            flush=True,
        )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
