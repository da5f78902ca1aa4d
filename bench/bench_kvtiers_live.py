"""TTFT through the router of a shared-filesystem KV hit vs a miss, on a live `llmdctl up kv-offload` stack.

Real processes on loopback, real time (time scale 1): pod A computes K long prompts, a flood of one-off
requests pushes them GPU -> CPU -> the shared filesystem, then each prompt goes through the router (the
served pod loads it from the filesystem tier: a DISK hit) interleaved with a fresh prompt of the same length
(a miss). TTFT = time to the first streamed token at the client. Prints medians side by side and writes JSON.

    python bench/bench_kvtiers_live.py [--prompts 8] [--blocks 128] [--model-profile Llama-3.1-8B]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import free_port, free_port_block  # noqa: E402

BS = 16


def ttft(client: httpx.Client, url: str, prompt: list[int]) -> tuple[float, str, int]:
    """(seconds to the first token, serving endpoint, cached tokens) of one streamed completion."""
    body = {
        "model": "sim-model",
        "prompt": prompt,
        "max_tokens": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first = None
    cached = 0
    with client.stream("POST", f"{url}/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            doc = json.loads(line[5:])
            if first is None and doc.get("choices"):
                first = time.perf_counter() - t0
            usage = doc.get("usage")
            if usage:
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        return first or 0.0, r.headers.get("x-llmd-endpoint", ""), cached


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8, help="hit/miss pairs")
    ap.add_argument("--blocks", type=int, default=128, help="prompt length in 16-token blocks")
    ap.add_argument("--model-profile", default="Llama-3.1-8B")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "docs" / "img" / "kvtiers_live_bench.json"))
    args = ap.parse_args()
    rng = random.Random(0)
    n_tok = args.blocks * BS + 3
    gpu_blocks = 4 * args.blocks
    sets = [
        f"pools.0.num_gpu_blocks={gpu_blocks}",
        f"kv_tiers.cpu_blocks={args.blocks}",
        f"pools.0.max_model_len={gpu_blocks * BS}",
        f"pools.0.model_profile={args.model_profile}",
        f"pools.0.tensor_parallel_size={args.tp}",
    ]
    home = tempfile.mkdtemp(prefix="llmdctl-kvlive-")
    env = {**os.environ, "LLMDCTL_HOME": home}
    cmd = [sys.executable, "-m", "llmdctl"]
    ports = [
        "--port",
        str(free_port()),
        "--pod-port",
        str(free_port_block(2)),
        "--events-port",
        str(free_port_block(2)),
    ]
    r = subprocess.run(
        [*cmd, "up", "kv-offload", "--replicas", "2", *ports, *(a for s in sets for a in ("--set", s)), "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        print(r.stdout + r.stderr, file=sys.stderr)
        return 1
    up = json.loads(r.stdout)
    router, pod_a = up["router_url"], up["pods"][0]["url"]
    try:
        with httpx.Client(timeout=60) as c:
            for _ in range(100):
                if c.get(f"{router}/health").json()["healthy_endpoints"] == 2:
                    break
                time.sleep(0.05)
            prompts = [[rng.randrange(1000, 30000) for _ in range(n_tok)] for _ in range(args.prompts)]
            for p in prompts:  # pod A computes them
                c.post(
                    f"{pod_a}/v1/completions", json={"model": "sim-model", "prompt": p, "max_tokens": 1}
                ).raise_for_status()
            for _ in range(2 * (gpu_blocks + args.blocks) // 16):  # flood: 16-block one-offs push them to disk
                c.post(
                    f"{pod_a}/v1/completions",
                    json={
                        "model": "sim-model",
                        "prompt": [rng.randrange(1000, 30000) for _ in range(16 * BS)],
                        "max_tokens": 1,
                    },
                ).raise_for_status()
            time.sleep(0.5)
            hits, misses, rows = [], [], []
            for p in prompts:
                t_hit, ep_hit, c_hit = ttft(c, router, p)
                t_miss, ep_miss, c_miss = ttft(c, router, [rng.randrange(1000, 30000) for _ in range(n_tok)])
                rows.append(
                    {
                        "hit_s": t_hit,
                        "hit_endpoint": ep_hit,
                        "hit_cached": c_hit,
                        "miss_s": t_miss,
                        "miss_cached": c_miss,
                    }
                )
                if c_hit >= args.blocks * BS:
                    hits.append(t_hit)
                misses.append(t_miss)
            metrics = {p["url"]: c.get(f"{p['url']}/metrics").text for p in up["pods"]}
    finally:
        subprocess.run([*cmd, "down"], env=env, cwd=REPO, capture_output=True, timeout=60)
    disk_hits = {
        u: sum(
            float(line.rsplit(" ", 1)[1])
            for line in t.splitlines()
            if line.startswith("llmd_sim:kv_tier_hits_total") and 'medium="DISK"' in line
        )
        for u, t in metrics.items()
    }
    med_hit = statistics.median(hits) if hits else float("nan")
    med_miss = statistics.median(misses)
    print(
        f"kv-offload live, 2 pods, {args.model_profile} tp{args.tp} on H100 (simulated, time scale 1), "
        f"prompt {n_tok} tokens ({args.blocks} blocks), {len(prompts)} pairs"
    )
    print(f"  TTFT median  FS-tier hit: {med_hit * 1000:7.1f} ms   ({len(hits)}/{len(prompts)} full hits)")
    print(f"  TTFT median  miss       : {med_miss * 1000:7.1f} ms")
    print(f"  miss / hit             : {med_miss / med_hit:7.2f}x")
    print(f"  DISK hit tokens by pod : {disk_hits}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "model_profile": args.model_profile,
                "tp": args.tp,
                "prompt_tokens": n_tok,
                "ttft_hit_median_s": med_hit,
                "ttft_miss_median_s": med_miss,
                "rows": rows,
                "disk_hit_tokens": disk_hits,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
