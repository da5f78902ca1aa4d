"""The latency model orders things as physics does, and its profiles load (or fail) cleanly."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from sim_gpu.hw_profiles import (
    ProfileError,
    list_hardware,
    list_models,
    list_networks,
    load_hardware,
    load_model,
    load_network,
)
from sim_gpu.latency import BatchShape, Coefficients, LatencyModel


def lm(hw: str = "H100", model: str = "Llama-3.1-8B", **kw) -> LatencyModel:
    return LatencyModel.from_names(hw, model, **kw)


def test_shipped_profiles_all_load():
    assert {"H100", "H200", "A100", "L40S", "MI300X", "Gaudi3", "cpu"} <= set(list_hardware())
    assert {"Llama-3.1-8B", "Llama-3.1-70B", "Qwen3-32B", "DeepSeek-R1", "tinyllama"} <= set(list_models())
    assert {"rdma-100g", "rdma-200g", "rdma-400g", "tcp-25g"} <= set(list_networks())
    for name in list_hardware():
        assert load_hardware(name).peak_tflops > 0
    for name in list_networks():
        assert load_network(name).bytes_per_s > 0
    assert load_hardware("h100").name == "H100"  # case-insensitive
    assert load_model("meta-llama/Llama-3.1-8B-Instruct").name == "Llama-3.1-8B"  # alias


def test_unknown_and_malformed_profiles_are_one_line_errors(tmp_path):
    with pytest.raises(ProfileError, match="unknown hardware profile 'B300'.*H100"):
        load_hardware("B300")
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nmemory_gib: 80\npeak_tflops: 100\nhbm_tbps: 1\nmfu: fast\n")
    with pytest.raises(ProfileError, match=r"mine\.yaml: mfu: expected a non-negative number"):
        load_hardware(str(bad))
    bad.write_text("name: mine\nmemory_gib: 80\npeak_tflops: 100\nhbm_tbps: 1\nwarp_speed: 9\n")
    with pytest.raises(ProfileError, match="unknown key 'warp_speed'"):
        load_hardware(str(bad))
    bad.write_text("name: mine\nmemory_gib: 80\n")
    with pytest.raises(ProfileError, match="missing key 'peak_tflops'"):
        load_hardware(str(bad))
    with pytest.raises(ValueError, match="unknown key 'alpha'"):
        Coefficients.from_dict({"alpha": 2})


def test_kv_bytes_per_token_follow_the_architecture():
    assert lm().kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2  # GQA Llama-3.1-8B: 128 KiB
    assert lm(model="tinyllama").kv_bytes_per_token() == 1024  # the capture's 3 MiB = 96 blocks of 32
    assert lm("H200", "DeepSeek-R1", tp=8).kv_bytes_per_token() == 61 * (512 + 64) * 2  # MLA latent


def test_prefill_time_grows_with_uncached_tokens_and_a_prefix_hit_cuts_it():
    m = lm()
    times = [m.prefill_time(n) for n in (128, 512, 2048, 8192)]
    assert times == sorted(times) and times[-1] > 10 * times[0]
    cold = m.prefill_time(4096)
    warm = m.prefill_time(256, context=3840)  # same prompt, 3840 tokens hit the prefix cache
    assert warm < cold / 5


def test_decode_step_grows_with_batch_and_context():
    m = lm()
    assert m.decode_step_time(1, 1024) < m.decode_step_time(32, 32 * 1024) < m.decode_step_time(256, 256 * 1024)
    assert m.decode_step_time(32, 32 * 512) < m.decode_step_time(32, 32 * 8192)


def test_prefill_is_compute_bound_and_decode_memory_bound():
    h100, h200 = lm("H100"), lm("H200")  # same compute, 43% more bandwidth
    assert h200.decode_step_time(64, 64 * 2048) < 0.85 * h100.decode_step_time(64, 64 * 2048)
    # Half the bandwidth: a long prefill barely moves, a decode step nearly doubles (H200 is GPU-fitted,
    # H100 still datasheet-guessed, so the two are compared with themselves, not with each other).
    for profile in ("H100", "H200"):
        full = lm(profile)
        half = LatencyModel(hardware=replace(full.hardware, hbm_tbps=full.hardware.hbm_tbps / 2), model=full.model)
        assert half.prefill_time(8192) < 1.02 * full.prefill_time(8192)
        assert half.decode_step_time(64, 64 * 2048) > 1.6 * full.decode_step_time(64, 64 * 2048)
    # Decode: a 64x larger batch costs far less than 64x (weights are read once per step).
    assert h100.decode_step_time(64, 64 * 1024) < 4 * h100.decode_step_time(1, 1024)


def test_tensor_parallel_reduces_time_but_pays_all_reduce():
    tp2, tp4, tp8 = (lm(model="Llama-3.1-70B", tp=t) for t in (2, 4, 8))
    assert tp8.prefill_time(4096) < tp4.prefill_time(4096) < tp2.prefill_time(4096)
    assert tp8.decode_step_time(64, 64 * 2048) < tp4.decode_step_time(64, 64 * 2048)
    # Not a perfect split: communication keeps tp8 above half of tp4.
    assert tp8.prefill_time(4096) > 0.5 * tp4.prefill_time(4096)


def test_capacity_follows_memory_minus_weights():
    h100, h200 = lm("H100"), lm("H200")
    assert h200.num_gpu_blocks(16) > 1.9 * h100.num_gpu_blocks(16)
    assert lm("H100", "Llama-3.1-70B", tp=4).num_gpu_blocks(16) > 0
    with pytest.raises(ValueError, match="does not fit on L40S"):
        lm("L40S", "Llama-3.1-70B").num_gpu_blocks(16)


def test_kv_transfer_time_scales_with_tokens_and_bandwidth():
    m = lm()
    assert m.kv_transfer_time(0) == 0.0
    assert m.kv_transfer_time(8192, "rdma-100g") > 3 * m.kv_transfer_time(8192, "rdma-400g")
    assert m.kv_transfer_time(8192, "tcp-25g") > m.kv_transfer_time(8192, "rdma-100g")
    assert m.kv_transfer_time(8192, "rdma-200g") == pytest.approx(2 * m.kv_transfer_time(4096, "rdma-200g"), rel=0.01)
    # bytes / bandwidth: 8192 tokens x 128 KiB over 200 Gb/s at 90% efficiency ~= 47.7 ms.
    assert m.kv_transfer_time(8192, "rdma-200g") == pytest.approx(8192 * 131072 / (200e9 / 8 * 0.9), rel=0.01)


def test_wide_ep_decode_pays_all_to_all_over_the_network():
    fast = lm("H200", "DeepSeek-R1", tp=1, ep=32, network="rdma-400g")
    slow = lm("H200", "DeepSeek-R1", tp=1, ep=32, network="tcp-25g")
    assert slow.decode_step_time(128, 128 * 2048) > 1.5 * fast.decode_step_time(128, 128 * 2048)
    balanced = lm("H200", "DeepSeek-R1", tp=1, ep=32, network="rdma-400g", moe_imbalance=1.0)
    assert balanced.decode_step_time(128, 128 * 2048) < fast.decode_step_time(128, 128 * 2048)
    # More EP ranks hold fewer experts each: more room for KV.
    assert lm("H200", "DeepSeek-R1", tp=1, ep=32).num_gpu_blocks(64) > lm(
        "H200", "DeepSeek-R1", tp=1, ep=16
    ).num_gpu_blocks(64)


def test_coefficients_and_jitter():
    base = lm()
    shape = BatchShape()
    shape.add_decode(32 * 1024, 32)
    slower = lm(coefficients={"memory": 2.0, "overhead_s": 0.01})
    assert slower.step_time(shape) > 1.9 * base.step_time(shape)
    jittery = lm(jitter=0.1)
    a = [jittery.step_time(shape, random.Random(7)) for _ in range(3)]
    b = [jittery.step_time(shape, random.Random(7)) for _ in range(3)]
    assert a == b and a[0] != base.step_time(shape)
    assert jittery.step_time(shape) == base.step_time(shape)  # no rng: deterministic
