"""How many short requests per second one sim_gpu process sustains, hosting 1 or 8 pods in one event loop.

Starts `python -m sim_gpu serve --pods P --time-scale 0` (instant steps: this measures the HTTP shell and the
engine's bookkeeping, not simulated GPU time), then drives it from this process with a bounded async load
(a minimal asyncio HTTP/1.1 keep-alive client on uvloop; `--concurrency` connections spread round-robin over
the pods, `--requests` per run).
Reports the median of `--runs` runs: requests/s, client-side latency p50/p99, and the server's CPU seconds per
request (psutil), which tells whether the server or the client was the bottleneck on this machine.
`--tokenizer default` serves the tokenizer `llmdctl up` gives simulated pods (the simulated model's HF
tokenizer), `--tokenizer DIR` another one; without it the simulator's built-in word tokenizer.

    python bench/bench_sim_server.py                 # pods 1 and 8, non-streaming and streaming
    python bench/bench_sim_server.py --pods 8 --requests 3000 --runs 5
    python bench/bench_sim_server.py --tokenizer default
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_gpu.procs import free_port_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def start_server(pods: int, extra: list[str]) -> tuple[subprocess.Popen, list[str], float]:
    port = free_port_block(pods)

    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim_gpu",
            "serve",
            "--port",
            str(port),
            "--pods",
            str(pods),
            "--time-scale",
            "0",
            "--num-gpu-blocks",
            "4096",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    urls = [f"http://127.0.0.1:{port + i}" for i in range(pods)]
    pending = list(urls)
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=1) as client:
        while pending:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("sim server did not start")
            try:
                if client.get(pending[0] + "/health").status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    return proc, urls, time.monotonic() - t0


class _Conn:
    """A minimal HTTP/1.1 keep-alive client connection (httpx costs more CPU per request than the server)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        r = self.reader
        assert r is not None
        status_line = await r.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while True:
            line = await r.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            key = key.strip().lower()
            if key == "content-length":
                length = int(value)
            elif key == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await r.readline()).split(b";")[0], 16)
                await r.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await r.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_load(
    urls: list[str], requests: int, concurrency: int, max_tokens: int, stream: bool, prompt_words: int
) -> tuple[float, list[float], int]:
    """(wall seconds, per-request latencies, errors) for `requests` requests, `concurrency` in flight."""
    errors = 0
    lat: list[float] = []
    next_i = 0
    words = " ".join(f"w{i % 97}" for i in range(prompt_words))
    ports = [int(u.rsplit(":", 1)[1]) for u in urls]
    conns = [_Conn("127.0.0.1", ports[w % len(ports)]) for w in range(concurrency)]

    async def one(conn: _Conn, i: int) -> None:
        nonlocal errors
        body = json.dumps(
            {"prompt": f"{i} {words}", "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
        ).encode()
        t = time.perf_counter()
        try:
            ok = await conn.post("/v1/completions", body) == 200
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            ok = False
            conn.close()
            conn.writer = None
        lat.append(time.perf_counter() - t)
        if not ok:
            errors += 1

    async def worker(conn: _Conn) -> None:
        nonlocal next_i
        while next_i < requests:
            i = next_i
            next_i += 1
            await one(conn, i)

    try:
        await asyncio.gather(*(one(c, i) for i, c in enumerate(conns)))  # open and warm every connection
        lat.clear()
        errors = 0
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        return time.perf_counter() - t0, lat, errors
    finally:
        for c in conns:
            c.close()


def bench(pods: int, args: argparse.Namespace, stream: bool) -> dict:
    proc, urls, startup = start_server(pods, ["--tokenizer", args.tokenizer] if args.tokenizer else [])
    try:
        runs = []
        for _ in range(args.runs):
            cpu0 = _cpu_seconds(proc.pid)
            wall, lat, errors = asyncio.run(
                run_load(urls, args.requests, args.concurrency, args.max_tokens, stream, args.prompt_words)
            )
            cpu = _cpu_seconds(proc.pid) - cpu0
            lat.sort()
            runs.append(
                {
                    "rps": args.requests / wall,
                    "p50_ms": 1000 * lat[len(lat) // 2],
                    "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1],
                    "errors": errors,
                    "server_cpu_ms_per_req": 1000 * cpu / args.requests,
                    "server_cpu_util": cpu / wall,
                }
            )
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med.update(pods=pods, stream=stream, startup_s=startup, runs=len(runs), rss_mb=_rss_mb(proc.pid))
        return med
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", default="1,8", help="comma-separated pod counts to compare (default 1,8)")
    ap.add_argument("--requests", type=int, default=1500, help="requests per run")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--prompt-words", type=int, default=64)
    ap.add_argument("--modes", default="plain,stream", help="plain and/or stream")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--tokenizer", help="tokenizer directory, or `default` for the one `llmdctl up` serves")
    args = ap.parse_args()
    if args.tokenizer == "default":
        from llmdctl.simtokenizer import sim_tokenizer_dir

        args.tokenizer = str(sim_tokenizer_dir())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = []
    print(
        f"sim_gpu server bench: {args.requests} requests/run x {args.runs} runs, concurrency {args.concurrency}, "
        f"~{args.prompt_words + 2}-token prompts, {args.max_tokens} output tokens, --time-scale 0, "
        f"{os.cpu_count()} CPUs (client and server share them), tokenizer {args.tokenizer or 'builtin'}"
    )
    print(
        f"{'pods':>4} {'mode':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'srv cpu ms/req':>15} "
        f"{'srv cpu util':>13} {'errors':>6} {'startup s':>9} {'RSS MB':>7}"
    )
    for pods in [int(p) for p in args.pods.split(",")]:
        for mode in args.modes.split(","):
            r = bench(pods, args, mode == "stream")
            results.append(r)
            print(
                f"{pods:>4} {mode:>6} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                f"{r['server_cpu_ms_per_req']:>15.2f} {r['server_cpu_util']:>13.2f} {r['errors']:>6.0f} "
                f"{r['startup_s']:>9.2f} {r['rss_mb']:>7.0f}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
