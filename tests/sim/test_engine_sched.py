"""Engine behaviour: continuous batching, chunked prefill, prefix hits on TTFT, P/D roles, validation,
statistics, determinism, and driving by clocks."""

from __future__ import annotations

import asyncio

import pytest

from kvtiers import BlockHasher, BlockStored, to_event_hash
from sim_gpu.clock import RealClock, ScaledClock, VirtualClock
from sim_gpu.engine import EngineConfig, EngineRequest, RemotePrefill, SimEngine
from sim_gpu.latency import LatencyModel

H100_8B = LatencyModel.from_names("H100", "Llama-3.1-8B")


def engine(**kw) -> SimEngine:
    kw.setdefault("latency", H100_8B)
    kw.setdefault("num_gpu_blocks", 2000)
    return SimEngine(EngineConfig(**kw))


def run(eng: SimEngine, clock: VirtualClock | None = None, limit: int = 20000) -> dict[str, dict]:
    """Drive to completion on a virtual clock; per request: tokens, ttft, finish, cached."""
    clock = clock or VirtualClock()
    seen: dict[str, dict] = {}
    for _ in range(limit):
        if not eng.has_unfinished():
            break
        res = eng.step(clock.now())
        clock.advance(res.duration_s)
        for out in res.outputs:
            rec = seen.setdefault(out.request_id, {"tokens": [], "cached": out.num_cached_tokens})
            rec["tokens"] += out.new_token_ids
            if out.first_token:
                rec["ttft"] = clock.now()
            if out.finished:
                rec["finish"] = out.finish_reason
                rec["end"] = clock.now()
    assert not eng.has_unfinished()
    return seen


def test_bad_requests_are_rejected_with_clear_errors():
    eng = engine(max_model_len=100)
    with pytest.raises(ValueError, match="prompt is empty"):
        eng.add_request(EngineRequest("a", [], 5))
    with pytest.raises(ValueError, match="maximum context length is 100 tokens"):
        eng.add_request(EngineRequest("a", [1] * 90, 20))
    with pytest.raises(ValueError, match="max_tokens"):
        eng.add_request(EngineRequest("a", [1, 2], 0))
    eng.add_request(EngineRequest("a", [1, 2], 3))
    with pytest.raises(ValueError, match="already running"):
        eng.add_request(EngineRequest("a", [1, 2], 3))
    small = engine(num_gpu_blocks=5, block_size=16)
    with pytest.raises(ValueError, match="holds only 64"):
        small.add_request(EngineRequest("big", [1] * 60, 10))
    with pytest.raises(ValueError, match="role"):
        SimEngine(EngineConfig(role="router", latency=H100_8B, num_gpu_blocks=10))


def test_outputs_lengths_finish_reasons_and_counters():
    eng = engine(output_mode="echo", eos_token_id=3)
    eng.add_request(EngineRequest("len", [5, 6, 7], 7, ignore_eos=True))
    eng.add_request(EngineRequest("eos", [5, 3, 9], 7))
    seen = run(eng)
    assert seen["len"]["tokens"] == [5, 6, 7, 5, 6, 7, 5] and seen["len"]["finish"] == "length"
    assert seen["eos"]["tokens"] == [5, 3] and seen["eos"]["finish"] == "stop"
    st = eng.stats()
    assert st.generation_tokens_total == 9 and st.prompt_tokens_total == 6
    assert st.num_running == st.num_waiting == 0 and st.num_requests_finished == 2


def test_same_prompt_same_output_and_seed_changes_it():
    a, b, c = engine(seed=1), engine(seed=1), engine(seed=2)
    for eng in (a, b, c):
        eng.add_request(EngineRequest("x", list(range(40)), 12))
    ta, tb, tc = (run(e)["x"]["tokens"] for e in (a, b, c))
    assert ta == tb and ta != tc
    assert all(0 <= t < 32000 for t in ta)


def test_max_num_seqs_and_token_budget_bound_each_step():
    eng = engine(max_num_seqs=4, max_num_batched_tokens=256)
    for i in range(10):
        eng.add_request(EngineRequest(f"r{i}", [i] * 300, 5))
    peak_running = 0
    for _ in range(1000):
        if not eng.has_unfinished():
            break
        res = eng.step(0.0)
        assert res.num_scheduled_tokens <= 256
        peak_running = max(peak_running, eng.stats().num_running)
    assert not eng.has_unfinished()
    assert peak_running == 4


