"""The router's cost on the request path: added latency and max sustained requests/s, router vs direct.

One simulated pod at time scale 0 (instant steps: what remains is HTTP and Python), a router process in
front of it. The same client (httpx, one process) measures:
  - latency: sequential non-streaming completions (max_tokens 1), p50/p99, direct and routed;
  - throughput: a closed loop of C concurrent clients for a bounded number of requests, direct and routed;
  - decision time: the scheduler time the router reports for the routed requests (decision stream).
Profiles run through the router: the default (queue + kv-cache + approximate prefix), precise
(adds tokenization through the pod's /tokenize, one more round trip per new prompt, and block hashing), and
precise with the router tokenizing locally (`--tokenizer builtin`, the simulator's tokenizer), and the shipped
precise-prefix-cache profile's config as this checkout has it (run it at two commits to compare router
versions: same bench, old and new profile). Figures depend on the machine; on a
shared 2-core box the client, router and pod compete for the same cores, which is the pessimistic case.

    python bench/bench_router.py [--requests 300] [--concurrency 16] [--load-requests 1000] [--rounds 2]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_gpu.procs import free_port, stop, wait_http  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sim-model"

PRECISE = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: precise-prefix-cache-scorer
  - type: queue-scorer
  - type: kv-cache-utilization-scorer
schedulingProfiles:
  - name: default
    plugins:
      - {pluginRef: precise-prefix-cache-scorer, weight: 3}
      - {pluginRef: queue-scorer, weight: 1}
      - {pluginRef: kv-cache-utilization-scorer, weight: 1}
"""


def shipped_config(profile: str) -> str:
    """The router config of a shipped profile as it is in this checkout (its load terms included)."""
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "profiles" / f"{profile}.yaml").read_text())
    return yaml.safe_dump(doc["router"]["config"])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def sequential(url: str, n: int) -> list[float]:
    body = {"model": MODEL, "prompt": "the router's added latency " * 8, "max_tokens": 1}
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        for _ in range(20):  # warm connections and caches
            await c.post("/v1/completions", json=body)
        for i in range(n):
            body["prompt"] = f"request {i} " + "the router's added latency " * 8
            t = time.perf_counter()
            r = await c.post("/v1/completions", json=body)
            out.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    return out


async def closed_loop(url: str, concurrency: int, total: int) -> tuple[float, int]:
    """(requests/s, errors) for `total` requests from `concurrency` clients."""
    sent = 0
    errors = 0

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal sent, errors
        while sent < total:
            sent += 1
            i = sent
            r = await c.post(
                "/v1/completions", json={"model": MODEL, "prompt": f"load {i} " + "x y z " * 20, "max_tokens": 1}
            )
            if r.status_code != 200:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        await asyncio.gather(
            *(
                c.post("/v1/completions", json={"model": MODEL, "prompt": "warm", "max_tokens": 1})
                for _ in range(concurrency)
            )
        )
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(concurrency)))
        dt = time.perf_counter() - t0
    return total / dt, errors


