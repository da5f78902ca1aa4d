"""The simulated engine: continuous batching over a paged, prefix-cached block pool, stepping on a clock.

Pure core (no I/O, no wall time): `SimEngine.step(now)` schedules one batch as vLLM v1 does, returns how long
it takes per the latency model, the tokens it produced and the KV events it fired. The HTTP server and the
offline planner are shells around it.

Virtual-clock drivers (the planner) should use `SimEngine.fast_forward(now, until, max_steps=None,
flush=False) -> FastForwardResult` instead of a `step()` loop: it runs the steps that start before `until`
back to back from `now` — exactly what `t = now; while has_unfinished() and t < until: r = step(t);
t += r.duration_s` does (it also stops after an idle 0 s step: `stalled`) — but advances steady decodes
lazily, so a request costs work at its block boundaries and finish rather than once per token. Same tokens,
per-token times, KV events (with `kv_event_times`), stats and jitter draws (tests/sim/test_engine_fast_forward.py).
Outputs are merged per request and carry `token_times`; first tokens and finishes are reported by the call
that produced them, plain decode tokens may come a call late (`flush=True`: everything now). Next step
starts at `result.end_s`. `step()` and `fast_forward()` may be mixed on one engine.
"""

from sim_gpu.engine.engine import EngineConfig, SimEngine
from sim_gpu.engine.request import (
    EngineRequest,
    EngineStats,
    FastForwardResult,
    RemotePrefill,
    RequestOutput,
    StepResult,
)

__all__ = [
    "EngineConfig",
    "EngineRequest",
    "EngineStats",
    "FastForwardResult",
    "RemotePrefill",
    "RequestOutput",
    "SimEngine",
    "StepResult",
]
