"""Named scenarios for the planner: llm-d's published benchmark and the four scheduling policies it compares.

`LLMD_73` is llm-d-kv-cache-manager's "73-capacity" run behind the "KV-cache wins you can see" post: 8 vLLM
pods serving Qwen3-32B on 2 x H100 each (TP 2, 307,328 tokens of KV per pod), inference-perf shared_prefix
150 groups x 5 prompts (system 6000, question 1200, output 1000 tokens, ignore_eos), Poisson 15 QPS warm-up
then 3 -> 60 QPS, sent the way inference-perf sends it (each stage drains before the next opens:
`llmdctl.bench.inference_perf`). The policies are the scheduler configs it lists (random, load,
approximate/estimated, precise), in this router's plugin names; published figures are the report's summary
row, shown only beside runs set up like the published one (`comparability`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from llmdctl.bench.inference_perf import ClientModel
from llmdctl.bench.load import LLMD_73_LADDER, Stage
from llmdctl.bench.workloads import WorkloadSpec
from llmdctl.plan.sim import PlanConfig, PoolPlan


def _epp(plugins: list[dict[str, Any]], refs: list[tuple[str, float | None]]) -> dict[str, Any]:
    return {
        "apiVersion": "llm-d.ai/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": plugins + [{"type": "single-profile-handler"}],
        "schedulingProfiles": [
            {
                "name": "default",
                "plugins": [{"pluginRef": r, **({"weight": w} if w is not None else {})} for r, w in refs],
            }
        ],
    }


def policy_configs(
    block_size: int = 64, approx_block_tokens: int = 16, approx_capacity: int = 31250
) -> dict[str, dict[str, Any]]:
    """The four schedulers of llm-d's benchmark. The approximate scorer hashes 16-token blocks, matches at most
    256 of them and assumes 31,250 blocks per pod (the report's hashBlockSize 64 characters ~ 16 tokens,
    maxPrefixBlocksToMatch 256, lruCapacityPerServer 31250): ~500k tokens per pod, more than a pod holds — the
    over-estimate that makes it route to evicted prefixes."""
    return {
        "random": _epp([{"type": "random-picker"}], [("random-picker", None)]),
        "load": _epp(
            [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}, {"type": "max-score-picker"}],
            [("queue-scorer", 1), ("kv-cache-utilization-scorer", 1), ("max-score-picker", None)],
        ),
        "approximate": _epp(
            [
                {"type": "queue-scorer"},
                {"type": "kv-cache-utilization-scorer"},
                {
                    "type": "prefix-cache-scorer",
                    "parameters": {
                        "blockSizeTokens": approx_block_tokens,
                        "maxPrefixBlocksToMatch": 256,
                        "lruCapacityPerServer": approx_capacity,
                        "autoTune": False,
                    },
                },
                {"type": "max-score-picker"},
            ],
            [
                ("kv-cache-utilization-scorer", 1),
                ("queue-scorer", 1),
                ("prefix-cache-scorer", 1),
                ("max-score-picker", None),
            ],
        ),
        "precise": _epp(
            [
                {
                    "type": "precise-prefix-cache-scorer",
                    "parameters": {"tokenProcessorConfig": {"blockSize": block_size}},
                },
                {"type": "kv-cache-utilization-scorer"},
                {"type": "queue-scorer"},
                {"type": "max-score-picker"},
            ],
            [
                ("precise-prefix-cache-scorer", 3),
                ("kv-cache-utilization-scorer", 2),
                ("queue-scorer", 2),
                ("max-score-picker", None),
            ],
        ),
    }


POLICIES = ("random", "load", "approximate", "precise")
# The shipped profiles whose routers add load terms to prefix affinity (llm-d's optimized baseline, precise
# prefix + in-flight load, predicted latency): compared against the four benchmark policies above.
PROFILE_ROUTERS = ("inference-scheduling", "precise-prefix-cache", "predicted-latency")


def profile_router(name: str, block_size: int) -> dict[str, Any]:
    """A shipped profile's router config for pods with `block_size`-token KV blocks: its precise scorer is told
    the block size (as `llmdctl up` does for the pods it starts), so its index hashes what the engines hash."""
    from llmdctl.profile import load_shipped_profile

    cfg = copy.deepcopy(load_shipped_profile(name).router.config)
    for plugin in cfg.get("plugins") or []:
        if plugin.get("type") == "precise-prefix-cache-scorer":
            params = plugin.get("parameters") or {}
            params.setdefault("tokenProcessorConfig", {})["blockSize"] = block_size
            plugin["parameters"] = params
    return cfg


@dataclass
class Scenario:
    name: str
    description: str
    pools: list[PoolPlan]
    workload: WorkloadSpec
    stages: list[Stage]
    published: dict[str, dict[str, float]]  # policy -> {ttft_p90_s, ttft_mean_s, output_tok_s}
    network: str = "rdma-200g"
    client: ClientModel = ClientModel("open-loop")  # how the benchmark client releases requests
    warmup_stages: int = 0  # leading stages the published summary leaves out

    def plan_config(self, policy: str, router: dict[str, Any] | None = None, seed: int = 0) -> PlanConfig:
        cfg = router if router is not None else policy_configs(self.pools[0].block_size)[policy]
        return PlanConfig(pools=copy.deepcopy(self.pools), router=cfg, name=policy, network=self.network, seed=seed)


LLMD_73 = Scenario(
    name="llmd-73",
    description=(
        "llm-d 73%-capacity: 8 pods Qwen3-32B on 2xH100 (TP2), shared-prefix 150x5, 6000+1200 -> 1000 tokens, Poisson "
        "15 warm-up then 3->60 QPS"
    ),
    pools=[
        PoolPlan(
            name="qwen",
            replicas=8,
            hardware="H100",
            model="Qwen3-32B",
            tp=2,
            block_size=64,
            num_gpu_blocks=307_328 // 64,
            max_num_seqs=256,
            max_num_batched_tokens=8192,
            max_model_len=16384,
        )
    ],
    workload=WorkloadSpec(
        kind="shared-prefix",
        num_groups=150,
        prompts_per_group=5,
        system_prompt_len=6000,
        question_len=1200,
        output_len=1000,
    ),
    stages=[Stage(float(r), float(d)) for r, d in LLMD_73_LADDER],
    published={
        "precise": {"ttft_p90_s": 0.542, "ttft_mean_s": 0.298, "output_tok_s": 8730.0},
        "approximate": {"ttft_p90_s": 31.083, "ttft_mean_s": 13.316, "output_tok_s": 6944.4},
        "load": {"ttft_p90_s": 94.865, "ttft_mean_s": 46.987, "output_tok_s": 4266.4},
        "random": {"ttft_p90_s": 92.551, "ttft_mean_s": 45.281, "output_tok_s": 4428.7},
    },
    # inference-perf's stages, as llm-d's harness ran them: no cap on open requests (its worker pool did not
    # bind: docs/benchmarks.md, "What llm-d's harness did").
    client=ClientModel("inference-perf"),
    # The report's summary row covers the 16 main stages: its output tok/s is the plain mean of their per-stage
    # output tok/s (it reproduces all four published rows to 0.01 tok/s); see `as_published`.
    warmup_stages=1,
)

SMALL = Scenario(
    name="small",
    description=(
        "4 pods Llama-3.1-8B on 1xH100 with a small KV cache, shared-prefix 24x4, 1024+128 -> 64 tokens, Poisson "
        "4->16 QPS"
    ),
    pools=[
        PoolPlan(
            name="pod",
            replicas=4,
            hardware="H100",
            model="Llama-3.1-8B",
            tp=1,
            block_size=16,
            num_gpu_blocks=1200,
            max_num_seqs=64,
        )
    ],
    workload=WorkloadSpec(
        kind="shared-prefix",
        num_groups=24,
        prompts_per_group=4,
        system_prompt_len=1024,
        question_len=128,
        output_len=64,
    ),
    stages=[Stage(4.0, 10.0), Stage(8.0, 10.0), Stage(16.0, 10.0)],
    published={},
)

SCENARIOS = {s.name: s for s in (LLMD_73, SMALL)}


def as_published(summary: dict[str, Any], records: list[Any], warmup_stages: int) -> dict[str, float | None]:
    """Our figures in the form of llm-d's summary row: TTFT p90 and mean over the main stages' requests, output
    tok/s as the mean of the main stages' per-stage output tok/s (first send to last finish of each stage)."""
    from llmdctl.bench.metrics import OK, mean, percentile

    ttfts = [r.ttft for r in records if r.stage >= warmup_stages and r.status == OK and r.ttft is not None]
    stages = [s for s in summary.get("stages") or [] if s["stage"] >= warmup_stages and s.get("ok")]
    return {
        "ttft_p90_s": percentile(ttfts, 90),
        "ttft_mean_s": mean(ttfts),
        "output_tok_s": sum(s["output_tok_s"] for s in stages) / len(stages) if stages else None,
    }


def comparability(
    scenario: Scenario,
    *,
    time_scale: float = 1.0,
    rate_scale: float = 1.0,
    client: ClientModel | None = None,
    custom_routers: bool = False,
) -> str | None:
    """None when a run is set up like the scenario's published one (so its figures may stand beside ours);
    otherwise what differs, in one line."""
    if not scenario.published:
        return f"{scenario.name} has no published figures"
    why = []
    if time_scale != 1.0:
        why.append(f"ladder x{time_scale:g} (published: x1)")
    if rate_scale != 1.0:
        why.append(f"rates x{rate_scale:g} (published: x1)")
    if client is not None and client != scenario.client:
        why.append(f"client {client.describe()} (published: {scenario.client.describe()})")
    if custom_routers:
        why.append("router configs other than the published ones")
    return "; ".join(why) or None
