"""LoRA in the engine: max_loras per batch (vLLM's scheduler skips a request whose adapter would exceed it),
adapter load time on first use, KV blocks never shared across adapters, and LoRA in KV events and hashes."""

from __future__ import annotations

import pytest

from kvtiers import BlockHasher, BlockStored, to_event_hash
from kvtiers.hashing import block_extra_keys
from sim_gpu.clock import VirtualClock
from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine
from sim_gpu.engine.lora import LoraSlots
from sim_gpu.latency import LatencyModel

H100_8B = LatencyModel.from_names("H100", "Llama-3.1-8B")
MB = 1_000_000


def lora_engine(max_loras: int = 1, sizes: dict[str, int] | None = None, **kw) -> tuple[SimEngine, LoraSlots]:
    kw.setdefault("latency", H100_8B)
    kw.setdefault("num_gpu_blocks", 2000)
    eng = SimEngine(EngineConfig(**kw))
    slots = LoraSlots(max_loras=max_loras, storage_gbps=2.0, pcie_gbps=32.0)
    for i, (name, size) in enumerate((sizes or {"a": 80 * MB, "b": 80 * MB}).items(), start=1):
        slots.register(name, i, size)
    eng.enable_lora(slots)
    return eng, slots


def drive(eng: SimEngine, limit: int = 5000) -> tuple[dict[str, dict], list]:
    """Step to completion on a virtual clock: per request its first-token and end times; every step result."""
    clock, seen, steps = VirtualClock(), {}, []
    for _ in range(limit):
        if not eng.has_unfinished():
            break
        res = eng.step(clock.now())
        steps.append(res)
        clock.advance(res.duration_s)
        for out in res.outputs:
            rec = seen.setdefault(out.request_id, {"cached": out.num_cached_tokens})
            if out.first_token:
                rec["ttft"] = clock.now()
            if out.finished:
                rec["end"] = clock.now()
    assert not eng.has_unfinished()
    return seen, steps


def test_a_request_whose_adapter_exceeds_max_loras_waits_while_others_go():
    eng, _ = lora_engine(max_loras=1)
    eng.add_request(EngineRequest("a1", [1] * 40, 30, lora_name="a"))
    eng.add_request(EngineRequest("b1", [2] * 40, 5, lora_name="b"))
    eng.add_request(EngineRequest("base", [3] * 40, 5))  # no adapter: never held back by max_loras
    eng.add_request(EngineRequest("a2", [4] * 40, 5, lora_name="a"))  # same adapter: joins the batch
    seen, _ = drive(eng)
    assert seen["b1"]["ttft"] > seen["a1"]["end"] - 1e-9  # b waited until no request of a was running
    assert seen["base"]["ttft"] < seen["a1"]["end"]
    assert seen["a2"]["ttft"] < seen["a1"]["end"]


def test_two_slots_run_two_adapters_together():
    eng, _ = lora_engine(max_loras=2)
    eng.add_request(EngineRequest("a1", [1] * 40, 30, lora_name="a"))
    eng.add_request(EngineRequest("b1", [2] * 40, 5, lora_name="b"))
    seen, _ = drive(eng)
    assert seen["b1"]["ttft"] < seen["a1"]["end"]


def test_first_use_pays_storage_and_pcie_later_uses_pay_nothing():
    eng, slots = lora_engine(max_loras=1, sizes={"a": 200 * MB, "b": 200 * MB})
    eng.add_request(EngineRequest("a1", [1] * 40, 2, lora_name="a"))
    _, steps = drive(eng)
    first = steps[0].duration_s
    eng.add_request(EngineRequest("base", [1] * 40, 2))
    _, base_steps = drive(eng)
    cold = 200 * MB / 2e9 + 200 * MB / 32e9  # storage read, then the copy into a GPU slot
    assert first - base_steps[0].duration_s == pytest.approx(cold, rel=0.02)
    eng.add_request(EngineRequest("a2", [5] * 40, 2, lora_name="a"))
    _, again = drive(eng)
    assert again[0].duration_s == pytest.approx(base_steps[0].duration_s, rel=0.02)  # still resident
    eng.add_request(EngineRequest("b1", [6] * 40, 2, lora_name="b"))
    drive(eng)  # b evicts a from the single GPU slot (a stays in the CPU cache only if it has room)
    assert list(slots.gpu) == ["b"] and slots.loads == 2


def test_kv_blocks_of_different_adapters_are_never_shared():
    eng, _ = lora_engine(max_loras=2)
    prompt = list(range(100, 164))  # four full blocks of 16
    eng.add_request(EngineRequest("a1", prompt, 2, lora_name="a"))
    drive(eng)
    eng.add_request(EngineRequest("b1", prompt, 2, lora_name="b"))
    eng.add_request(EngineRequest("base", prompt, 2))
    seen, _ = drive(eng)
    assert seen["b1"]["cached"] == 0 and seen["base"]["cached"] == 0
    eng.add_request(EngineRequest("a2", prompt, 2, lora_name="a"))
    seen, _ = drive(eng)
    assert seen["a2"]["cached"] == 48  # the same adapter hits its own blocks (all but the last)


def test_events_carry_the_adapter_and_hashes_tag_its_name():
    eng, _ = lora_engine(max_loras=1, enable_kv_events=True)
    prompt = list(range(200, 248))
    eng.add_request(EngineRequest("a1", prompt, 1, lora_name="b", cache_salt="t"))
    _, steps = drive(eng)
    stored = [e for s in steps for e in s.kv_events if isinstance(e, BlockStored)]
    assert stored and {(e.lora_id, e.lora_name) for e in stored} == {(2, "b")}
    assert stored[0].extra_keys[0] == ["b", "t"] and stored[0].extra_keys[1] == ["b"]
    hasher = BlockHasher(16)
    expect = [to_event_hash(d) for d in hasher.hash_blocks(prompt, cache_salt="t", lora_name="b")]
    assert [h for e in stored for h in e.block_hashes] == expect
    assert block_extra_keys(0, "t", "b") == (("lora", "b"), ("cache_salt", "t"))
    assert hasher.hash_blocks(prompt, lora_name="b") != hasher.hash_blocks(prompt, cache_salt="b")


def test_unknown_adapter_and_lora_without_enable_are_refused():
    eng, _ = lora_engine()
    with pytest.raises(ValueError, match="adapter 'zzz' is not loaded"):
        eng.add_request(EngineRequest("x", [1, 2, 3], 2, lora_name="zzz"))
    plain = SimEngine(EngineConfig(latency=H100_8B, num_gpu_blocks=100))
    with pytest.raises(ValueError, match="LoRA is not enabled"):
        plain.add_request(EngineRequest("x", [1, 2, 3], 2, lora_name="a"))
    with pytest.raises(ValueError, match="max_cpu_loras"):
        LoraSlots(max_loras=2, max_cpu_loras=1)
