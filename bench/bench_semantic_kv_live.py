"""Typed (semantic) KV vs blind LRU through live engines: the `semantic-kv` demo over a sweep of KV sizes.

Each point brings up two 2-pod stacks in turn (kv-offload's LRU tiers, semantic-kv's typed policies) with the
same GPU / CPU / filesystem capacity and sends the same agentic chat workload (agents of several apps, each
its own system prompt and tools, ReAct turns, `<think>` branches, other tenants' one-offs) through the router;
the pods type their blocks from the chat structure. Prints, per size, prefix hit rate (cached prompt tokens /
prompt tokens, from the pods' usage) and TTFT, typed vs LRU
(medians over `--repeats` runs that alternate which stack goes first) beside the workload's reuse bound (the
hit rate no cache can beat), and writes JSON.

    python bench/bench_semantic_kv_live.py                       # the default sweep
    python bench/bench_semantic_kv_live.py --sizes 200:300,200:600 --requests 120
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmdctl.demos.catalog import SEMANTIC_KV_WORKLOAD, semantic_kv  # noqa: E402


def reuse_bound(wl, max_requests: int, block: int = 16) -> float:
    """The hit rate no cache can beat on this workload: the share of prompt tokens in full blocks some earlier
    request already had (infinite cache, requests in send order; outputs stand in as fresh tokens, as the
    live outputs are). Where LRU is already close to it, no eviction policy has anything to win."""
    import random

    from llmdctl.bench.workloads import SessionTracker, generate

    tracker, rng, seen = SessionTracker(), random.Random(0), set()
    total = fresh = 0
    for req in generate(wl)[:max_requests]:
        prompt = tracker.prompt_of(req)
        h = 0
        full = len(prompt) // block
        for i in range(full):
            h = hash((h, tuple(prompt[i * block : (i + 1) * block])))
            fresh += block if h not in seen else 0
            seen.add(h)
        total += len(prompt)
        fresh += len(prompt) - full * block
        tracker.record(req, prompt, [rng.randrange(1000, 30000) for _ in range(req.max_tokens)], 0.0)
    return 1 - fresh / total if total else 0.0


def figures(summary: dict) -> dict[str, float]:
    """hit: cached prompt tokens / prompt tokens (every tier, from usage); gpu_hit: the pods' GPU prefix-cache
    hit rate (vllm:prefix_cache_*); TTFT mean / p50 / p90 in seconds; output tokens/s."""
    t = summary["ttft_s"]
    return {
        "hit": summary.get("cached_token_fraction") or 0.0,
        "gpu_hit": summary.get("pod_hit_rate") or 0.0,
        "ttft_mean": t["mean"] or 0.0,
        "ttft_p50": t["p50"] or 0.0,
        "ttft_p90": t["p90"] or 0.0,
        "out_tok_s": summary["output_tok_s"],
        "ok": summary["ok"],
        "requests": summary["requests"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes",
        default="400:150:2,400:300:2,400:600:2,400:1200:2,400:300:512",
        help="GPU:CPU blocks per pod:shared filesystem MB, comma-separated",
    )
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2, help="runs per point, alternating which stack goes first; medians")
    p.add_argument("--sessions", type=int, default=SEMANTIC_KV_WORKLOAD.num_sessions, help="agents")
    p.add_argument("--turns", type=int, default=SEMANTIC_KV_WORKLOAD.turns, help="ReAct steps per agent")
    p.add_argument(
        "--question-len", type=int, default=SEMANTIC_KV_WORKLOAD.question_len, help="task / tool observation tokens"
    )
    p.add_argument("--output-len", type=int, default=SEMANTIC_KV_WORKLOAD.output_len)
    p.add_argument(
        "--branches",
        type=int,
        default=SEMANTIC_KV_WORKLOAD.branches,
        help="tree-of-thought branches per step (incl. the main turn)",
    )
    p.add_argument(
        "--reasoning-len",
        type=int,
        default=SEMANTIC_KV_WORKLOAD.reasoning_len,
        help="tokens of each branch's scratchpad",
    )
    p.add_argument("--apps", type=int, default=SEMANTIC_KV_WORKLOAD.apps, help="agent apps (own system prompt, tools)")
    p.add_argument(
        "--oneoffs", type=int, default=SEMANTIC_KV_WORKLOAD.oneoffs, help="other tenants' one-off requests per step"
    )
    p.add_argument("--oneoff-len", type=int, default=SEMANTIC_KV_WORKLOAD.oneoff_len, help="tokens of each one-off")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "semantic_kv_live.json"))
    args = p.parse_args(argv)
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",")]
    wl = dataclasses.replace(
        SEMANTIC_KV_WORKLOAD,
        num_sessions=args.sessions,
        turns=args.turns,
        question_len=args.question_len,
        output_len=args.output_len,
        branches=args.branches,
        reasoning_len=args.reasoning_len,
        apps=args.apps,
        oneoffs=args.oneoffs,
        oneoff_len=args.oneoff_len,
    )
    rows = []
    for gpu, cpu, fs in sizes:
        t0 = time.monotonic()
        pairs = []
        for rep in range(args.repeats):  # each repeat runs the two stacks in the other order
            with tempfile.TemporaryDirectory() as tmp:
                res = semantic_kv(
                    Path(tmp),
                    lambda m: print("  " + m, flush=True),
                    gpu_blocks=gpu,
                    cpu_blocks=cpu,
                    fs_mb=fs,
                    workload=wl,
                    max_requests=args.requests,
                    typed_first=rep % 2 == 1,
                )
            pairs.append(tuple(figures(res.summaries[k]) for k in ("blind LRU (kv-offload)", "typed (semantic-kv)")))
        lru = {k: statistics.median(a[k] for a, _ in pairs) for k in pairs[0][0]}
        typed = {k: statistics.median(b[k] for _, b in pairs) for k in pairs[0][1]}
        rows.append(
            {
                "gpu_blocks": gpu,
                "cpu_blocks": cpu,
                "fs_mb": fs,
                "lru": lru,
                "typed": typed,
                "repeats": pairs,
                "wall_s": time.monotonic() - t0,
            }
        )
        print(f"GPU {gpu} + CPU {cpu} blocks/pod + FS {fs} MB: LRU {lru}  typed {typed}", flush=True)
    bound = reuse_bound(wl, args.requests)
    print(f"\nworkload: {wl.describe()}, chat, {args.requests} requests, concurrency 6, 2 pods")
    print(f"reuse bound (no cache can hit more; chat template tokens aside): {bound:.3f}")
    print(
        f"{'GPU:CPU:FS':>12} | {'hit LRU':>7} {'typed':>6} | {'GPU hit LRU':>11} {'typed':>6} | {'TTFT mean LRU':>13} "
        f"{'typed':>6} {'ratio':>6} | {'p50 LRU':>7} {'typed':>6} | {'p90 LRU':>7} {'typed':>6} | ok"
    )
    for r in rows:
        a, b = r["lru"], r["typed"]
        ratio = b["ttft_mean"] / a["ttft_mean"] if a["ttft_mean"] else float("nan")
        print(
            f"{r['gpu_blocks']:>4}:{r['cpu_blocks']:<4}:{r['fs_mb']:<3} | {a['hit']:>7.3f} {b['hit']:>6.3f} | "
            f"{a['gpu_hit']:>11.3f} {b['gpu_hit']:>6.3f} | {a['ttft_mean']:>13.3f} {b['ttft_mean']:>6.3f} "
            f"{ratio:>6.2f} | {a['ttft_p50']:>7.3f} {b['ttft_p50']:>6.3f} | {a['ttft_p90']:>7.3f} "
            f"{b['ttft_p90']:>6.3f} | {a['ok']}/{a['requests']} {b['ok']}/{b['requests']}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"argv": sys.argv[1:], "workload": wl.describe(), "reuse_bound": bound, "rows": rows}, indent=1)
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
