"""The simulator against recorded real vLLM 0.32 CPU traces (tests/fixtures/vllm_traces, bench/record_vllm_traces.py).

The shipped `cpu` hardware profile was fitted on the fit shapes only (sim_gpu.trace_fit.FIT_SHAPES); its
accuracy is what it does on the held-out shapes. Replays are deterministic, so these are exact checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim_gpu.latency import LatencyModel
from sim_gpu.replay import as_prediction, engine_config, replay, replay_score, score, trace_latency
from sim_gpu.trace_fit import FIT_SHAPES, FITTED, HELDOUT_SHAPES, fit, with_knobs
from sim_gpu.traces import Trace, TracedRequest, TraceError

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "vllm_traces"
REPEATS = TRACES / "repeats"  # second recordings: every single-pod shape and two-pods-light (same script)
SINGLE_POD_HELDOUT = [s for s in HELDOUT_SHAPES if not s.startswith("two-pods")]
TWO_POD_HELDOUT = [s for s in HELDOUT_SHAPES if s.startswith("two-pods")]


def load(name: str) -> Trace:
    return Trace.load(TRACES / f"{name}.json")


@pytest.fixture(scope="module")
def shipped() -> LatencyModel:
    return trace_latency(load("burst"), "cpu")


def test_every_shape_is_recorded_and_split_into_fit_and_heldout() -> None:
    recorded = {p.stem for p in TRACES.glob("*.json")}
    assert recorded == set(FIT_SHAPES) | set(HELDOUT_SHAPES)
    assert not set(FIT_SHAPES) & set(HELDOUT_SHAPES)
    for name in recorded:
        trace = load(name)
        assert trace.server["vllm_version"].startswith("0.32"), name
        assert all(r.ok for r in trace.requests), name
        assert all(sum(r.chunk_tokens) == r.max_tokens for r in trace.requests), name  # exact output lengths


@pytest.mark.parametrize("shape", SINGLE_POD_HELDOUT)
def test_heldout_traces_replay_within_15_percent_median(shipped: LatencyModel, shape: str) -> None:
    s = replay_score(load(shape), shipped)
    assert s.ttft_median <= 0.15 and s.e2e_median <= 0.15, s.row()


def test_every_repeat_is_the_same_workload_recorded_again() -> None:
    repeats = {p.stem for p in REPEATS.glob("*.json")}
    assert set(SINGLE_POD_HELDOUT) <= repeats <= {p.stem for p in TRACES.glob("*.json")}
    for name in repeats:
        first, second = load(name), Trace.load(REPEATS / f"{name}.json")
        assert second.recorded_at > first.recorded_at, name
        # Arrivals are the recorded send times, a few ms apart between runs; the replay takes each run's own.
        assert [(r.id, r.segments, r.max_tokens) for r in first.requests] == [
            (r.id, r.segments, r.max_tokens) for r in second.requests
        ], name
        assert all(r.ok for r in second.requests), name


@pytest.mark.parametrize("shape", SINGLE_POD_HELDOUT)
def test_heldout_shapes_replay_closer_to_each_recording_than_the_engine_repeats_itself(
    shipped: LatencyModel, shape: str
) -> None:
    """Per-request error has a floor: the real engine, sent the same requests again, is itself this far from its
    first recording. Averaged over the two recordings, the simulator's median error must not exceed it."""
    first, second = load(shape), Trace.load(REPEATS / f"{shape}.json")
    real = score(first, as_prediction(second))
    sim = [replay_score(t, shipped) for t in (first, second)]
    assert sum(s.ttft_median for s in sim) / 2 <= real.ttft_median, (real.row(), [s.row() for s in sim])
    assert sum(s.e2e_median for s in sim) / 2 <= real.e2e_median, (real.row(), [s.row() for s in sim])


@pytest.mark.xfail(
    strict=True,
    reason="two CPU pods on a 2-core host slow each other (pinned engines + API servers + router + client on 2"
    " cores) and differ from themselves run to run (two-pods: medians 3.1x apart; two-pods-light: 21.6% per"
    " request); the simulator prices each pod alone (docs/simulator-accuracy.md)",
)
@pytest.mark.parametrize("shape", TWO_POD_HELDOUT)
def test_two_pods_behind_the_router_replay_within_15_percent_median(shipped: LatencyModel, shape: str) -> None:
    s = replay_score(load(shape), shipped)
    assert s.ttft_median <= 0.15 and s.e2e_median <= 0.15, s.row()


@pytest.mark.parametrize("shape", sorted(set(FIT_SHAPES) | set(HELDOUT_SHAPES)))
def test_prefix_cache_hits_agree_with_vllm_request_by_request(shipped: LatencyModel, shape: str) -> None:
    """The simulated engine finds the same cached tokens as vLLM reported (usage.prompt_tokens_details), KV
    pressure and evictions included: its block pool, hashing and eviction order behave as vLLM's."""
    assert replay_score(load(shape), shipped).cached_match >= 0.95


