"""Fit the latency model's coefficients to recorded real-vLLM traces by replaying them, then judge the fit
only on traces it did not see.

The objective is the mean absolute log ratio of simulated to recorded TTFT and end-to-end latency over the
fit traces' requests (log: a 2x miss costs the same on a 40 ms hit as on a 900 ms cold prefill; absolute:
one request slowed by a neighbour process does not steer the fit). The replay is deterministic, so a
derivative-free search (Nelder-Mead over the log of each knob) gives the same answer every time. Held-out
traces are never touched by the fit: their errors are the accuracy a user can expect, and the only figures
`sim calibrate` reports as accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sim_gpu.hw_profiles import HardwareProfile
from sim_gpu.latency import LatencyModel
from sim_gpu.replay import ReplayScore, replay, replay_score
from sim_gpu.traces import Trace

# What is fitted, and where the search starts: the hardware's efficiency terms (linear layers; attention within
# a fresh chunk and over cached context apart, as vLLM CPU runs them with different kernels; weight streaming;
# per-step overhead), a per-sequence cost in each step, and the serving costs around the engine. Hardware knobs
# are fields of HardwareProfile, the rest of Coefficients. Terms the traces cannot tell apart are tied (decode
# GEMMs run at the prefill MFU, KV streams at the weights' bandwidth) rather than fitted to noise.
HW_KNOBS = ("mfu", "mfu_attention", "mfu_attention_context", "hbm_efficiency_weights", "step_overhead_ms")
COEF_KNOBS = ("per_seq_s", "request_in_s", "token_out_s", "router_s")
FITTED = HW_KNOBS + COEF_KNOBS
TIED = {"mfu_decode": "mfu", "hbm_efficiency": "hbm_efficiency_weights"}
START = {
    "mfu": 0.3,
    "mfu_attention": 0.1,
    "mfu_attention_context": 0.05,
    "hbm_efficiency_weights": 0.5,
    "step_overhead_ms": 8.0,
    "per_seq_s": 5e-4,
    "request_in_s": 0.005,
    "token_out_s": 0.002,
    "router_s": 0.005,
}
# The recorded shapes the shipped CPU profile is fitted on; the others are held out and only scored.
FIT_SHAPES = ("short-many", "long-prefix", "burst", "two-pods-b")
# decode-waves and two-pods-light were recorded after the fit (like preemption): held out in time as well.
HELDOUT_SHAPES = ("kv-pressure", "mixed-output", "preemption", "decode-waves", "two-pods", "two-pods-light")
FLOOR = 1e-9  # every knob stays positive (searched in log space)


@dataclass
class TraceFit:
    values: dict[str, float]  # the fitted knobs
    objective: float
    evaluations: int
    fit: list[ReplayScore] = field(default_factory=list)
    heldout: list[ReplayScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "objective": self.objective,
            "evaluations": self.evaluations,
            "fit": [s.row() for s in self.fit],
            "heldout": [s.row() for s in self.heldout],
        }


def with_knobs(latency: LatencyModel, values: dict[str, float]) -> LatencyModel:
    """A copy of `latency` with the hardware fields and coefficients named in `values` replaced."""
    unknown = sorted(set(values) - set(HW_KNOBS) - set(COEF_KNOBS))
    if unknown:
        raise ValueError(f"fit: unknown knob {unknown[0]!r} (expected one of {', '.join(FITTED)})")
    hw_values = {k: v for k, v in values.items() if k in HW_KNOBS}
    hw_values.update({tied: hw_values[src] for tied, src in TIED.items() if src in hw_values})
    hw = replace(latency.hardware, **hw_values)
    coef = replace(latency.coefficients, **{k: v for k, v in values.items() if k in COEF_KNOBS})
    return replace(latency, hardware=hw, coefficients=coef)


def profile_doc(hw: HardwareProfile, values: dict[str, float], **fields: Any) -> dict[str, Any]:
    """The YAML mapping of hardware profile `hw` with the fitted `values` in place (tied terms follow their
    source; coefficients merged into the profile's own) and `fields` (name, description, ...) overridden."""
    doc: dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(hw).items()}
    doc.update({k: round(v, 6) for k, v in values.items() if k in HW_KNOBS})
    doc.update({t: round(values[s], 6) for t, s in TIED.items() if s in values})
    doc["coefficients"] = {
        **hw.coefficients,
        **{k: float(f"{v:.6g}") for k, v in values.items() if k in COEF_KNOBS},
    }
    doc.update(fields)
    return doc


def current_values(latency: LatencyModel, names: Sequence[str] = FITTED) -> dict[str, float]:
    """The knobs' values in `latency` now, for those that are set (a profile's unset terms stay at START)."""
    out: dict[str, float] = {}
    for k in names:
        v = getattr(latency.hardware, k, None) if k in HW_KNOBS else getattr(latency.coefficients, k, None)
        if isinstance(v, (int, float)) and v > 0:
            out[k] = float(v)
    return out


def objective(traces: Sequence[Trace], latency: LatencyModel) -> float:
    """Mean |log(sim / real)| of TTFT and end-to-end over every successful request of `traces` (absolute, not
    squared: a request slowed by a neighbour process on a shared host should not steer the whole fit)."""
    total, n = 0.0, 0
    for trace in traces:
        pred = replay(trace, latency)
        for r in trace.requests:
            p = pred.get(r.id)
            if p is None or not r.ok:
                continue
            total += abs(math.log(max(p.ttft, 1e-6) / r.ttft)) + abs(math.log(max(p.e2e, 1e-6) / r.e2e))
            n += 2
    return total / max(1, n)


def fit(
    traces: Sequence[Trace],
    latency: LatencyModel,
    heldout: Sequence[Trace] = (),
    names: Sequence[str] = FITTED,
    start: dict[str, float] | None = None,
    max_evaluations: int = 600,
    progress: Callable[[int, float], None] | None = None,
) -> TraceFit:
    """Knobs `names` of `latency` that best replay `traces`; scored on `traces` and on `heldout`."""
    from scipy.optimize import minimize

    if not traces:
        raise ValueError("fit: no trace to fit on")
    init = {**START, **(start or {})}
    x0 = [math.log(max(FLOOR, init[k])) for k in names]
    evals = 0
    best = (math.inf, list(x0))

    def f(x: Sequence[float]) -> float:
        nonlocal evals, best
        evals += 1
        values = {k: math.exp(v) for k, v in zip(names, x)}
        val = objective(traces, with_knobs(latency, values))
        if val < best[0]:
            best = (val, list(x))
        if progress:
            progress(evals, best[0])
        return val

    # Nelder-Mead stalls early in this many dimensions: restart from the best point with a fresh simplex until a
    # round no longer improves the objective or the budget is spent.
    previous = math.nan
    while evals < max_evaluations and not best[0] >= previous - 1e-4:  # NaN: the first round always runs
        previous = best[0]
        minimize(
            f,
            best[1],
            method="Nelder-Mead",
            options={"maxfev": max_evaluations - evals, "xatol": 1e-3, "fatol": 1e-5, "adaptive": True},
        )
    values = {k: math.exp(v) for k, v in zip(names, best[1])}
    fitted = with_knobs(latency, values)
    return TraceFit(
        values=values,
        objective=best[0],
        evaluations=evals,
        fit=[replay_score(t, fitted) for t in traces],
        heldout=[replay_score(t, fitted) for t in heldout],
    )