def test_chunked_prefill_spreads_a_long_prompt_and_decodes_go_first():
    eng = engine(max_num_batched_tokens=512)
    eng.add_request(EngineRequest("short", list(range(10)), 50))
    res = eng.step(0.0)
    assert res.outputs[0].first_token
    eng.add_request(EngineRequest("long", list(range(1000, 3000)), 2))
    steps_until_first = 0
    for _ in range(10):
        res = eng.step(0.0)
        steps_until_first += 1
        # the running decode is in every step, the long prompt takes the rest of the budget
        assert res.num_decode_seqs == 1 and res.num_scheduled_tokens <= 512
        if any(o.request_id == "long" for o in res.outputs):
            break
    assert steps_until_first == 4  # 2000 tokens in chunks of 511


def test_prefix_hit_cuts_ttft_and_counts_as_vllm_metrics():
    eng = engine(block_size=16)
    system = list(range(5000, 5000 + 4000))
    eng.add_request(EngineRequest("cold", system + [1, 2, 3], 4))
    cold = run(eng)["cold"]
    clock = VirtualClock(start=100.0)
    eng.add_request(EngineRequest("warm", system + [7, 8, 9], 4))
    warm = run(eng, clock)["warm"]
    assert warm["cached"] == 4000
    assert warm["ttft"] - 100.0 < cold["ttft"] / 5
    st = eng.stats()
    assert st.prefix_cache_queries_tokens == 2 * 4003 and st.prefix_cache_hits_tokens == 4000


def test_kv_cache_usage_and_abort_free_blocks():
    eng = engine(block_size=16, num_gpu_blocks=101)
    eng.add_request(EngineRequest("a", list(range(320)), 100))
    eng.step(0.0)
    assert eng.stats().kv_cache_usage == pytest.approx(20 / 100)  # 320 prompt tokens = 20 blocks
    eng.step(0.0)
    assert eng.stats().kv_cache_usage == pytest.approx(21 / 100)  # the first decode needs a 21st
    assert eng.abort_request("a") is True and eng.abort_request("a") is False
    assert eng.stats().kv_cache_usage == 0.0 and not eng.has_unfinished()
    eng.add_request(EngineRequest("b", list(range(320)), 1))
    assert eng.step(0.0).outputs[0].num_cached_tokens == 304  # aborted request's blocks stayed cached


def test_reset_prefix_cache_refused_while_running_and_emits_cleared_next_step():
    eng = engine(block_size=16)
    eng.add_request(EngineRequest("a", list(range(40)), 3))
    eng.step(0.0)
    assert eng.reset_prefix_cache() is False
    run(eng)
    assert eng.reset_prefix_cache() is True
    eng.add_request(EngineRequest("b", list(range(40)), 1))
    res = eng.step(0.0)
    assert type(res.kv_events[0]).__name__ == "AllBlocksCleared"
    assert res.outputs[0].num_cached_tokens == 0


def test_num_gpu_blocks_derived_from_hardware():
    h100 = SimEngine(EngineConfig(latency=H100_8B))
    h200 = SimEngine(EngineConfig(latency=LatencyModel.from_names("H200", "Llama-3.1-8B")))
    assert h100.stats().num_gpu_blocks == H100_8B.num_gpu_blocks(16, 0.9, 8192)
    assert h200.stats().num_gpu_blocks > 1.9 * h100.stats().num_gpu_blocks
    assert SimEngine(EngineConfig(latency=H100_8B, gpu_memory_utilization=0.5)).num_gpu_blocks < h100.num_gpu_blocks


def test_pd_prefill_only_then_remote_decode_pays_transfer_not_prefill():
    prompt = list(range(10, 10 + 8000))
    hasher = BlockHasher(16)
    prefill = engine(role="prefill", block_size=16)
    prefill.add_request(EngineRequest("p", prompt, 100, prefill_only=True))
    p_out = run(prefill)["p"]
    assert len(p_out["tokens"]) == 1 and p_out["finish"] == "length"
    prefill_time = p_out["end"]
    # The prefill pod keeps the blocks cached for the next prefill of the same prefix.
    prefill.add_request(EngineRequest("p2", prompt, 1, prefill_only=True))
    assert prefill.step(0.0).outputs[0].num_cached_tokens == 7984

    decode = engine(role="decode", block_size=16)
    transfer = H100_8B.kv_transfer_time(8000, "rdma-200g")
    decode.add_request(
        EngineRequest("d", prompt, 5, remote_prefill=RemotePrefill(num_tokens=8000, transfer_time_s=transfer))
    )
    clock = VirtualClock()
    first = decode.step(clock.now())
    assert first.idle and first.outputs == [] and first.duration_s == pytest.approx(transfer)
    assert decode.stats().num_waiting_for_remote_kv == 1
    clock.advance(first.duration_s)
    res = decode.step(clock.now())
    assert res.num_scheduled_tokens == 1  # only the last prompt token is recomputed
    out = res.outputs[0]
    assert out.first_token and out.num_cached_tokens == 8000 and out.num_remote_tokens == 8000
    stored = [h for e in res.kv_events if isinstance(e, BlockStored) for h in e.block_hashes]
    assert stored == [to_event_hash(h) for h in hasher.hash_blocks(prompt)]  # the blocks now live here
    ttft_decode = clock.now() + res.duration_s
    assert ttft_decode < prefill_time / 3
    rest = run(decode, clock)
    assert len(rest["d"]["tokens"]) == 4


