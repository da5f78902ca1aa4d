"""Scheduling decision time of router_lite's scheduler, and tokenize+hash time of a long prompt.

Decision time: p50/p99 of `Scheduler.schedule` at 16 and 100 endpoints with 4k-token prompts, for the
approximate profile (queue + kv-cache + prefix-cache-scorer over the router's own routing history) and
the precise profile (queue + kv-cache + precise-prefix-cache-scorer over a KV-event index). The indexes are
populated the way a busy pool looks: 64 prefix groups (2k-token system prompts) spread over the pods,
plus each pod's cache filled with unrelated blocks (2,000 blocks a pod); requests share a group prefix and
add 2k unique tokens, so a lookup walks 128 hits then stops. Block hashes for the precise index are
precomputed (the gateway does it once per request). llm-d's Go scheduler reports P50 0.1-0.2 ms at 100
simulated pods.

Tokenize+hash: a BPE tokenizer trained locally with `tokenizers`, an 8k-token prompt, vLLM's chained
sha256 block hashes (block size 16) with kvtiers.hashing.BlockHasher.

    python bench/bench_scheduler.py [--decisions 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvtiers import BlockHasher, BlockStored, KVEventBatch, to_event_hash  # noqa: E402
from router_lite.config import load_config  # noqa: E402
from router_lite.prefix import PrefixIndexes  # noqa: E402
from router_lite.scheduler import Scheduler  # noqa: E402
from router_lite.types import Endpoint, EndpointMetrics, LLMRequest  # noqa: E402

BLOCK = 16
PROMPT_TOKENS = 4096
GROUPS = 64
PREFIX_TOKENS = 2048
FILL_BLOCKS_PER_POD = 2000


def profiles() -> dict[str, dict]:
    common = [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}]
    refs = [{"pluginRef": "queue-scorer"}, {"pluginRef": "kv-cache-utilization-scorer"}]
    return {
        "approximate": {
            "plugins": common
            + [{"type": "prefix-cache-scorer", "parameters": {"blockSizeTokens": BLOCK, "autoTune": False}}],
            "schedulingProfiles": [
                {"name": "default", "plugins": refs + [{"pluginRef": "prefix-cache-scorer", "weight": 3}]}
            ],
        },
        "precise": {
            "plugins": common
            + [{"type": "precise-prefix-cache-scorer", "parameters": {"tokenProcessorConfig": {"blockSize": BLOCK}}}],
            "schedulingProfiles": [
                {"name": "default", "plugins": refs + [{"pluginRef": "precise-prefix-cache-scorer", "weight": 3}]}
            ],
        },
    }


def make_pool(n: int, rng: random.Random) -> list[Endpoint]:
    eps = []
    for i in range(n):
        m = EndpointMetrics(
            waiting_queue_size=rng.randint(0, 8),
            running_requests_size=rng.randint(0, 32),
            kv_cache_usage_percent=rng.random() * 0.9,
            block_size=BLOCK,
            updated_at=time.monotonic(),
        )
        eps.append(Endpoint(f"10.0.{i // 250}.{i % 250}", 8000, metrics=m))
    return eps


def make_requests(count: int, rng: random.Random, hasher: BlockHasher) -> list[LLMRequest]:
    prefixes = [[rng.randrange(32000) for _ in range(PREFIX_TOKENS)] for _ in range(GROUPS)]
    reqs = []
    for i in range(count):
        tokens = prefixes[rng.randrange(GROUPS)] + [rng.randrange(32000) for _ in range(PROMPT_TOKENS - PREFIX_TOKENS)]
        hashes = [to_event_hash(d) for d in hasher.hash_blocks(tokens)]
        reqs.append(LLMRequest(f"r{i}", "model", prompt_token_ids=tokens, block_hashes=hashes))
    return reqs


def populate(sched: Scheduler, kind: str, eps: list[Endpoint], warm: list[LLMRequest], rng: random.Random) -> None:
    """Fill the index as a busy pool: each group's prefix on two pods, plus unrelated blocks per pod."""
    if kind == "precise":
        idx = sched.indexes.precise
        for g, r in enumerate(warm[:GROUPS]):
            for ep in (eps[g % len(eps)], eps[(g * 7 + 3) % len(eps)]):
                idx.apply(
                    ep.key,
                    idx.last_seq(ep.key) + 1 if idx.last_seq(ep.key) is not None else 0,
                    KVEventBatch(
                        0.0,
                        [
                            BlockStored(
                                block_hashes=r.block_hashes, parent_block_hash=None, token_ids=[], block_size=BLOCK
                            )
                        ],
                    ),
                )
        for ep in eps:
            fill = [rng.getrandbits(64) for _ in range(FILL_BLOCKS_PER_POD)]
            seq = idx.last_seq(ep.key)
            idx.apply(
                ep.key,
                0 if seq is None else seq + 1,
                KVEventBatch(
                    0.0,
                    [
                        BlockStored(
                            block_hashes=fill,
                            parent_block_hash=None,
                            token_ids=[],
                            block_size=BLOCK,
                            medium=rng.choice(["GPU", "CPU"]),
                        )
                    ],
                ),
            )
    else:
        for r in warm:
            res = sched.schedule(r, eps)
            sched.on_routed(r, res)
        idx = sched.indexes.approximate["prefix-cache-scorer"]
        for ep in eps:
            idx.add(ep.key, [rng.getrandbits(63) for _ in range(FILL_BLOCKS_PER_POD)])


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench_decisions(n_eps: int, kind: str, decisions: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    hasher = BlockHasher(BLOCK)
    eps = make_pool(n_eps, rng)
    sched = Scheduler(load_config(profiles()[kind]), PrefixIndexes(), rng=random.Random(seed))
    warm = make_requests(GROUPS * 2, rng, hasher)
    populate(sched, kind, eps, warm, rng)
    reqs = make_requests(min(decisions, 400), rng, hasher)
    times, cpu = [], []
    hits = 0
    for i in range(decisions):
        base = reqs[i % len(reqs)]
        r = LLMRequest(f"d{i}", base.model, prompt_token_ids=base.prompt_token_ids, block_hashes=base.block_hashes)
        c0, t0 = time.thread_time(), time.perf_counter()
        res = sched.schedule(r, eps)
        t1, c1 = time.perf_counter(), time.thread_time()
        times.append(t1 - t0)
        cpu.append(c1 - c0)
        hits += res.profile_results["default"].prefix_blocks.get(res.target.key, 0) > 0
        sched.on_routed(r, res)
        sched.on_finished(r, res.target)
    return {
        "endpoints": n_eps,
        "profile": kind,
        "decisions": decisions,
        "p50_ms": statistics.median(times) * 1e3,
        "p99_ms": pct(times, 99) * 1e3,
        "mean_ms": statistics.fmean(times) * 1e3,
        "prefix_hit_rate": hits / decisions,
        "cpu_p50_ms": statistics.median(cpu) * 1e3,
        "cpu_p99_ms": pct(cpu, 99) * 1e3,
        "index": sched.indexes.stats(),
    }


def train_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    corpus = [" ".join(rng.choice(words) for _ in range(60)) for _ in range(2000)]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=8192, special_tokens=["[UNK]"], show_progress=False))
    return tok, words


