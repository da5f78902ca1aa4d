"""The planner's E/P/D scenario: the encode leg runs through the gateway's director on the virtual clock.

Requests sent one at a time (no queueing) isolate what images cost: a request's TTFT minus its text twin's
(same prompt length, text in the images' places, no multimodal items) is the encode leg plus the embeddings'
transfer on E/P/D, the encoder's time inside the prefill step when the pod encodes itself.
"""

from __future__ import annotations

import dataclasses

import pytest

from llmdctl.plan.epd import EPD, EPDScenario, MMWorkload, mm_requests, run_epd, run_one
from llmdctl.plan.sim import PoolPlan, simulate
from sim_gpu.latency import LatencyModel
from sim_gpu.multimodal import embedding_bytes, encode_time, transfer_time

H100 = PoolPlan(hardware="H100", model="Llama-3.1-8B", block_size=16, max_num_seqs=64, max_model_len=16384)
L40S_ENCODER = dataclasses.replace(H100, name="encode", role="encode", replicas=1, hardware="L40S")


def _scenario(images: int = 2, encoders: int = 1) -> EPDScenario:
    """Small deployments: an L40S encoder (slower than the H100s, so an H100 encoding in its stead shows)."""
    pools = {
        "aggregated": [dataclasses.replace(H100, replicas=2)],
        "e-pd": [dataclasses.replace(L40S_ENCODER, replicas=encoders), dataclasses.replace(H100, replicas=2)],
        "pd": [
            dataclasses.replace(H100, name="prefill", role="prefill", replicas=1),
            dataclasses.replace(H100, name="decode", role="decode", replicas=1),
        ],
        "epd": [
            dataclasses.replace(L40S_ENCODER, replicas=encoders),
            dataclasses.replace(H100, name="prefill", role="prefill", replicas=1),
            dataclasses.replace(H100, name="decode", role="decode", replicas=1),
        ],
    }
    return EPDScenario("t", "t", pools, MMWorkload(images_per_request=images, output_len=8), [2.0], 3.0)


def _ttft_one_at_a_time(sc: EPDScenario, deployment: str, images: bool, n: int = 4, keep: int = 0):
    """Requests 2 s apart (each done long before the next): mean TTFT, and the run's result."""
    reqs = mm_requests(sc.workload, n, seed=1, images=images)
    res = simulate(sc.plan_config(deployment), reqs, [(2.0 * i, 0) for i in range(n)], keep_decisions=keep)
    ttfts = [r.ttft for r in res.records]
    assert all(t is not None for t in ttfts) and len(ttfts) == n
    return sum(ttfts) / n, res


def _lat(hw: str) -> LatencyModel:
    return LatencyModel.from_names(hw, "Llama-3.1-8B", network="rdma-200g")


@pytest.mark.parametrize("images", [1, 2, 3])
def test_epd_ttft_rises_by_the_encode_leg_and_the_embeddings_transfer(images: int) -> None:
    sc = _scenario(images)
    tokens = images * sc.workload.image_tokens
    expected = encode_time(_lat("L40S"), tokens) + transfer_time(_lat("H100"), embedding_bytes(_lat("L40S"), tokens))
    with_images, res = _ttft_one_at_a_time(sc, "epd", images=True)
    twin, _ = _ttft_one_at_a_time(sc, "epd", images=False)
    assert res.encode_legs == 4
    assert with_images - twin == pytest.approx(expected, rel=0.02)
    assert expected > 0.04 * images  # the L40S ViT pass is tens of ms per 1536-token image: not a rounding error


def test_aggregated_pod_pays_its_own_encoder_in_the_prefill_step() -> None:
    sc = _scenario(2)
    with_images, res = _ttft_one_at_a_time(sc, "aggregated", images=True)
    twin, _ = _ttft_one_at_a_time(sc, "aggregated", images=False)
    assert res.encode_legs == 0
    assert with_images - twin == pytest.approx(encode_time(_lat("H100"), 2 * sc.workload.image_tokens), rel=0.02)


