"""Pure cores behind P/D and wide EP: KV transfer pricing across unequal TP, the params that carry it, and the
lockstep wide-EP planner (DP-aware vs rank-blind routing) on a virtual clock."""

from __future__ import annotations

import pytest
import yaml

from llmdctl.bench.load import Stage, poisson_arrivals
from llmdctl.bench.metrics import summarize
from llmdctl.bench.workloads import WorkloadSpec, generate
from llmdctl.plan.dp import WideEPConfig, simulate_wide_ep
from sim_gpu import pd
from sim_gpu.engine import EngineConfig, EngineRequest, RemotePrefill, SimEngine
from sim_gpu.latency import LatencyModel
from tests.pd.stack import ROOT


def test_tp1_prefill_into_tp4_decode_pushes_four_times_the_bytes_per_nic():
    dec = LatencyModel.from_names("H200", "Qwen3-32B", tp=4, network="rdma-200g")
    lat_s = dec._net.latency_us * 1e-6
    same = dec.kv_transfer_time(10_000)
    from_tp1 = dec.kv_transfer_time(10_000, remote_tp=1)
    assert (from_tp1 - lat_s) == pytest.approx(4 * (same - lat_s), rel=1e-9)
    assert dec.kv_transfer_time(10_000, remote_tp=4) == same == dec.kv_transfer_time(10_000, remote_tp=8)
    # 10k tokens x 256 KiB of KV per token through one 200 Gb/s NIC (90% efficient): about a tenth of a second.
    full = 10_000 * LatencyModel.from_names("H200", "Qwen3-32B").kv_bytes_per_token()
    assert from_tp1 == pytest.approx(full / (200e9 / 8 * 0.9) + lat_s, rel=0.01)
    # MLA latents are replicated, not sharded: TP makes no difference.
    mla = LatencyModel.from_names("H200", "DeepSeek-R1", tp=4)
    assert mla.kv_transfer_time(1000, remote_tp=1) == mla.kv_transfer_time(1000)


def test_prefill_tp_size_reaches_the_decode_engine():
    params = pd.prefill_response_params([1, 2, 3], engine_id="e", host="h", port=1, tp_size=1)
    plan = pd.plan(params, prompt_len=4096, role="decode")
    assert plan.remote_prefill is not None and plan.remote_prefill.remote_tp == 1
    assert pd.plan({**params, "tp_size": "x"}, 4096, "decode").remote_prefill.remote_tp is None
    lat = LatencyModel.from_names("H200", "Qwen3-32B", tp=4, network="tcp-25g")
    waits = []
    for remote_tp in (None, 1):
        eng = SimEngine(EngineConfig(num_gpu_blocks=2000, latency=lat))
        eng.add_request(
            EngineRequest("d", list(range(4096)), 2, remote_prefill=RemotePrefill(num_tokens=4095, remote_tp=remote_tp))
        )
        waits.append(eng.step(0.0).duration_s)  # idle until the KV lands
    assert waits[1] == pytest.approx(lat.kv_transfer_time(4095, remote_tp=1))
    assert waits[1] > 3.5 * waits[0]


def _wide_ep_router() -> dict:
    return yaml.safe_load((ROOT / "profiles" / "wide-ep.yaml").read_text())["router"]["config"]


def test_dp_aware_routing_keeps_prefixes_per_rank_and_beats_rank_blind():
    arrivals = poisson_arrivals([Stage(60.0, 4.0)], seed=1)
    reqs = generate(
        WorkloadSpec(
            kind="shared-prefix",
            num_groups=16,
            prompts_per_group=8,
            system_prompt_len=1024,
            question_len=64,
            output_len=32,
            num_requests=len(arrivals),
            seed=1,
        )
    )
    out = {}
    for aware in (True, False):
        cfg = WideEPConfig(router=_wide_ep_router(), rank_aware=aware, pods=2, dp=4, num_gpu_blocks=2048)
        res = simulate_wide_ep(cfg, reqs, arrivals, max_wall_s=60)
        assert res.truncated is None
        s = summarize(res.records)
        assert s.ok == s.requests == len(arrivals)
        out[aware] = (res, s, len({rec.endpoint for rec in res.records}))
    (aware, s_aware, used_aware), (blind, s_blind, used_blind) = out[True], out[False]
    assert used_aware == used_blind == 8  # both spread over every rank
    assert aware.hit_rate > blind.hit_rate + 0.1  # per-rank prefix locality
    assert s_aware.ttft_s["mean"] < s_blind.ttft_s["mean"]
    assert s_aware.tpot_s["mean"] < s_blind.tpot_s["mean"]  # lockstep: fewer long prefills stall every rank


def test_lockstep_makes_the_slowest_rank_set_the_pace():
    reqs = generate(WorkloadSpec(kind="random", num_requests=2, input_len=4000, output_len=64, seed=2))
    reqs[1].prompt = reqs[1].prompt[:16]  # one long prefill, one tiny request on another rank
    arrivals = [(0.0, 0), (0.1, 0)]  # the second after a scrape: the router sees the first rank busy
    pace = {}
    for lockstep in (True, False):
        cfg = WideEPConfig(router=_wide_ep_router(), pods=1, dp=2, num_gpu_blocks=2048, lockstep=lockstep)
        res = simulate_wide_ep(cfg, reqs, arrivals, max_wall_s=30)
        assert {r.endpoint for r in res.records} == {"ep-0-r0", "ep-0-r1"}
        pace[lockstep] = next(r for r in res.records if r.prompt_tokens == 16).ttft
    assert pace[True] > 5 * pace[False]  # the tiny request waits for the other rank's 4000-token prefill step


def test_wide_ep_router_digests_are_the_ones_its_ranks_would_compute():
    """simulate_wide_ep hands the router's prompt digests to the rank (no second hashing): they must be exactly
    the engine's own, and refused where the engine hashes differently."""
    from llmdctl.plan.router import PlannedRouter
    from llmdctl.plan.sim import prompt_digests
    from router_lite.types import Endpoint, EndpointMetrics, LLMRequest

    router = PlannedRouter.build(_wide_ep_router(), "wide-ep: router", 0, 16)
    ep = Endpoint("10.0.0.1", 8000, name="ep-0-r0", dp_rank=0)
    ep.metrics = EndpointMetrics(block_size=16, num_gpu_blocks=2048)
    prompt = generate(WorkloadSpec(kind="random", num_requests=1, input_len=100, output_len=4, seed=3))[0].prompt
    llm = LLMRequest("r0", "sim-model", prompt_token_ids=prompt, arrival=0.0)
    assert not isinstance(router.route(llm, [ep]), str)
    same = SimEngine(EngineConfig(block_size=16, num_gpu_blocks=64))
    digests = prompt_digests(same, llm)
    assert digests is not None and len(digests) == 100 // 16
    assert digests == same.hasher.hash_blocks(prompt)
    assert prompt_digests(SimEngine(EngineConfig(block_size=32, num_gpu_blocks=64)), llm) is None
    assert prompt_digests(SimEngine(EngineConfig(block_size=16, num_gpu_blocks=64, lora_name="a")), llm) is None