def test_pd_remote_transfer_priced_by_latency_model_when_not_given():
    lat = LatencyModel.from_names("H100", "Llama-3.1-8B", network="tcp-25g")
    eng = engine(latency=lat)
    eng.add_request(EngineRequest("d", list(range(4096)), 2, remote_prefill=RemotePrefill(num_tokens=4096)))
    assert eng.step(0.0).duration_s == pytest.approx(lat.kv_transfer_time(4096))


def test_other_requests_keep_decoding_while_a_transfer_is_in_flight():
    eng = engine()
    eng.add_request(EngineRequest("local", [1, 2, 3], 50))
    eng.step(0.0)
    eng.add_request(
        EngineRequest("remote", list(range(2000)), 3, remote_prefill=RemotePrefill(2000, transfer_time_s=1.0))
    )
    t = 0.0
    ids = []
    while t < 0.5:
        res = eng.step(t)
        t += res.duration_s
        ids += [o.request_id for o in res.outputs]
    assert set(ids) == {"local"}


def test_virtual_clock_drives_several_engines():
    """Several engines share one virtual clock (speed is measured in bench/, not here)."""
    engines = [engine(seed=i) for i in range(4)]
    clock = VirtualClock()
    for i, eng in enumerate(engines):
        for j in range(8):
            eng.add_request(EngineRequest(f"{i}-{j}", list(range(j, j + 500)), 64))
    busy_until = [0.0] * len(engines)
    while any(e.has_unfinished() for e in engines):
        # each engine steps when its previous step ends; the clock jumps to the next such moment
        k = min((t, n) for n, t in enumerate(busy_until) if engines[n].has_unfinished())[1]
        clock.advance_to(busy_until[k])
        busy_until[k] = clock.now() + engines[k].step(clock.now()).duration_s
    assert clock.now() > 0.5  # 64 decode steps of ~8 ms each on each engine: simulated time advanced


def test_clock_sleep_semantics():
    async def main() -> list[str]:
        clock = VirtualClock()
        order: list[str] = []

        async def sleeper(name: str, dt: float) -> None:
            await clock.sleep(dt)
            order.append(f"{name}@{clock.now():g}")

        tasks = [asyncio.create_task(sleeper("b", 2.0)), asyncio.create_task(sleeper("a", 1.0))]
        await asyncio.sleep(0)
        while clock.advance_to_next() is not None:
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        scaled = ScaledClock(speed=1000.0)
        t0 = scaled.now()
        await scaled.sleep(5.0)  # 5 simulated seconds = 5 ms of wall time
        assert scaled.now() - t0 >= 5.0
        real = RealClock()
        assert real.now() <= RealClock().now()
        return order

    assert asyncio.run(main()) == ["a@1", "b@2"]
    with pytest.raises(ValueError):
        VirtualClock().advance(-1)
    with pytest.raises(ValueError):
        ScaledClock(speed=0)


def test_moe_wide_ep_engine_runs_and_network_shows_in_itl():
    def itl(network: str) -> float:
        lat = LatencyModel.from_names("H200", "DeepSeek-R1", tp=1, ep=32, network=network)
        eng = SimEngine(EngineConfig(latency=lat, block_size=64, max_model_len=8192))
        assert eng.num_gpu_blocks > 1000  # capacity from 140 GiB minus 1/32 of the experts, MLA latents
        for i in range(64):
            eng.add_request(EngineRequest(f"r{i}", list(range(i, i + 1000)), 20))
        seen = run(eng)
        return max((r["end"] - r["ttft"]) / 19 for r in seen.values())

    assert itl("tcp-25g") > 1.3 * itl("rdma-400g")
