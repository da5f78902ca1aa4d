"""The GPU profiles are bound to numbers: the H200 to forward passes timed on a real H200 (held-out error),
every shipped GPU profile to absolute step-time pins at reference shapes (a 2x change of any efficiency
term moves a pin far past its tolerance)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sim_gpu.gpu_fit import (
    FITTED_TERMS,
    GpuTableError,
    TimedStep,
    error_summary,
    fit_report,
    load_table,
    predict,
    relative_errors,
    split_heldout,
    transfer_report,
    with_terms,
)
from sim_gpu.hw_profiles import DATA_DIR, load_hardware, load_model

H200_TABLE = DATA_DIR / "gpu_timing" / "h200_llama-3.1-8b.json"
H200_QWEN_TABLE = DATA_DIR / "gpu_timing" / "h200_qwen3-32b.json"  # a model the fit never sees
LLAMA_8B = load_model("Llama-3.1-8B")


@pytest.fixture(scope="module")
def h200_table() -> tuple[dict, list[TimedStep]]:
    return load_table(H200_TABLE)


def test_table_is_a_real_h200_measurement(h200_table):
    info, steps = h200_table
    assert info["gpu"] == "NVIDIA H200" and info["dtype"] == "torch.bfloat16" and not info["quick"]
    assert {s.family for s in steps} == {"prefill", "chunk", "decode", "mixed"}
    assert len(steps) >= 40


def test_heldout_split_never_fits_on_what_it_scores(h200_table):
    fit, held = split_heldout(h200_table[1])
    assert not {s.name for s in fit} & {s.name for s in held}
    assert {s.family for s in held} == {"prefill", "chunk", "decode", "mixed"}


def test_fit_predicts_heldout_shapes(h200_table):
    """Fitted on half the shapes, the model is within 8% (median) / 12% (p90) on the other half, and beats
    the datasheet-guess profile it started from."""
    info, steps = h200_table
    datasheet = replace(
        load_hardware("H200"),
        mfu=0.55,
        mfu_decode=0.35,
        hbm_efficiency=0.8,
        step_overhead_ms=1.0,
        mfu_attention=None,
        hbm_efficiency_weights=None,
        layer_overhead_us=0.0,
    )
    report = fit_report(datasheet, LLAMA_8B, steps, info)
    assert report["heldout_after"]["median"] <= 0.08
    assert report["heldout_after"]["p90"] <= 0.12
    assert report["heldout_after"]["median"] < 0.5 * report["heldout_before"]["median"]
    for family, errs in report["per_family"].items():
        assert errs["heldout_after"]["median"] <= 0.10, family


def test_fit_on_one_model_predicts_a_model_it_never_saw(h200_table):
    """Fitted on half of Llama-3.1-8B's shapes, the profile predicts every Qwen3-32B shape (twice the layers,
    4x the weights) within 8% median / 15% p90 — the per-layer overhead is what carries over."""
    info, steps = h200_table
    fitted = with_terms(load_hardware("H200"), fit_report(load_hardware("H200"), LLAMA_8B, steps, info)["terms"])
    qwen = transfer_report(fitted, load_model("Qwen3-32B"), load_table(H200_QWEN_TABLE)[1])
    assert qwen["all"]["n"] == 50
    assert qwen["all"]["median"] <= 0.08 and qwen["all"]["p90"] <= 0.15
    assert qwen["per_family"]["decode"]["median"] <= 0.05


def test_fit_respects_the_cards_own_ceilings(h200_table):
    info, steps = h200_table
    report = fit_report(load_hardware("H200"), LLAMA_8B, steps, info)
    terms = report["terms"]
    assert max(terms["mfu"], terms["mfu_decode"], terms["mfu_attention"]) <= info["matmul_tflops"] / 989 + 1e-3
    assert max(terms["hbm_efficiency"], terms["hbm_efficiency_weights"]) <= info["copy_tbps"] / 4.8 + 1e-3


def test_shipped_h200_profile_matches_heldout_measurements(h200_table):
    _, steps = h200_table
    _, held = split_heldout(steps)
    errs = error_summary(relative_errors(predict(load_hardware("H200"), LLAMA_8B, held), held))
    assert errs["median"] <= 0.08 and errs["p90"] <= 0.12 and errs["max"] <= 0.20


# Doubling mfu_decode moves only the largest decode batches (b256-c1024 by 12%): the pins below catch it with
# a compute-bound b512 decode, a shape the timed grid (batch <= 256) does not reach.
@pytest.mark.parametrize(
    ("term", "factor"), [(t, f) for t in FITTED_TERMS for f in (2.0, 0.5) if (t, f) != ("mfu_decode", 2.0)]
)
def test_a_2x_change_of_any_h200_term_breaks_agreement_with_the_gpu(h200_table, term, factor):
    _, steps = h200_table
    hw = load_hardware("H200")
    mutated = replace(hw, **{term: getattr(hw, term) * factor})
    errs = error_summary(relative_errors(predict(mutated, LLAMA_8B, steps), steps))
    assert errs["p90"] > 0.12 or errs["max"] > 0.20


# Reference shapes (Llama-3.1-8B, tp=1): compute-bound prefill, attention-heavy chunk, weight-bound decode,
# KV-bound decode, compute-bound decode. Pins in ms, from each shipped profile; update them only with a
# measurement or a cited spec change.
REFERENCE = [
    TimedStep("prefill-4096", 4096, 0, 0, 0, 1.0),
    TimedStep("chunk-1024-after-16384", 1024, 16384, 0, 0, 1.0),
    TimedStep("decode-b1-c4096", 0, 0, 1, 4096, 1.0),
    TimedStep("decode-b64-c16384", 0, 0, 64, 16384, 1.0),
    TimedStep("decode-b512-c256", 0, 0, 512, 256, 1.0),
]
PINS_MS = {
    "A100": [376.0979, 137.507, 11.3747, 95.307, 67.6378],
    "Gaudi3": [111.2735, 41.7301, 8.4081, 61.2692, 24.5925],
    "H100": [130.0208, 47.91, 7.1929, 58.2789, 24.9533],
    "H200": [117.5084, 58.3005, 6.799, 39.2853, 19.381],
    "L40S": [388.9397, 142.1761, 25.2119, 223.2882, 66.6415],
    "MI300X": [135.7404, 50.3077, 5.9736, 42.8766, 26.8755],
}


@pytest.mark.parametrize("hardware", sorted(PINS_MS))
def test_gpu_profile_step_time_pins(hardware):
    got = [t * 1e3 for t in predict(load_hardware(hardware), LLAMA_8B, REFERENCE)]
    for shape, want, have in zip(REFERENCE, PINS_MS[hardware], got):
        assert have == pytest.approx(want, rel=1e-3), f"{hardware} {shape.name}"


EFFICIENCY_TERMS = (
    "mfu",
    "mfu_decode",
    "mfu_attention",
    "hbm_efficiency",
    "hbm_efficiency_weights",
    "step_overhead_ms",
    "layer_overhead_us",
)


@pytest.mark.parametrize(
    ("hardware", "term"), [(h, t) for h in sorted(PINS_MS) for t in EFFICIENCY_TERMS if getattr(load_hardware(h), t)]
)  # every term a profile sets
def test_pins_catch_a_2x_change(hardware, term):
    hw = load_hardware(hardware)
    for factor in (2.0, 0.5):
        got = [t * 1e3 for t in predict(replace(hw, **{term: getattr(hw, term) * factor}), LLAMA_8B, REFERENCE)]
        assert max(abs(g - p) / p for g, p in zip(got, PINS_MS[hardware])) > 1e-2


def test_bad_table_is_one_line_error(tmp_path: Path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"rows": [{"name": "x", "prefill": 1}]}))
    with pytest.raises(GpuTableError, match=r"t\.json: rows\[0\]: missing or bad field"):
        load_table(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(GpuTableError, match="expected an object with a 'rows' list"):
        load_table(bad)
