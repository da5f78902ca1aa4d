"""Fit a GPU hardware profile's efficiency terms to forward-pass timings measured on that GPU.

Why: a profile of datasheet peaks times guessed efficiencies ranks designs but does not predict them. The
table comes from bench/gpu_layer_timing.py (one row per step shape: prefill, chunked prefill after cached
context, decode batch x context, mixed); the fit chooses the profile terms the latency model reads —
`mfu`, `mfu_decode`, `mfu_attention`, `hbm_efficiency`, `hbm_efficiency_weights`, `layer_overhead_us` — by
least squares on log(predicted / measured), so a 6 ms decode step counts as much as a 240 ms prefill.

Accuracy is reported on rows the fit did not see: within each shape family (prefill, chunk, decode, mixed),
sorted by size, every other row is held out. The figures are relative to the simulator's own FLOP and byte
counting (it counts the LM head on every token, as sim_gpu.latency does), so fitted MFUs are "effective".
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sim_gpu.hw_profiles import HardwareProfile, ModelProfile
from sim_gpu.latency import BatchShape, Coefficients, LatencyModel

FITTED_TERMS = ("mfu", "mfu_decode", "mfu_attention", "hbm_efficiency", "hbm_efficiency_weights", "layer_overhead_us")
_START = {
    "mfu": 0.55,
    "mfu_decode": 0.35,
    "mfu_attention": 0.4,
    "hbm_efficiency": 0.8,
    "hbm_efficiency_weights": 0.7,
    "layer_overhead_us": 50.0,
}
_FAMILIES = ("prefill", "chunk", "decode", "mixed")


class GpuTableError(ValueError):
    """A timing table that cannot be read; the message names the file and the field."""


@dataclass(frozen=True)
class TimedStep:
    """One measured step: `prefill` new tokens after `context` cached ones, plus `batch` decodes over
    `decode_context` tokens each, taking `seconds` (median of the repetitions)."""

    name: str
    prefill: int
    context: int
    batch: int
    decode_context: int
    seconds: float

    @property
    def family(self) -> str:
        if self.prefill and self.batch:
            return "mixed"
        if self.batch:
            return "decode"
        return "chunk" if self.context else "prefill"

    def shape(self) -> BatchShape:
        shape = BatchShape()
        if self.prefill:
            shape.add_prefill(self.prefill, self.context)
        if self.batch:
            shape.add_decode(self.batch * self.decode_context, self.batch)
        return shape


def load_table(path: Path) -> tuple[dict[str, Any], list[TimedStep]]:
    """The table's `info` and its measured rows (rows that failed on the GPU are skipped)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GpuTableError(f"{path}: cannot read timing table: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise GpuTableError(f"{path}: expected an object with a 'rows' list (bench/gpu_layer_timing.py output)")
    steps = []
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or "error" in row:
            continue
        try:
            steps.append(
                TimedStep(
                    name=str(row["name"]),
                    prefill=int(row["prefill"]),
                    context=int(row["context"]),
                    batch=int(row["batch"]),
                    decode_context=int(row["decode_context"]),
                    seconds=float(row["median_ms"]) / 1e3,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GpuTableError(f"{path}: rows[{i}]: missing or bad field {exc}") from None
    if len(steps) < len(FITTED_TERMS) + 1:
        raise GpuTableError(f"{path}: need at least {len(FITTED_TERMS) + 1} measured rows, got {len(steps)}")
    return dict(data.get("info") or {}), steps


def split_heldout(steps: list[TimedStep]) -> tuple[list[TimedStep], list[TimedStep]]:
    """(fit, held out): within each family sorted by size, rows alternate, the smallest going to the fit."""
    fit: list[TimedStep] = []
    held: list[TimedStep] = []
    for family in _FAMILIES:
        rows = sorted(
            (s for s in steps if s.family == family), key=lambda s: (s.batch, s.decode_context, s.context, s.prefill)
        )
        fit += rows[::2]
        held += rows[1::2]
    return fit, held


def with_terms(hardware: HardwareProfile, terms: dict[str, float]) -> HardwareProfile:
    """`hardware` with efficiency terms replaced (and no fitted correction coefficients). The per-step floor
    is all per-layer (`layer_overhead_us`): a fixed `step_overhead_ms` fitted on one model did not carry to a
    deeper one (Qwen3-32B's 64 layers; docs/simulator-accuracy.md), so it is zeroed when the layer term is set."""
    fixed = {"step_overhead_ms": 0.0} if "layer_overhead_us" in terms else {}
    return replace(hardware, coefficients={}, **fixed, **terms)


def predict(hardware: HardwareProfile, model: ModelProfile, steps: list[TimedStep]) -> list[float]:
    """Seconds the latency model gives each step on `hardware` (uncorrected, no jitter, tp=1)."""
    latency = LatencyModel(hardware=hardware, model=model, coefficients=Coefficients())
    return [latency.step_time(s.shape()) for s in steps]


def relative_errors(predicted: list[float], steps: list[TimedStep]) -> list[float]:
    return [abs(p - s.seconds) / s.seconds for p, s in zip(predicted, steps)]


def error_summary(errors: list[float]) -> dict[str, float]:
    """Median, p90 and max of relative errors (nearest-rank p90)."""
    ordered = sorted(errors)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return {"median": statistics.median(ordered), "p90": p90, "max": ordered[-1], "n": len(ordered)}


def ceilings(hardware: HardwareProfile, info: dict[str, Any]) -> tuple[float, float]:
    """Upper bounds for (MFU, bandwidth efficiency): the card's own measured matmul rate and copy bandwidth
    (bench/gpu_layer_timing.py records both) over the datasheet peaks; 1.0 where the table lacks them."""
    mfu = float(info.get("matmul_tflops") or hardware.peak_tflops) / hardware.peak_tflops
    bw = float(info.get("copy_tbps") or hardware.hbm_tbps) / hardware.hbm_tbps
    return min(1.0, mfu), min(1.0, bw)


def fit_terms(
    hardware: HardwareProfile, model: ModelProfile, steps: list[TimedStep], info: dict[str, Any] | None = None
) -> dict[str, float]:
    """The efficiency terms minimizing sum(log(predicted / measured)^2) over `steps`, each efficiency bounded
    by the ceiling the card itself showed (no term may claim more than a plain matmul or copy reached)."""
    import numpy as np
    from scipy.optimize import least_squares

    measured = np.log([s.seconds for s in steps])

    def terms_of(x: Any) -> dict[str, float]:
        return {k: float(math.exp(v)) for k, v in zip(FITTED_TERMS, x)}

    def residuals(x: Any) -> Any:
        return np.log(predict(with_terms(hardware, terms_of(x)), model, steps)) - measured

    mfu_max, bw_max = ceilings(hardware, info or {})
    upper = np.log([mfu_max, mfu_max, mfu_max, bw_max, bw_max, 10_000.0])
    lower = np.log([0.01, 0.01, 0.01, 0.05, 0.05, 0.01])
    x0 = np.minimum(np.log([_START[k] for k in FITTED_TERMS]), upper - 1e-6)
    result = least_squares(residuals, x0, bounds=(lower, upper), diff_step=1e-3, x_scale=1.0)
    return terms_of(result.x)


def transfer_report(hardware: HardwareProfile, model: ModelProfile, steps: list[TimedStep]) -> dict[str, Any]:
    """Error of `hardware` (fitted on another model) on every step of `model`'s table: a held-out model."""
    errors = relative_errors(predict(hardware, model, steps), steps)
    per_family = {
        f: error_summary([e for e, s in zip(errors, steps) if s.family == f])
        for f in _FAMILIES
        if any(s.family == f for s in steps)
    }
    return {"model": model.name, "all": error_summary(errors), "per_family": per_family}


def fit_report(
    hardware: HardwareProfile, model: ModelProfile, steps: list[TimedStep], info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fit on the fit half; report held-out error per family and overall, before (the profile as given) and
    after (fitted terms)."""
    fit_rows, held = split_heldout(steps)
    terms = fit_terms(hardware, model, fit_rows, info)
    fitted = with_terms(hardware, terms)
    held_err = relative_errors(predict(fitted, model, held), held)
    before_err = relative_errors(predict(hardware, model, held), held)
    per_family = {}
    for family in _FAMILIES:
        idx = [i for i, s in enumerate(held) if s.family == family]
        if idx:
            per_family[family] = {
                "heldout_after": error_summary([held_err[i] for i in idx]),
                "heldout_before": error_summary([before_err[i] for i in idx]),
            }
    return {
        "terms": {k: round(v, 4) for k, v in terms.items()},
        "fit_rows": len(fit_rows),
        "heldout_rows": len(held),
        "heldout_after": error_summary(held_err),
        "heldout_before": error_summary(before_err),
        "per_family": per_family,
        "rows": [
            {
                "name": s.name,
                "family": s.family,
                "measured_ms": s.seconds * 1e3,
                "model_ms": p * 1e3,
                "heldout": s in held,
            }
            for s, p in zip(steps, predict(fitted, model, steps))
        ],
    }
