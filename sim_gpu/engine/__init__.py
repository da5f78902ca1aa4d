"""The simulated engine: continuous batching over a paged, prefix-cached block pool, stepping on a clock.

Pure core (no I/O, no wall time): `SimEngine.step(now)` schedules one batch as vLLM v1 does, returns how long
it takes per the latency model, the tokens it produced and the KV events it fired. The HTTP server and the
offline planner are shells around it.
"""

from sim_gpu.engine.engine import EngineConfig, SimEngine
from sim_gpu.engine.request import EngineRequest, EngineStats, RemotePrefill, RequestOutput, StepResult

__all__ = [
    "EngineConfig",
    "EngineRequest",
    "EngineStats",
    "RemotePrefill",
    "RequestOutput",
    "SimEngine",
    "StepResult",
]