def decision_times(url: str, n: int) -> list[float]:
    sys.path.insert(0, str(ROOT))
    from router_lite.decisions import iter_decisions

    out = []
    for d in iter_decisions(url, history=n, timeout_s=2):
        out.append(d["scheduling_ms"])
        if len(out) >= n:
            break
    return out


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc), to turn a load run into CPU per request."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="sequential requests per latency run")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--load-requests", type=int, default=1000, help="requests per throughput run")
    ap.add_argument("--rounds", type=int, default=2, help="direct/routed alternations per profile (medians reported)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--profiles",
        default="default,precise,precise-local,shipped-precise",
        help="which router configs to run (comma-separated, of the default list)",
    )
    args = ap.parse_args()

    pod_port = free_port()
    procs: list[subprocess.Popen] = []
    results: dict = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "load_requests": args.load_requests,
        "profiles": {},
    }
    try:
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sim_gpu",
                "serve",
                "--port",
                str(pod_port),
                "--model",
                MODEL,
                "--time-scale",
                "0",
                "--num-gpu-blocks",
                "20000",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        procs.append(sim)
        direct = f"http://127.0.0.1:{pod_port}"
        wait_http(direct + "/health", sim, 30)
        with tempfile.TemporaryDirectory() as tmp:
            wanted = set(args.profiles.split(","))
            for name, config, extra in (
                ("default", None, []),
                ("precise", PRECISE, []),
                ("precise-local", PRECISE, ["--tokenizer", "builtin"]),
                ("shipped-precise", shipped_config("precise-prefix-cache"), ["--tokenizer", "builtin"]),
            ):
                if name not in wanted:
                    continue
                port = free_port()
                cmd = [
                    sys.executable,
                    "-m",
                    "router_lite",
                    "serve",
                    "--port",
                    str(port),
                    "--endpoints",
                    f"127.0.0.1:{pod_port}",
                    "--log-level",
                    "warning",
                ]
                if config:
                    cfg = Path(tmp) / f"{name}.yaml"
                    cfg.write_text(config)
                    cmd += ["--config", str(cfg)]
                cmd += extra
                t0 = time.perf_counter()
                rp = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
                procs.append(rp)
                url = f"http://127.0.0.1:{port}"
                wait_http(url + "/health", rp, 30)
                startup = time.perf_counter() - t0
                rows: dict[str, list[float]] = {k: [] for k in ("d50", "d99", "r50", "r99", "drps", "rrps", "cpu")}
                errors = 0
                for _ in range(args.rounds):
                    lat_d = asyncio.run(sequential(direct, args.requests))
                    lat_r = asyncio.run(sequential(url, args.requests))
                    rows["d50"].append(pct(lat_d, 0.5))
                    rows["d99"].append(pct(lat_d, 0.99))
                    rows["r50"].append(pct(lat_r, 0.5))
                    rows["r99"].append(pct(lat_r, 0.99))
                    rps_d, _ = asyncio.run(closed_loop(direct, args.concurrency, args.load_requests))
                    c0 = cpu_seconds(rp.pid)
                    rps_r, err = asyncio.run(closed_loop(url, args.concurrency, args.load_requests))
                    rows["cpu"].append((cpu_seconds(rp.pid) - c0) / args.load_requests)
                    rows["drps"].append(rps_d)
                    rows["rrps"].append(rps_r)
                    errors += err
                sched = decision_times(url, 200)
                stop(rp)
                med = {k: statistics.median(v) for k, v in rows.items()}
                results["profiles"][name] = {
                    "startup_s": startup,
                    "direct_p50_ms": med["d50"] * 1e3,
                    "direct_p99_ms": med["d99"] * 1e3,
                    "routed_p50_ms": med["r50"] * 1e3,
                    "routed_p99_ms": med["r99"] * 1e3,
                    "added_p50_ms": (med["r50"] - med["d50"]) * 1e3,
                    "added_p99_ms": (med["r99"] - med["d99"]) * 1e3,
                    "direct_rps": med["drps"],
                    "routed_rps": med["rrps"],
                    "router_cpu_ms_per_request": med["cpu"] * 1e3,
                    "router_max_rps_per_core": 1.0 / med["cpu"] if med["cpu"] > 0 else None,
                    "errors": errors,
                    "decision_p50_ms": statistics.median(sched) if sched else None,
                    "decision_p99_ms": pct(sched, 0.99) if sched else None,
                }
    finally:
        for p in procs:
            stop(p)

    print(
        f"router_lite vs a direct call to the same pod (time scale 0; {args.requests} sequential requests, "
        f"{args.load_requests} at concurrency {args.concurrency}; medians of {args.rounds} alternating rounds)"
    )
    print(
        f"{'profile':<14} {'direct p50/p99':>15} {'routed p50/p99':>15} {'added p50/p99':>14} "
        f"{'direct/routed req/s':>20} "
        f"{'router CPU ms/req':>17} {'max req/s/core':>14} {'decision p50/p99 ms':>19} {'start s':>7}"
    )
    for name, r in results["profiles"].items():
        sched = f"{r['decision_p50_ms']:.3f}/{r['decision_p99_ms']:.3f}" if r["decision_p50_ms"] is not None else "-"
        print(
            f"{name:<14} {r['direct_p50_ms']:7.2f}/{r['direct_p99_ms']:<7.2f} "
            f"{r['routed_p50_ms']:7.2f}/{r['routed_p99_ms']:<7.2f} "
            f"{r['added_p50_ms']:6.2f}/{r['added_p99_ms']:<7.2f} {r['direct_rps']:9.0f}/{r['routed_rps']:<10.0f} "
            f"{r['router_cpu_ms_per_request']:17.3f} {r['router_max_rps_per_core'] or 0:14.0f} {sched:>19} "
            f"{r['startup_s']:7.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
