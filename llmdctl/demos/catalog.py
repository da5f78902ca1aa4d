"""Scripted demos of llm-d's well-lit paths: each says what it runs and for how long, runs it, returns a
side-by-side table, writes plots, and cleans up what it started.

Live demos bring a local stack up (`llmdctl.local.stack.up`) in their own run directory and always take it
down again; heavy ones run on the offline planner (`llmdctl.plan`) and say so.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdctl.bench import report
from llmdctl.bench.load import LoadSpec, Stage
from llmdctl.bench.metrics import SLO, ratios
from llmdctl.bench.workloads import WorkloadSpec
from llmdctl.plan.presets import LLMD_73, POLICIES, PROFILE_ROUTERS, policy_configs, profile_router
from llmdctl.plan.run import pd_router, run_one, run_policies, workload_and_arrivals
from llmdctl.plan.sim import PlanConfig, PoolPlan

Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]


@dataclass
class DemoResult:
    name: str
    mode: str  # live | plan
    title: str
    summaries: dict[str, dict[str, Any]]
    ratios: dict[str, dict[str, float | None]]
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    published: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Demo:
    name: str
    title: str
    what: str  # what it runs, said before it starts
    minutes: float  # about how long
    mode: str  # live | plan
    run: Callable[..., DemoResult]


def _plan_compare(
    name: str,
    title: str,
    configs: dict[str, PlanConfig],
    workload: WorkloadSpec,
    stages: list[Stage],
    out: Path,
    progress: Progress | None,
    slo: SLO | None = None,
) -> DemoResult:
    reqs, arrivals = workload_and_arrivals(workload, stages)
    runs = {}
    for label, cfg in configs.items():
        cb = (lambda n, now, d, t: progress(n, d, t)) if progress else None
        runs[label] = run_one(cfg, reqs, arrivals, stages, slo or SLO(), progress=cb)
    summaries = {k: v.summary for k, v in runs.items()}
    files = [str(report.plot_bars(summaries, out / f"{name}.png", title=title, source="llmdctl plan, virtual clock"))]
    p = report.plot_stages(summaries, out / f"{name}_stages.png", title=title)
    if p:
        files.append(str(p))
    notes = [
        f"{k}: {v.result.sim_s:.0f} simulated s in {v.result.wall_s:.1f} wall s ({v.result.speedup:.0f}x)"
        for k, v in runs.items()
    ]
    return DemoResult(name, "plan", title, summaries, ratios(summaries), files, notes)


# ---- kv-cache-wins -------------------------------------------------------------------------------------------

KV_WINS_ROUTERS = (*POLICIES, *PROFILE_ROUTERS)


def kv_cache_wins(
    out: Path, say: Say, progress: Progress | None = None, plan: bool = False, time_scale: float = 0.1
) -> DemoResult:
    """Round-robin-like random vs load vs approximate vs precise (llm-d's benchmark configs), and the shipped
    profiles that add load terms (inference-scheduling, precise-prefix-cache, predicted-latency). Live: a
    4-pod stack whose KV caches hold ~1.4x the shared prefixes (so locality matters), the same shared-prefix
    workload against each router config. --plan: llm-d's 73%-capacity benchmark on the planner (`time_scale`
    of its ladder; below 1 an approximation, shown without llm-d's published figures)."""
    if plan:
        routers = {p: profile_router(p, LLMD_73.pools[0].block_size) for p in PROFILE_ROUTERS}
        doc = run_policies(
            LLMD_73,
            list(KV_WINS_ROUTERS),
            time_scale=time_scale,
            routers=routers,
            progress=(lambda n, now, d, t: progress(n, d, t)) if progress else None,
        )
        summaries = doc["summaries"]
        published = doc["published"] or None  # empty unless the run is comparable with llm-d's (full ladder)
        label = f"ladder x{time_scale:g}" + ("" if published else ", an approximation: not comparable with llm-d's")
        files = [
            str(
                report.plot_bars(
                    report.in_published_form(doc),
                    out / "kv-cache-wins.png",
                    title=f"llm-d 73% capacity, {label}",
                    published=published,
                    source="llmdctl plan, virtual clock",
                )
            ),
            str(report.plot_stages(summaries, out / "kv-cache-wins_stages.png", title="llm-d 73% capacity")),
        ]
        notes = [
            f"{k}: {r['sim_s']:.0f} simulated s in {r['wall_s']:.1f} wall s ({r['sim_to_wall']:.0f}x)"
            for k, r in doc["runs"].items()
        ]
        if not published:
            notes.append(f"llm-d's published figures left out: not comparable ({doc['not_comparable']})")
        return DemoResult(
            "kv-cache-wins",
            "plan",
            f"{LLMD_73.description}, {label}",
            summaries,
            ratios(summaries),
            files,
            notes,
            published,
        )
    from llmdctl.bench.runner import BenchConfig, run_compare

    # 12 groups x 4000-token prefixes = 48k tokens = 75% of the 4 pods' 64k tokens of KV (llm-d's 73%):
    # no pod holds them all, so only routing that knows where each prefix lives keeps hitting.
    wl = WorkloadSpec(
        kind="shared-prefix",
        num_groups=12,
        prompts_per_group=4,
        system_prompt_len=4000,
        question_len=128,
        output_len=16,
    )
    load = LoadSpec(kind="poisson", stages=[Stage(2.0, 10.0), Stage(4.0, 10.0), Stage(8.0, 10.0)], max_requests=400)
    sets = [
        "pools.0.model_profile=Qwen3-32B",
        "pools.0.tensor_parallel_size=2",
        "pools.0.num_gpu_blocks=1000",
        "pools.0.max_num_seqs=32",
    ]
    with _live_stack("precise-prefix-cache", 4, sets, say) as live:
        cfg = BenchConfig(
            url=live.url,
            workload=wl,
            load=load,
            timeout_s=90,
            max_duration_s=150,
            slo=SLO(1.0, 0.1),
            admin_key=live.admin_key,  # the stack's run directory is the demo's own, not $LLMDCTL_HOME
        )
        doc = run_compare(cfg, list(KV_WINS_ROUTERS), progress)
    summaries = {n: r["summary"] for n, r in doc["runs"].items()}
    title = f"live: 4 sim pods (Qwen3-32B TP2 timing, 16k tokens of KV each), {wl.describe()}, Poisson 2->8 QPS"
    files = [
        str(report.plot_bars(summaries, out / "kv-cache-wins.png", title=title, source="live stack, simulated pods"))
    ]
    p = report.plot_stages(summaries, out / "kv-cache-wins_stages.png", title=title)
    if p:
        files.append(str(p))
    return DemoResult("kv-cache-wins", "live", title, summaries, doc["ratios"], files)


class _live_stack:
    """Bring a profile up in a private run directory on free ports; always take it down."""

    def __init__(self, profile: str, replicas: int, sets: list[str], say: Say) -> None:
        self.profile, self.replicas, self.sets, self.say = profile, replicas, sets, say
        self.home = Path(tempfile.mkdtemp(prefix="llmdctl-demo-"))
        self.url = ""  # the router, once up
        self.admin_key: str | None = None  # its admin key (the key file of this private run directory)

    def __enter__(self) -> "_live_stack":
        from llmdctl.local import stack
        from llmdctl.local.ports import find_free_block
        from llmdctl.local.state import read_admin_key

        router, pods, events = (
            find_free_block(18000, 1),
            find_free_block(18100, self.replicas * 2),
            find_free_block(18500, self.replicas * 2),
        )
        self.say(f"starting {self.profile} ({self.replicas} pods) in {self.home} ...")
        res = stack.up(
            self.profile,
            replicas=self.replicas,
            sets=self.sets,
            router_port=router,
            pod_port=pods,
            events_port=events,
            home=self.home,
        )
        self.say(f"up in {res.seconds:.1f}s: router {res.state.router_url}")
        self.url = res.state.router_url
        self.admin_key = read_admin_key(self.home)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        from llmdctl.local import stack

        try:
            res = stack.down(home=self.home)
            left = getattr(res, "remaining_pids", None)
            self.say(
                f"stopped the demo stack ({len(res.stopped)} processes)"
                + (f"; still running: pids {left}" if left else "")
            )
        except Exception as exc:  # never lose the demo's results over a report line
            self.say(
                f"stopping the demo stack: {type(exc).__name__}: {exc}; run `LLMDCTL_HOME={self.home} llmdctl down`"
            )


# ---- pd ------------------------------------------------------------------------------------------------------


def pd(out: Path, say: Say, progress: Progress | None = None) -> DemoResult:
    """Aggregated (4 pods doing both) vs disaggregated (2 prefill + 2 decode, KV over RDMA) on long prompts
    with long outputs: P/D trades a KV transfer on TTFT for decode steps free of prefill interference."""
    pool = PoolPlan(
        name="pod", replicas=4, hardware="H100", model="Llama-3.1-70B", tp=4, block_size=16, max_num_seqs=128
    )
    wl = WorkloadSpec(kind="random", input_len=6000, output_len=400, input_jitter=0.2)
    stages = [Stage(1.5, 30.0), Stage(3.0, 30.0), Stage(4.5, 30.0)]
    configs = {
        "aggregated 4x": PlanConfig([pool], policy_configs(16)["load"], "aggregated 4x"),
        "P/D 2P+2D": PlanConfig(
            [
                dataclasses.replace(pool, name="prefill", role="prefill", replicas=2),
                dataclasses.replace(pool, name="decode", role="decode", replicas=2),
            ],
            pd_router(16, 256),
            "P/D 2P+2D",
        ),
        "P/D 1P+3D": PlanConfig(
            [
                dataclasses.replace(pool, name="prefill", role="prefill", replicas=1),
                dataclasses.replace(pool, name="decode", role="decode", replicas=3),
            ],
            pd_router(16, 256),
            "P/D 1P+3D",
        ),
    }
    return _plan_compare(
        "pd",
        "P/D vs aggregated: Llama-3.1-70B TP4 on H100, 6000 -> 400 tokens, 1.5->4.5 QPS",
        configs,
        wl,
        stages,
        out,
        progress,
        SLO(2.0, 0.05),
    )


# ---- wide-ep -------------------------------------------------------------------------------------------------


def wide_ep(out: Path, say: Say, progress: Progress | None = None) -> DemoResult:
    """DeepSeek-R1 with wide expert parallelism: 16 data-parallel ranks (2 nodes x 8 H200) in one EP group;
    the router sees every rank as an endpoint. Rank-blind random vs per-rank load vs per-rank precise prefix."""
    pool = PoolPlan(
        name="rank", replicas=16, hardware="H200", model="DeepSeek-R1", tp=1, ep=16, block_size=16, max_num_seqs=64
    )
    wl = WorkloadSpec(
        kind="shared-prefix",
        num_groups=64,
        prompts_per_group=6,
        system_prompt_len=3000,
        question_len=300,
        output_len=200,
    )
    stages = [Stage(8.0, 20.0), Stage(16.0, 20.0), Stage(24.0, 20.0)]
    pol = policy_configs(16)
    configs = {k: PlanConfig([pool], pol[k], k, network="rdma-400g") for k in ("random", "load", "precise")}
    return _plan_compare(
        "wide-ep",
        "wide EP: DeepSeek-R1, 16 DP ranks x 1 H200 (EP16, 2 nodes), per-rank routing",
        configs,
        wl,
        stages,
        out,
        progress,
    )


# ---- kv-offload ----------------------------------------------------------------------------------------------


def kv_offload(out: Path, say: Say, progress: Progress | None = None) -> DemoResult:
    """Multi-turn sessions whose histories outgrow GPU KV: without a CPU tier evicted history is recomputed;
    with one it is loaded back over PCIe. Same 4 pods, same precise router."""
    pool = PoolPlan(
        name="pod",
        replicas=4,
        hardware="H100",
        model="Llama-3.1-8B",
        tp=1,
        block_size=16,
        num_gpu_blocks=2500,
        max_num_seqs=64,
    )
    wl = WorkloadSpec(
        kind="multi-turn", num_sessions=48, turns=6, system_prompt_len=2000, question_len=300, output_len=150
    )
    stages = [Stage(6.0, 60.0)]
    pol = policy_configs(16)["precise"]
    configs = {
        "GPU only": PlanConfig([pool], pol, "GPU only"),
        "GPU + CPU tier": PlanConfig([dataclasses.replace(pool, cpu_blocks=40_000)], pol, "GPU + CPU tier"),
    }
    return _plan_compare(
        "kv-offload",
        "KV offload: 48 chat sessions x 6 turns on 4 x H100 (2500 GPU blocks each)",
        configs,
        wl,
        stages,
        out,
        progress,
    )


# ---- semantic-kv ---------------------------------------------------------------------------------------------

# The typed policies act where blocks leave the GPU (never offloading finished scratchpads, pinning system
# prompts in CPU memory), so the workload must make that choice matter: agents of six applications (six
# system prompts + tools, more than a pod's GPU holds at once) and other tenants' one-off requests between
# their steps. With one shared system prompt and no other traffic, the prompt never leaves the GPU and LRU
# lands within 3 points of the compulsory-miss bound at every size: typed had nothing to win
# (bench/bench_semantic_kv_live.py, docs/benchmarks.md).
SEMANTIC_KV_WORKLOAD = WorkloadSpec(
    kind="agentic",
    num_sessions=12,
    turns=4,
    branches=4,
    system_prompt_len=1500,
    tool_defs_len=800,
    question_len=300,
    reasoning_len=480,
    output_len=32,
    apps=6,
    oneoffs=1,
    oneoff_len=2000,
)


def semantic_kv(
    out: Path,
    say: Say,
    progress: Progress | None = None,
    gpu_blocks: int = 400,
    cpu_blocks: int = 600,
    fs_mb: int = 2,
    workload: WorkloadSpec = SEMANTIC_KV_WORKLOAD,
    max_requests: int = 300,
    typed_first: bool = False,
) -> DemoResult:
    """Agentic workload (shared system prompt + tools, ReAct steps, tree-of-thought branches) live on two
    stacks with the same tiers: blind LRU (kv-offload) vs typed policies (semantic-kv: pin system prompts,
    replicate tools, evict reasoning branches eagerly).

    The traffic is chat (`mode="chat"`): system message, `tools`, user turns, the assistant's earlier output
    and `<think>` scratchpads, so each pod types its blocks from the request's structure, as it would an
    agent framework's (token-id prompts carry no structure: every block would be `other`, typed = LRU).
    GPU blocks must hold the longest prompt (~4 300 tokens at the default workload: 400 blocks); the small
    shared filesystem (2 MB, ~120 blocks) keeps the lower tiers under pressure, where typed policies act."""
    from llmdctl.bench.runner import BenchConfig, run_bench

    load = LoadSpec(kind="concurrency", concurrency=6, max_requests=max_requests)
    summaries: dict[str, dict[str, Any]] = {}
    # Same GPU, CPU and filesystem capacity on both stacks, so what differs is the eviction policy.
    sets = [
        f"pools.0.num_gpu_blocks={gpu_blocks}",
        f"kv_tiers.cpu_blocks={cpu_blocks}",
        f"kv_tiers.filesystem.capacity_mb={fs_mb}",
        "pools.0.model_profile=Qwen3-32B",
        "pools.0.tensor_parallel_size=2",
    ]
    stacks = [("blind LRU (kv-offload)", "kv-offload"), ("typed (semantic-kv)", "semantic-kv")]
    for label, profile in reversed(stacks) if typed_first else stacks:  # a sweep alternates the order
        with _live_stack(profile, 2, sets, say) as live:
            cb = (lambda d, t, n=label: progress(n, d, t)) if progress else None
            cfg = BenchConfig(url=live.url, workload=workload, load=load, mode="chat", timeout_s=60, max_duration_s=180)
            summaries[label] = run_bench(cfg, cb)["summary"]
    title = (
        f"live: {workload.describe()}, chat, 2 pods x {gpu_blocks} GPU + {cpu_blocks} CPU blocks + {fs_mb} MB shared FS"
    )
    summaries = {label: summaries[label] for label, _ in stacks}
    files = [
        str(report.plot_bars(summaries, out / "semantic-kv.png", title=title, source="live stack, simulated pods"))
    ]
    return DemoResult("semantic-kv", "live", title, summaries, ratios(summaries), files)


DEMOS: dict[str, Demo] = {
    d.name: d
    for d in (
        Demo(
            "kv-cache-wins",
            "KV-cache wins you can see",
            "a live 4-pod stack (precise-prefix-cache profile, sim pods with Qwen3-32B TP2 timing and small KV "
            "caches); "
            "the same shared-prefix workload (12 groups x 4 prompts, 4000-token system prompts = 75% of the pods' KV, "
            "Poisson 2 -> 8 QPS) against "
            "round-robin-like random, load, approximate and precise routing and the inference-scheduling, "
            "precise-prefix-cache and "
            "predicted-latency profiles' routers, switched live; --plan runs llm-d's 73%-capacity benchmark on the "
            "planner instead",
            4.5,
            "live",
            kv_cache_wins,
        ),
        Demo(
            "pd",
            "Prefill/decode disaggregation",
            "the planner (offline): Llama-3.1-70B TP4 on H100, 6000-token prompts -> 400 tokens at 1.5 -> 4.5 QPS; "
            "aggregated 4 pods vs "
            "P/D 2P+2D and 1P+3D (KV transfer over RDMA 200G)",
            2.0,
            "plan",
            pd,
        ),
        Demo(
            "wide-ep",
            "Wide expert parallelism",
            "the planner (offline): DeepSeek-R1 on 16 H200 data-parallel ranks in one EP16 group; rank-blind random vs "
            "per-rank load "
            "vs per-rank precise prefix routing on a shared-prefix workload",
            2.0,
            "plan",
            wide_ep,
        ),
        Demo(
            "kv-offload",
            "Tiered KV offloading",
            "the planner (offline): 48 multi-turn chat sessions on 4 H100 pods with small GPU KV caches; GPU-only vs "
            "GPU + CPU tier",
            1.5,
            "plan",
            kv_offload,
        ),
        Demo(
            "semantic-kv",
            "Typed (semantic) KV for agents",
            "two live 2-pod stacks in turn (kv-offload's blind LRU tiers, semantic-kv's typed policies; 400 GPU + 600 "
            "CPU blocks "
            "per pod, 2 MB shared filesystem); an agentic workload (12 agents of 6 apps x 4 ReAct steps x 4 "
            "tree-of-thought branches, each app its own system prompt + tools, a one-off request of another tenant "
            "after each step) sent as chat, so the pods type their blocks from the messages",
            2.5,
            "live",
            semantic_kv,
        ),
    )
}


def run_demo(name: str, out: Path, say: Say, progress: Progress | None = None, **kw: Any) -> DemoResult:
    if name not in DEMOS:
        raise ValueError(f"demo: expected one of {', '.join(DEMOS)}, got {name!r}")
    out.mkdir(parents=True, exist_ok=True)
    res = DEMOS[name].run(out, say, progress, **kw)
    report.write_json(out / f"{name}.json", res.to_dict())
    res.files.insert(0, str(out / f"{name}.json"))
    return res


__all__ = ["DEMOS", "Demo", "DemoResult", "run_demo"]