def test_decisions_show_each_deployments_legs() -> None:
    sc = _scenario(1)
    enc_ms = encode_time(_lat("L40S"), sc.workload.image_tokens) * 1000
    legs = {}
    for dep in ("aggregated", "e-pd", "pd", "epd"):
        _, res = _ttft_one_at_a_time(sc, dep, images=True, keep=4)
        assert len(res.decisions) == 4
        d = res.decisions[-1]
        legs[dep] = (d.get("epd") is not None, d["chosen"].get("prefill") is not None)
        if d.get("epd") is not None:
            enc = res.decisions[-1]["chosen"]["encode"]
            assert d["epd"] == {"encode": enc, "fallback": None, "ms": pytest.approx(enc_ms, abs=0.01)}
            assert "multimodal item" in d["reason"]
    assert legs == {"aggregated": (False, False), "e-pd": (True, False), "pd": (False, True), "epd": (True, True)}


def test_text_only_requests_skip_the_encode_leg() -> None:
    _, res = _ttft_one_at_a_time(_scenario(2), "epd", images=False, keep=1)
    assert res.encode_legs == 0 and "epd" not in res.decisions[0]


def test_encoder_queue_is_load_the_router_sees() -> None:
    """A burst onto two encoders: one pass at a time each, so legs queue; the queue-scorer spreads them."""
    sc = _scenario(2, encoders=2)
    reqs = mm_requests(sc.workload, 8, seed=2)
    res = simulate(sc.plan_config("epd"), reqs, [(0.06 * i, 0) for i in range(8)], keep_decisions=8)
    one = encode_time(_lat("L40S"), 2 * sc.workload.image_tokens)
    assert {d["chosen"]["encode"] for d in res.decisions} == {"10.0.0.1:8100", "10.0.0.1:8101"}
    assert res.encode_leg_s / res.encode_legs > one  # some legs waited behind another pass
    assert 0 < res.utilization["encode"] <= 1


def test_fast_and_step_driving_agree_on_multimodal_requests() -> None:
    sc = _scenario(2)
    reqs = mm_requests(sc.workload, 12, seed=3)
    arrivals = [(0.1 * i, 0) for i in range(12)]
    runs = [simulate(sc.plan_config("aggregated"), reqs, arrivals, drive=d) for d in ("fast", "step")]
    fast, step = ([(r.request_id, r.first_token, r.finished, r.endpoint) for r in res.records] for res in runs)
    assert sorted(fast) == sorted(step)
    assert runs[0].utilization == pytest.approx(runs[1].utilization)


def test_scenario_is_deterministic_and_compares_equal_gpus() -> None:
    assert len({sum(p.gpus for p in pools) for pools in EPD.deployments.values()}) == 1
    sc = dataclasses.replace(EPD, rates=[16.0, 32.0], duration_s=3.0)
    a, b = (run_epd(sc, seed=4) for _ in range(2))
    volatile = ("wall_s", "cpu_s")
    strip = [[{k: v for k, v in r.items() if k not in volatile} for r in doc["rows"]] for doc in (a, b)]
    assert strip[0] == strip[1]
    rows = {(r["deployment"], r["rate"]): r for r in a["rows"]}
    assert len(rows) == 8 and all(r["ok"] == r["requests"] > 0 for r in rows.values())
    assert rows[("epd", 32.0)]["encode_legs"] == rows[("epd", 32.0)]["requests"]
    assert set(rows[("epd", 16.0)]["utilization"]) == {"encode", "prefill", "decode"}


def test_one_row_names_its_pods_and_keeps_decisions() -> None:
    row = run_one(_scenario(1), "e-pd", 4.0, duration_s=2.0, keep_decisions=2)
    assert row["pods"] == {"encode": 1, "both": 2} and row["gpus"] == 3
    assert len(row["decisions"]) == 2 and row["encode_legs"] == row["requests"] > 0