def test_kv_pressure_preempts_as_often_as_vllm(shipped: LatencyModel) -> None:
    """More running requests than KV: vLLM preempted (and later recomputed) 9 times over the trace; the
    simulated scheduler must face the same shortage and make the same number of preemptions."""
    s = replay_score(load("preemption"), shipped)
    assert s.real_preemptions == 9
    assert s.sim_preemptions == s.real_preemptions


# Replayed medians of the shipped profile (ms): a change of any fitted term shows here even where it stays
# inside the accuracy bound above. Regenerate with `python bench/sim_accuracy.py` after a deliberate refit.
PINNED_MEDIANS_MS = {
    "burst": (1109.0, 1746.2),
    "kv-pressure": (268.2, 474.6),
    "long-prefix": (43.9, 346.1),
    "mixed-output": (309.6, 776.1),
    "short-many": (70.4, 336.3),
    "two-pods-b": (50.6, 334.3),
    "two-pods": (45.6, 233.4),
    "preemption": (1897.9, 13357.9),
    "decode-waves": (200.3, 2708.8),
    "two-pods-light": (45.6, 219.3),
}


@pytest.mark.parametrize("shape", sorted(PINNED_MEDIANS_MS))
def test_replayed_medians_are_pinned(shipped: LatencyModel, shape: str) -> None:
    s = replay_score(load(shape), shipped)
    ttft, e2e = PINNED_MEDIANS_MS[shape]
    assert s.sim_ttft_median * 1e3 == pytest.approx(ttft, rel=0.02)
    assert s.sim_e2e_median * 1e3 == pytest.approx(e2e, rel=0.02)


@pytest.mark.parametrize("knob", FITTED)
def test_a_2x_change_of_any_fitted_term_moves_some_pinned_median(shipped: LatencyModel, knob: str) -> None:
    current = {
        **{k: getattr(shipped.hardware, k) for k in FITTED if hasattr(shipped.hardware, k)},
        **{k: getattr(shipped.coefficients, k) for k in FITTED if hasattr(shipped.coefficients, k)},
    }
    for factor in (2.0, 0.5):
        mutated = with_knobs(shipped, {knob: current[knob] * factor})
        moved = 0.0
        for shape, (ttft, e2e) in PINNED_MEDIANS_MS.items():
            s = replay_score(load(shape), mutated)
            moved = max(moved, abs(s.sim_ttft_median * 1e3 / ttft - 1), abs(s.sim_e2e_median * 1e3 / e2e - 1))
        assert moved > 0.02, (knob, factor)


def test_the_fit_recovers_known_terms_from_a_synthetic_trace_and_generalises() -> None:
    """Traces whose 'real' timings are the simulator's own with known terms: fitting two terms from a wrong start
    finds them again, and the result predicts a shape it never saw."""
    base = trace_latency(load("burst"), "cpu")
    truth = with_knobs(base, {"mfu": 0.2, "step_overhead_ms": 12.0})

    def synthetic(name: str) -> Trace:
        trace = load(name)
        pred = replay(trace, truth)
        trace.requests = [
            TracedRequest(
                r.id,
                r.arrival,
                r.segments,
                r.max_tokens,
                r.pod,
                r.prompt_tokens,
                r.cached_tokens,
                [pred[r.id].first_token, pred[r.id].finished],
                [1, r.max_tokens - 1],
                pred[r.id].finished,
            )
            for r in trace.requests[:30]
        ]
        return trace

    start = with_knobs(base, {"mfu": 0.4, "step_overhead_ms": 5.0})
    result = fit(
        [synthetic("burst"), synthetic("short-many")],
        start,
        [synthetic("kv-pressure")],
        names=("mfu", "step_overhead_ms"),
        start={"mfu": 0.4, "step_overhead_ms": 5.0},
        max_evaluations=120,
    )
    assert result.values["mfu"] == pytest.approx(0.2, rel=0.05)
    assert result.values["step_overhead_ms"] == pytest.approx(12.0, rel=0.05)
    assert result.heldout[0].e2e_median < 0.02 and result.heldout[0].ttft_median < 0.02


def test_engine_takes_the_pods_kv_size_and_limits_from_their_flags() -> None:
    trace = load("kv-pressure")
    cfg = engine_config(trace, trace_latency(trace, "cpu"))
    assert (cfg.block_size, cfg.num_gpu_blocks, cfg.max_num_seqs, cfg.max_model_len) == (32, 257, 32, 2048)


def test_a_bad_trace_file_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "t.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(TraceError, match=r"t\.json: format: expected 'llmdctl-vllm-trace/1'"):
        Trace.load(bad)
    with pytest.raises(ValueError, match="no successful request"):
        score(load("burst"), {})