def bench_tokenize_hash(target_tokens: int = 8192, reps: int = 30) -> dict:
    tok, words = train_tokenizer()
    rng = random.Random(3)
    text = ""
    while len(tok.encode(text).ids) < target_tokens:
        text += " " + " ".join(rng.choice(words) for _ in range(500))
    ids = tok.encode(text).ids
    hasher = BlockHasher(BLOCK)
    t_tok, t_hash, t_cpu = [], [], []
    for _ in range(reps):
        c0, t0 = time.thread_time(), time.perf_counter()
        ids = tok.encode(text).ids
        t1 = time.perf_counter()
        [to_event_hash(d) for d in hasher.hash_blocks(ids)]
        t2, c2 = time.perf_counter(), time.thread_time()
        t_tok.append(t1 - t0)
        t_hash.append(t2 - t1)
        t_cpu.append(c2 - c0)
    total = [a + b for a, b in zip(t_tok, t_hash)]
    return {
        "prompt_tokens": len(ids),
        "blocks": len(ids) // BLOCK,
        "tokenize_p50_ms": statistics.median(t_tok) * 1e3,
        "hash_p50_ms": statistics.median(t_hash) * 1e3,
        "total_p50_ms": statistics.median(total) * 1e3,
        "total_p99_ms": pct(total, 99) * 1e3,
        "total_cpu_p50_ms": statistics.median(t_cpu) * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    ap.add_argument("--plot", type=Path, default=None, help="write a PNG bar chart of decision times here")
    args = ap.parse_args()
    results = []
    print(
        f"scheduling decision time, {PROMPT_TOKENS}-token prompts, block size {BLOCK} (llm-d Go: p50 0.1-0.2 ms @ 100 "
        "pods)"
    )
    print("wall = perf_counter around schedule(); cpu = this thread's CPU time (unaffected by a busy machine)")
    print(
        f"{'endpoints':>9} {'profile':>12} {'p50 ms':>8} {'p99 ms':>8} {'cpu p50':>8} {'cpu p99':>8} {'hit rate':>8}  "
        "index blocks"
    )
    for n in (16, 100):
        for kind in ("approximate", "precise"):
            r = bench_decisions(n, kind, args.decisions)
            results.append(r)
            blocks = sum(v["blocks"] for v in r["index"].values())
            print(
                f"{n:>9} {kind:>12} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['cpu_p50_ms']:>8.3f} "
                f"{r['cpu_p99_ms']:>8.3f} {r['prefix_hit_rate']:>8.2f}  {blocks}"
            )
    th = bench_tokenize_hash()
    print(
        f"tokenize+hash {th['prompt_tokens']} tokens ({th['blocks']} blocks): tokenize p50 {th['tokenize_p50_ms']:.2f} "
        f"ms, hash p50 {th['hash_p50_ms']:.2f} ms, total p50 {th['total_p50_ms']:.2f} ms, p99 {th['total_p99_ms']:.2f} "
        f"ms, cpu p50 {th['total_cpu_p50_ms']:.2f} ms"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"decisions": results, "tokenize_hash": th}, indent=2))
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")


def plot(results: list[dict], path: Path) -> None:
    """p50/p99 decision CPU time per (endpoints, profile), with llm-d's reported Go band for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['endpoints']} pods\n{r['profile']}" for r in results]
    x = range(len(results))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar([i - 0.2 for i in x], [r["cpu_p50_ms"] for r in results], 0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [r["cpu_p99_ms"] for r in results], 0.4, label="p99")
    ax.axhspan(0.1, 0.2, color="grey", alpha=0.2, label="llm-d Go p50 @100 pods")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("decision time (ms, CPU)")
    ax.set_title(f"router_lite scheduling decision, {PROMPT_TOKENS}-token prompts")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
