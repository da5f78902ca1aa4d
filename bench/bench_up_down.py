"""Start-up and shutdown time of `llmdctl up PROFILE` / `llmdctl down` on the local target.

Runs the real CLI as a user would (a fresh interpreter each time), in a temporary run directory and on free
ports, and prints per-run figures and medians: `up` wall time until every component is healthy, time until
a first request through the router succeeds (and which pod served it), and `down` wall time.

    python bench/bench_up_down.py [--profile inference-scheduling] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_gpu.procs import free_port_block  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="inference-scheduling")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="profile override, as `up --set`")
    args = ap.parse_args()
    ups, firsts, downs = [], [], []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "LLMDCTL_HOME": home}
        for i in range(args.runs):
            router = free_port_block(1)  # pods and KV events: llmdctl picks the first free blocks, as for a user
            cmd = [sys.executable, "-m", "llmdctl"]
            t0 = time.perf_counter()
            r = subprocess.run(
                [*cmd, "up", args.profile, "--port", str(router), "--json", *(f"--set={kv}" for kv in args.set)],
                env=env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
            t_up = time.perf_counter() - t0
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                subprocess.run([*cmd, "down"], env=env, capture_output=True, timeout=60)
                return 1
            url = json.loads(r.stdout)["router_url"]
            served = "-"
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline:
                try:
                    resp = httpx.post(
                        f"{url}/v1/completions",
                        json={"model": "sim-model", "prompt": "Hello there", "max_tokens": 4},
                        timeout=5,
                    )
                    if resp.status_code == 200:
                        served = resp.headers.get("x-llmd-endpoint", "?")
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
            t_first = time.perf_counter() - t0
            t1 = time.perf_counter()
            d = subprocess.run(
                [*cmd, "down", "--json"], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
            )
            t_down = time.perf_counter() - t1
            left = (
                json.loads(d.stdout) if d.returncode == 0 else {"remaining_pids": "?", "listening": "?", "killed": "?"}
            )
            print(
                f"run {i + 1}: up {t_up:.2f}s  first request {t_first:.2f}s (served by {served})  down {t_down:.2f}s  "
                f"left: pids {left['remaining_pids']} ports {left['listening']}"
                + (f"  SIGKILLed: {left['killed']}" if left["killed"] else "")
            )
            ups.append(t_up)
            firsts.append(t_first)
            downs.append(t_down)
    print(
        f"{args.profile}: median up {statistics.median(ups):.2f}s, first request {statistics.median(firsts):.2f}s, "
        f"down {statistics.median(downs):.2f}s over {args.runs} runs (cores: {os.cpu_count()}, load avg "
        f"{os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
