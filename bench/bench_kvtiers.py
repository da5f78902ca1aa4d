"""Benchmark kvtiers: what lower tiers, typed policies and the real filesystem tier buy.

(a) working set 3x the GPU's KV capacity, through the simulator's engine (virtual clock, roofline latency
    model, H100 / Llama-3.1-8B): hit rate, TTFT and throughput, GPU only vs GPU+CPU vs GPU+CPU+FS;
(b) an agentic trace (shared system prompt and tools, ReAct loops, tree-of-thought branches, one-off
    traffic): prefill tokens recomputed by a prefix cache under LRU vs typed policies vs Belady's offline
    optimum (a lower bound), and the same trace through the engine with an LRU vs a typed CPU tier;
(c) the filesystem tier's write/read throughput against raw `dd` in the same directory, same run, in rounds
    (dd and the tier back to back; writes in pairs of 64 MiB slices, each side flushing its own files);
    medians and the median of per-round (per-pair) ratios.

Prints figures, writes docs/img/kvtiers_bench.json and PNG plots next to it.

    python bench/bench_kvtiers.py               # all parts
    python bench/bench_kvtiers.py --parts c --fs-dir /mnt/shared --fs-mb 1024
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kvtiers.engine_hook import attach_tiers  # noqa: E402
from kvtiers.fs_tier import FsTier  # noqa: E402
from kvtiers.policy import PolicyConfig, TraceRequest, TypePolicy, belady_misses, flatten, simulate_prefix_cache  # noqa: E402
from kvtiers.store import READ_AHEAD, CostModel, FilesystemTier, MemoryTier, TieredStore, synthetic_payload  # noqa: E402
from kvtiers.types import BlockType  # noqa: E402
from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine  # noqa: E402

BS = 16
T = BlockType
IMG = ROOT / "docs" / "img"


# ---------------------------------------------------------------------------------------------------------
# The engine driver: closed loop, virtual clock.


def drive(
    engine: SimEngine, prompts: list[list[int]], max_tokens: int, concurrency: int, hook=None, types=None
) -> dict:
    """Run `prompts` in order, `concurrency` at a time, on a virtual clock; latency and cache figures."""
    now = 0.0
    nxt = 0
    arrival: dict[str, float] = {}
    plen: dict[str, int] = {}
    ttft: list[float] = []
    cached = 0
    out_tokens = 0
    while nxt < len(prompts) or engine.has_unfinished():
        while nxt < len(prompts) and engine.num_unfinished() < concurrency:
            rid = f"r{nxt}"
            if hook is not None and types is not None:
                hook.note_request(prompts[nxt], types[nxt])
            engine.add_request(
                EngineRequest(rid, prompts[nxt], max_tokens=max_tokens, ignore_eos=True, arrival_time=now)
            )
            arrival[rid], plen[rid] = now, len(prompts[nxt])
            nxt += 1
        r = engine.step(now)
        now += r.duration_s if r.duration_s > 0 else 1e-5
        for o in r.outputs:
            out_tokens += len(o.new_token_ids)
            if o.first_token:
                ttft.append(now - arrival[o.request_id])
                cached += o.num_cached_tokens
    prompt_tokens = sum(len(p) for p in prompts)
    st = engine.stats()
    res = {
        "requests": len(prompts),
        "prompt_tokens": prompt_tokens,
        "hit_rate": cached / prompt_tokens,
        "hit_rate_gpu": st.prefix_cache_hits_tokens / prompt_tokens,
        "recomputed_tokens": prompt_tokens - cached,
        "ttft_mean_ms": 1e3 * statistics.fmean(ttft),
        "ttft_p50_ms": 1e3 * statistics.median(ttft),
        "ttft_p90_ms": 1e3 * sorted(ttft)[int(0.9 * (len(ttft) - 1))],
        "makespan_s": now,
        "throughput_rps": len(prompts) / now,
        "throughput_out_tok_s": out_tokens / now,
        "preemptions": st.num_preemptions,
    }
    if hook is not None:
        c = hook.counters
        res["hit_rate_cpu"] = c.hit_tokens_cpu / prompt_tokens
        res["hit_rate_disk"] = c.hit_tokens_disk / prompt_tokens
        res["load_s"] = c.load_s
        res["store"] = hook.store.stats.as_dict()
    return res


def tokens_of(key: object, n: int = BS) -> list[int]:
    """Deterministic token ids for a block of content `key` (same content -> same tokens -> same hash)."""
    seed = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    return [rng.randrange(1, 32000) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------
# (a) working set 3x GPU capacity


def part_a(args, fs_root: Path) -> dict:
    gpu_blocks = args.gpu_blocks
    doc_blocks = args.doc_blocks
    n_docs = 3 * gpu_blocks // doc_blocks  # working set: 3x the GPU's KV capacity
    rng = random.Random(7)
    docs = [sum((tokens_of(("doc", d, j)) for j in range(doc_blocks)), []) for d in range(n_docs)]
    prompts = []
    for i in range(args.a_requests):
        d = rng.randrange(n_docs)
        prompts.append(docs[d] + tokens_of(("question", i), 24))  # shared document + a fresh question
    lat = SimEngine(EngineConfig(num_gpu_blocks=gpu_blocks + 1)).latency
    block_bytes = lat.kv_bytes_per_token() * BS
    cost = CostModel(block_bytes=block_bytes, pcie_gbps=32.0, disk_read_gbps=5.0, disk_write_gbps=5.0)
    configs = {
        "GPU only": [],
        "GPU+CPU": [MemoryTier("CPU", gpu_blocks)],
        "GPU+CPU+FS": [MemoryTier("CPU", gpu_blocks), "fs"],
    }
    out = {
        "gpu_blocks": gpu_blocks,
        "working_set_blocks": n_docs * doc_blocks,
        "block_bytes": block_bytes,
        "configs": {},
    }
    for name, tiers in configs.items():
        eng = SimEngine(EngineConfig(num_gpu_blocks=gpu_blocks + 1, block_size=BS, max_num_seqs=64))
        hook = None
        if tiers:
            if "fs" in tiers:
                d = fs_root / "a"
                shutil.rmtree(d, ignore_errors=True)
                fs = FilesystemTier(FsTier(d, 4 * n_docs * doc_blocks * 8192), synthetic_payload(4096))
                tiers = [t if t != "fs" else fs for t in tiers]
            hook = attach_tiers(eng, TieredStore(tiers, cost, block_size=BS))
        t0 = time.perf_counter()
        res = drive(eng, prompts, args.max_tokens, args.concurrency, hook)
        res["wall_s"] = time.perf_counter() - t0
        out["configs"][name] = res
    return out


# ---------------------------------------------------------------------------------------------------------
# (b) agentic workload


def agentic_trace(args) -> tuple[list[TraceRequest], list[list[int]], list[list[BlockType]]]:
    """Sessions of ReAct turns over one shared system prompt + tools, with tree-of-thought branches at each
    turn and one-off requests from other tenants in between. Returns the trace (chained block ids + types)
    and, for the engine, each request's token ids and per-block types."""
    rng = random.Random(11)
    sys_blocks = [("sys", j) for j in range(args.sys_blocks)]
    tool_blocks = [("tools", j) for j in range(args.tool_blocks)]
    sessions = [{"conv": [("s", s, "task", j) for j in range(4)]} for s in range(args.sessions)]
    requests: list[list[tuple[object, BlockType]]] = []
    head = [(k, T.SYSTEM_PROMPT) for k in sys_blocks] + [(k, T.TOOL_DEFINITION) for k in tool_blocks]
    for turn in range(args.turns):
        for s, sess in enumerate(sessions):
            base = head + [(k, T.CONVERSATION) for k in sess["conv"]]
            # tree-of-thought: a few reasoning branches from the same state, each evaluated once
            for b in range(args.branches):
                branch = [(("s", s, turn, "branch", b, j), T.REASONING_BRANCH) for j in range(args.branch_blocks)]
                requests.append(base + branch)
            # the ReAct step: the chosen action and the tool's observation join the conversation
            sess["conv"] = sess["conv"] + [("s", s, turn, "obs", j) for j in range(3)]
            requests.append(head + [(k, T.CONVERSATION) for k in sess["conv"]])
            for o in range(args.oneoffs):  # other tenants' one-off requests (own prompts) flood the cache
                n = rng.randrange(args.oneoff_blocks // 2, args.oneoff_blocks + 1)
                requests.append([(("oneoff", turn, s, o, j), T.OTHER) for j in range(n)])
    trace, prompts, types = [], [], []
    for req in requests:
        ids, parent = [], b""
        for key, _t in req:  # chained ids, as prefix-cache block hashes are
            parent = hashlib.blake2b(parent + repr(key).encode(), digest_size=8).digest()
            ids.append(parent)
        trace.append(TraceRequest(tuple(ids), tuple(t for _, t in req)))
        prompts.append(sum((tokens_of(k) for k, _ in req), []) + tokens_of(("tail", len(prompts)), 3))
        types.append([t for _, t in req])
    return trace, prompts, types


def typed_policy(args) -> PolicyConfig:
    return PolicyConfig(
        {
            T.SYSTEM_PROMPT: TypePolicy(pin=True, pin_budget=args.pin_budget, replicate=True),
            T.TOOL_DEFINITION: TypePolicy(pin=True, pin_budget=args.pin_budget, replicate=True),
            T.REASONING_BRANCH: TypePolicy(evict_on_finish=True),
        }
    )


def part_b(args) -> dict:
    trace, prompts, types = agentic_trace(args)
    unique = len(set(flatten(trace)))
    total = sum(len(r.blocks) for r in trace)
    pol = typed_policy(args)
    sweep = []
    for cap in args.b_capacities:
        lru = simulate_prefix_cache(trace, cap)
        typed = simulate_prefix_cache(trace, cap, pol)
        opt = belady_misses(flatten(trace), cap)
        sweep.append(
            {"capacity_blocks": cap, "lru_tokens": lru * BS, "typed_tokens": typed * BS, "belady_tokens": opt * BS}
        )
    # Through the engine: a small LRU GPU pool with a CPU tier under LRU vs typed policies.
    lat = SimEngine(EngineConfig(num_gpu_blocks=args.b_gpu_blocks + 1)).latency
    cost = CostModel(block_bytes=lat.kv_bytes_per_token() * BS)
    engine_runs = {}
    for name, p in (("GPU only", None), ("CPU tier LRU", PolicyConfig()), ("CPU tier typed", pol)):
        eng = SimEngine(EngineConfig(num_gpu_blocks=args.b_gpu_blocks + 1, block_size=BS, max_num_seqs=64))
        hook = (
            attach_tiers(eng, TieredStore([MemoryTier("CPU", args.b_cpu_blocks, p)], cost, policy=p, block_size=BS))
            if p is not None
            else None
        )
        engine_runs[name] = drive(eng, prompts, 8, args.b_concurrency, hook, types)
    return {
        "requests": len(trace),
        "unique_blocks": unique,
        "total_blocks": total,
        "no_cache_tokens": total * BS,
        "policy": {t.value: vars(p) for t, p in pol.policies.items()},
        "sweep": sweep,
        "engine": {"gpu_blocks": args.b_gpu_blocks, "cpu_blocks": args.b_cpu_blocks, "runs": engine_runs},
    }


# ---------------------------------------------------------------------------------------------------------
# (c) filesystem tier vs raw disk


def _drop_cache(path: Path) -> None:
    """Evict one file's pages from the page cache (so the read that follows hits the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _disk_reads(path: Path) -> Callable[[], tuple[int, int]] | None:
    """A counter of (read requests, bytes read) on the disk holding `path` (Linux sysfs), or None."""
    st = os.stat(path)
    stat = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
    if not stat.exists():
        return None

    def now() -> tuple[int, int]:
        fields = stat.read_text().split()
        return int(fields[0]), int(fields[2]) * 512

    return now


def _settle() -> None:
    """Before a timed read: let the disk finish what earlier steps left it (write-back, the discards of freed
    blocks that a journal commit issues), so that the next read, dd's or the tier's, does not pay for it."""
    os.sync()
    time.sleep(0.2)


def _dd(args_: list[str]) -> float:
    """Run dd; its own bytes/second figure from the summary line."""
    r = subprocess.run(["dd", *args_], capture_output=True, text=True, check=True)
    line = [ln for ln in r.stderr.splitlines() if "copied" in ln][-1]
    nbytes = int(line.split()[0])
    secs = float(line.split(",")[-2].split()[0])
    return nbytes / secs


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


WRITE_SLICE_BYTES = 64 << 20  # one write step: every method writes this much, back to back


def _write_file(path: Path, payloads: list[bytes], n: int) -> None:
    """`n` payloads, cycled, into one file, made durable (untimed: the file dd reads or copies)."""
    with open(path, "wb") as f:
        for i in range(n):
            f.write(payloads[i % len(payloads)])
        f.flush()
        os.fdatasync(f.fileno())


def _c_round(d: Path, n: int, block: int, payloads: list[bytes], seq: int) -> dict:
    """One round of (c), raw disk and tier back to back in the same directory: MB/s of each method."""
    total = n * block
    out: dict = {}
    raw = d / "raw.dd"
    kept = d / "kept.dd"  # dd's file rewritten in place (conv=notrunc), as the tier rewrites set-aside files
    src = d / "src.rand"  # what dd copies when it writes random bytes: the tier's payloads, in the page cache
    blocks_dir = d / "tier"  # one directory for every round (see fresh blocks below)
    fs = FsTier(blocks_dir, total * 2)
    late = FsTier(blocks_dir, total * 2, early_writeback=False)  # the kernel picks when its files go to disk
    names = [format(i + 1, "016x") for i in range(n)]
    per = max(1, min(n, WRITE_SLICE_BYTES // block))
    dd_ok = shutil.which("dd") is not None
    if dd_ok:
        _write_file(src, payloads, per)
    # Writes, in steps of one slice per method, back to back: dd writes a slice with conv=fdatasync (from the
    # cached random file: the same kind of bytes the tier writes; from /dev/zero, which a virtual disk may store
    # or move more cheaply; and random bytes over its previous slice in place, conv=notrunc), the tier `put`s as
    # many blocks and flushes them (`FsTier.flush`: fdatasync of its files, concurrently), once with early
    # write-back (the default) and once without. Each method flushes exactly its own data (an os.sync() also
    # flushed whatever else was dirty on the shared machine), and a step is under a second, so per-step ratios
    # compare methods at one moment of a disk whose speed moves 10x from minute to minute. The order rotates
    # from step to step.
    # Each method removes its slice before the next step, as a full tier evicts: dd unlinks its file (but the
    # in-place one), the tier `remove`s its blocks, which sets their files aside for its next `put`s to rewrite
    # (`FsTier.spare_files`): on this discard-mounted, thin-provisioned virtual disk, writing newly allocated
    # blocks ran 2-9x slower and far more erratically than rewriting allocated ones, which is why dd in place
    # is reported too.
    rates: dict[str, list[float]] = {}

    def dd_write(source: str, key: str, nbytes: int, in_place: bool = False) -> None:
        target, conv = (kept, "fdatasync,notrunc") if in_place else (raw, "fdatasync")
        rates.setdefault(key, []).append(
            _dd([f"if={source}", f"of={target}", "bs=1M", f"count={nbytes >> 20}", f"conv={conv}"]) / 1e6
        )
        if not in_place:
            raw.unlink()

    def tier_write(tier: FsTier, key: str, chunk: list[str], lo: int, nbytes: int) -> None:
        t0 = time.perf_counter()
        for i, name in enumerate(chunk, lo):
            tier.put(name, payloads[i % len(payloads)])
        assert tier.flush(chunk) == len(chunk)
        rates.setdefault(key, []).append(nbytes / (time.perf_counter() - t0) / 1e6)
        for name in chunk:  # as dd's file is: the next step writes where this one did, on every side
            tier.remove(name)

    for k, lo in enumerate(range(0, n, per)):
        chunk = names[lo : lo + per]
        nbytes = len(chunk) * block
        steps = [
            lambda: tier_write(fs, "fs_write_MBps", chunk, lo, nbytes),
            lambda: tier_write(late, "fs_write_late_MBps", chunk, lo, nbytes),
        ]
        if dd_ok:
            steps += [
                lambda: dd_write(str(src), "raw_write_MBps", nbytes),
                lambda: dd_write("/dev/zero", "raw_write_zero_MBps", nbytes),
                lambda: dd_write(str(src), "raw_write_inplace_MBps", nbytes, in_place=True),
            ]
        r = (k + seq) % len(steps)
        for step in steps[r:] + steps[:r]:  # rotate who goes first
            step()
    for key, values in rates.items():
        out[key] = statistics.median(values)
    if dd_ok:
        tier_w = rates["fs_write_MBps"]
        for key, dd_key in (
            ("write_ratio", "raw_write_MBps"),
            ("write_ratio_zero", "raw_write_zero_MBps"),
            ("write_ratio_inplace", "raw_write_inplace_MBps"),
        ):
            out[key] = statistics.median(t / r for t, r in zip(tier_w, rates[dd_key]))
        out["write_steps_MBps"] = [  # dd random, dd zeros, dd in place, tier, tier without early write-back
            [round(x) for x in v]
            for v in zip(
                rates["raw_write_MBps"],
                rates["raw_write_zero_MBps"],
                rates["raw_write_inplace_MBps"],
                tier_w,
                rates["fs_write_late_MBps"],
            )
        ]
        src.unlink()
        kept.unlink()

    def write_blocks() -> None:  # the blocks the reads below read (untimed)
        for name in names:
            fs.remove(name)
        for i, name in enumerate(names):
            fs.put(name, payloads[i % len(payloads)])
        fs.flush(names)

    write_blocks()

    disk = _disk_reads(d)
    requests: dict[str, float] = {}  # average read request per method, KiB (other processes' reads included)

    def counted(key: str, timed: Callable[[], float]) -> float:
        """`timed()`, noting the average size of the disk's read requests meanwhile under `key`."""
        before = disk() if disk else (0, 0)
        value = timed()
        if disk:
            ios, nbytes = (b - a for a, b in zip(before, disk()))
            requests[key] = round(nbytes / max(ios, 1) / 1024)
        return value

    def cold(key: str, read) -> float:
        # Written just before, as dd writes the file it reads just before: a virtual disk's host may cache
        # recent writes, and the other methods write 1.5 GiB between the first read and the last.
        write_blocks()
        for name in names:
            _drop_cache(blocks_dir / name)
        _settle()
        ok = [0]

        def run() -> None:
            ok[0] = sum(1 for name in names if read(name) is not None)

        secs = counted(key, lambda: _timed(run))
        assert ok[0] == n, "filesystem tier lost blocks in the benchmark"
        return total / secs / 1e6

    def dd_read(key: str, content: str, flags: tuple[str, ...] = ("bs=1M",)) -> float:
        # raw disk read, dd-style: one big file, cold; 1 MiB reads through the page cache (its read-ahead makes
        # 4 MiB requests), or `flags`; the file holds the tier's payloads (random) or zeros (dd from /dev/zero)
        if content == "random":
            _write_file(raw, payloads, total // block)
        else:
            _dd(["if=/dev/zero", f"of={raw}", "bs=1M", f"count={total >> 20}", "conv=fdatasync"])
        _drop_cache(raw)
        _settle()
        try:
            return counted(key, lambda: _dd([f"if={raw}", "of=/dev/null", *flags])) / 1e6
        finally:
            raw.unlink()

    ahead = {name: names[i + 1 : i + 1 + READ_AHEAD] for i, name in enumerate(names)}

    def run_read(name: str):  # as TieredStore.load reads a prefix run: the next files read ahead
        return fs.read(name, ahead[name])

    reads: list[tuple[str, Callable[[str], float]]] = [
        ("fs_read_MBps", lambda key: cold(key, run_read)),
        ("fs_read_one_MBps", lambda key: cold(key, fs.read)),  # one block at a time, nothing queued
        ("fs_get_MBps", lambda key: cold(key, fs.get)),  # a fresh buffer per block (callers that keep the bytes)
    ]
    if dd_ok:
        reads += [
            ("raw_read_MBps", lambda key: dd_read(key, "random")),
            ("raw_read_zero_MBps", lambda key: dd_read(key, "zero")),
            ("raw_read_direct_MBps", lambda key: dd_read(key, "random", ("bs=4M", "iflag=direct"))),  # 1 in flight
        ]
    for key, fn in reads if seq % 2 == 0 else reversed(reads):  # alternate who reads first
        out[key] = fn(key)
    out["read_request_KiB"] = requests
    for name in names:  # into the page cache (the tier's own cold reads go around it)
        (blocks_dir / name).read_bytes()
    out["fs_read_warm_MBps"] = total / _timed(lambda: [run_read(name) for name in names]) / 1e6  # page cache
    import zlib

    out["crc32_MBps"] = total / _timed(lambda: [zlib.crc32(payloads[i % len(payloads)]) for i in range(n)]) / 1e6
    for name in names:
        fs.remove(name)
    return out


def part_c(args, fs_root: Path) -> dict:
    """The tier against dd, `--c-rounds` rounds of each back to back; medians (the machine is shared)."""
    d = fs_root / "c"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    block = args.c_block_mb << 20
    n = max(1, (args.fs_mb << 20) // block)
    payloads = [os.urandom(block) for _ in range(min(n, 8))]
    rounds = [_c_round(d, n, block, payloads, i) for i in range(args.c_rounds)]
    res: dict = {"dir": str(d), "block_bytes": block, "blocks": n, "total_bytes": n * block, "rounds": rounds}
    for key, value in rounds[0].items():
        if isinstance(value, float):
            res[key] = statistics.median(r[key] for r in rounds)
    if "raw_read_MBps" in res:  # ratios per round, then their median: both sides saw the same moment's disk
        for key, num, den in (
            ("read_ratio", "fs_read_MBps", "raw_read_MBps"),
            ("read_ratio_zero", "fs_read_MBps", "raw_read_zero_MBps"),
            ("get_ratio", "fs_get_MBps", "raw_read_MBps"),
            ("read_one_ratio", "fs_read_one_MBps", "raw_read_MBps"),
        ):
            res[key] = statistics.median(r[num] / r[den] for r in rounds)
        for key in ("write_ratio", "write_ratio_zero", "write_ratio_inplace"):  # of per-round per-step medians
            res[key] = statistics.median(r[key] for r in rounds)
    res["load_average"] = os.getloadavg()
    shutil.rmtree(d, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------------------------------------
# Printing and plots


def print_a(a: dict) -> None:
    print(
        f"\n(a) working set {a['working_set_blocks']} blocks = 3x GPU {a['gpu_blocks']} blocks "
        f"({a['block_bytes'] >> 20} MiB/block)"
    )
    print(
        f"{'config':<12} {'hit':>6} {'gpu':>6} {'cpu':>6} {'disk':>6} {'TTFT mean':>10} {'p50':>8} {'p90':>8} "
        f"{'req/s':>7} {'out tok/s':>10}"
    )
    for name, r in a["configs"].items():
        print(
            f"{name:<12} {r['hit_rate']:>6.1%} {r['hit_rate_gpu']:>6.1%} {r.get('hit_rate_cpu', 0):>6.1%} "
            f"{r.get('hit_rate_disk', 0):>6.1%} {r['ttft_mean_ms']:>8.1f}ms {r['ttft_p50_ms']:>6.1f}ms "
            f"{r['ttft_p90_ms']:>6.1f}ms {r['throughput_rps']:>7.1f} {r['throughput_out_tok_s']:>10.0f}"
        )
    base = a["configs"]["GPU only"]
    for name in ("GPU+CPU", "GPU+CPU+FS"):
        r = a["configs"][name]
        print(
            f"  {name} vs GPU only: TTFT x{base['ttft_mean_ms'] / r['ttft_mean_ms']:.2f} faster, throughput "
            f"x{r['throughput_rps'] / base['throughput_rps']:.2f}"
        )


def print_b(b: dict) -> None:
    print(
        f"\n(b) agentic trace: {b['requests']} requests, {b['unique_blocks']} unique blocks, {b['no_cache_tokens']} "
        "prompt tokens"
    )
    print(f"{'capacity':>9} {'LRU':>10} {'typed':>10} {'Belady':>10} {'typed/LRU':>10} {'gap closed':>11}")
    for s in b["sweep"]:
        gap = s["lru_tokens"] - s["belady_tokens"]
        closed = (s["lru_tokens"] - s["typed_tokens"]) / gap if gap else 1.0
        print(
            f"{s['capacity_blocks']:>9} {s['lru_tokens']:>10} {s['typed_tokens']:>10} {s['belady_tokens']:>10} "
            f"{s['typed_tokens'] / s['lru_tokens']:>10.2f} {closed:>11.0%}"
        )
    e = b["engine"]
    print(f"  engine (GPU {e['gpu_blocks']} blocks + CPU {e['cpu_blocks']} blocks):")
    for name, r in e["runs"].items():
        print(
            f"  {name:<15} recomputed {r['recomputed_tokens']:>8} tokens  hit {r['hit_rate']:.1%}  TTFT mean "
            f"{r['ttft_mean_ms']:.1f} ms  {r['throughput_rps']:.1f} req/s"
        )


def print_c(c: dict) -> None:
    print(
        f"\n(c) filesystem tier vs raw disk in {c['dir']} ({c['blocks']} blocks of {c['block_bytes'] >> 20} MiB), "
        f"medians of {len(c['rounds'])} rounds, load average {c['load_average'][0]:.1f}"
    )
    print(f"  {'method':<18} {'median':>9} {'min':>7} {'max':>7}   MB/s")
    for k in (
        "raw_write_MBps",
        "raw_write_zero_MBps",
        "raw_write_inplace_MBps",
        "fs_write_MBps",
        "fs_write_late_MBps",
        "raw_read_MBps",
        "raw_read_zero_MBps",
        "raw_read_direct_MBps",
        "fs_read_MBps",
        "fs_read_one_MBps",
        "fs_get_MBps",
        "fs_read_warm_MBps",
        "crc32_MBps",
    ):
        if k in c:
            vals = [r[k] for r in c["rounds"]]
            print(f"  {k:<18} {c[k]:>9.0f} {min(vals):>7.0f} {max(vals):>7.0f}")
    if "read_ratio" in c:
        print(
            f"  tier/dd (dd of random bytes; of zeros; random bytes over its old file): write {c['write_ratio']:.2f}; "
            f"{c['write_ratio_zero']:.2f}; {c['write_ratio_inplace']:.2f} (median of per-round medians of per-step "
            "ratios), "
            f"read {c['read_ratio']:.2f}; {c['read_ratio_zero']:.2f} (median of per-round ratios)"
        )
        print(
            f"  reads one block at a time, nothing queued: {c['read_one_ratio']:.2f} of dd; into a fresh buffer per "
            f"block: {c['get_ratio']:.2f}"
        )
        sizes = c["rounds"][0].get("read_request_KiB") or {}
        if sizes:
            print(
                "  average read request, KiB: "
                + ", ".join(
                    f"{k.removesuffix('_MBps')} {statistics.median(r['read_request_KiB'][k] for r in c['rounds']):.0f}"
                    for k in sizes
                )
            )
        for i, r in enumerate(c["rounds"]):
            print(
                f"  round {i}: write steps MB/s [dd random, dd zeros, dd in place, tier, tier without early "
                "write-back] "
                f"{r['write_steps_MBps']}; read dd {r['raw_read_MBps']:.0f}, tier {r['fs_read_MBps']:.0f}"
            )


def plot(results: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    written = []
    if "a" in results:
        a = results["a"]["configs"]
        names = list(a)
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
        gpu = [a[n]["hit_rate_gpu"] for n in names]
        cpu = [a[n].get("hit_rate_cpu", 0) for n in names]
        disk = [a[n].get("hit_rate_disk", 0) for n in names]
        axes[0].bar(names, gpu, label="GPU")
        axes[0].bar(names, cpu, bottom=gpu, label="CPU")
        axes[0].bar(names, disk, bottom=[g + c for g, c in zip(gpu, cpu)], label="FS")
        axes[0].set_title("prefix hit rate by tier")
        axes[0].legend()
        axes[1].bar(names, [a[n]["ttft_mean_ms"] for n in names], color="tab:red")
        axes[1].set_title("mean TTFT (ms)")
        axes[2].bar(names, [a[n]["throughput_rps"] for n in names], color="tab:green")
        axes[2].set_title("throughput (req/s)")
        fig.suptitle("(a) working set = 3x GPU KV capacity (sim engine, H100, Llama-3.1-8B)")
        fig.tight_layout()
        fig.savefig(IMG / "kvtiers_a_working_set.png", dpi=110)
        plt.close(fig)
        written.append("kvtiers_a_working_set.png")
    if "b" in results:
        sw = results["b"]["sweep"]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        caps = [s["capacity_blocks"] for s in sw]
        for key, label in (
            ("lru_tokens", "LRU"),
            ("typed_tokens", "typed policies"),
            ("belady_tokens", "Belady (offline bound)"),
        ):
            ax.plot(caps, [s[key] / 1e3 for s in sw], marker="o", label=label)
        ax.set_xlabel("cache capacity (blocks)")
        ax.set_ylabel("prefill tokens recomputed (thousands)")
        ax.set_title("(b) agentic workload: recompute by eviction policy")
        ax.legend()
        fig.tight_layout()
        fig.savefig(IMG / "kvtiers_b_agentic.png", dpi=110)
        plt.close(fig)
        written.append("kvtiers_b_agentic.png")
    if "c" in results:
        c = results["c"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        labels, vals = [], []
        for k, label in (
            ("raw_write_MBps", "dd write (random)"),
            ("fs_write_MBps", "tier write"),
            ("raw_read_MBps", "dd read (random)"),
            ("fs_read_MBps", "tier read"),
        ):
            if k in c:
                labels.append(label)
                vals.append(c[k])
        ax.bar(labels, vals, color=["tab:gray", "tab:blue", "tab:gray", "tab:blue"][: len(vals)])
        ax.set_ylabel("MB/s")
        ax.set_title("(c) filesystem tier vs raw disk (same directory, cold reads)")
        fig.tight_layout()
        fig.savefig(IMG / "kvtiers_c_fs_throughput.png", dpi=110)
        plt.close(fig)
        written.append("kvtiers_c_fs_throughput.png")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="a,b,c", help="comma-separated subset of a,b,c")
    p.add_argument(
        "--fs-dir", default=None, help="directory for the filesystem tier (default: a temp dir under /var/tmp)"
    )
    p.add_argument("--out", default=str(IMG / "kvtiers_bench.json"))
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    # (a)
    p.add_argument("--gpu-blocks", type=int, default=2048)
    p.add_argument("--doc-blocks", type=int, default=128)
    p.add_argument("--a-requests", type=int, default=400)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=8)
    # (b)
    p.add_argument("--sys-blocks", type=int, default=64)
    p.add_argument("--tool-blocks", type=int, default=32)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--branches", type=int, default=3)
    p.add_argument("--branch-blocks", type=int, default=8)
    p.add_argument("--oneoffs", type=int, default=6, help="one-off requests after each session turn")
    p.add_argument("--oneoff-blocks", type=int, default=48)
    p.add_argument("--pin-budget", type=float, default=0.4)
    p.add_argument(
        "--b-capacities",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[120, 150, 200, 250, 300, 400, 600],
        help="cache sizes in blocks",
    )
    p.add_argument("--b-gpu-blocks", type=int, default=256)
    p.add_argument("--b-cpu-blocks", type=int, default=256)
    p.add_argument("--b-concurrency", type=int, default=2)
    # (c)
    p.add_argument("--fs-mb", type=int, default=512, help="bytes written per method in (c), MiB")
    p.add_argument("--c-block-mb", type=int, default=2, help="block file size in (c), MiB (Llama-3.1-8B: 2)")
    p.add_argument(
        "--c-rounds", type=int, default=5, help="rounds of dd and the tier back to back in (c); medians are reported"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.gpu_blocks, args.a_requests, args.fs_mb, args.sessions, args.turns = 512, 120, 64, 4, 3
    parts = set(args.parts.split(","))
    if not parts <= {"a", "b", "c"}:
        p.error(f"--parts: expected a subset of a,b,c, got {args.parts!r}")
    fs_root = Path(tempfile.mkdtemp(prefix="kvtiers-bench-", dir=args.fs_dir or "/var/tmp"))
    results: dict = {"argv": sys.argv[1:]}
    try:
        if "a" in parts:
            results["a"] = part_a(args, fs_root)
            print_a(results["a"])
        if "b" in parts:
            results["b"] = part_b(args)
            print_b(results["b"])
        if "c" in parts:
            results["c"] = part_c(args, fs_root)
            print_c(results["c"])
    finally:
        shutil.rmtree(fs_root, ignore_errors=True)
    out = Path(args.out)
    if out.exists() and parts != {"a", "b", "c"}:  # a partial run updates its parts, keeps the others
        try:
            results = {**json.loads(out.read_text()), **results}
        except ValueError:
            pass
    written = plot(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {args.out} and {', '.join(written)} in {IMG}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
