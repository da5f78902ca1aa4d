"""Replay a recorded real-vLLM trace through the simulated engine on a virtual clock, and score it.

Each traced request enters its pod's `SimEngine` at its recorded send time plus the serving cost before the
engine (`Coefficients.request_in_s`: HTTP, parsing, input processing; `router_s` more when a router proxied
it); every engine step is priced by the
latency model; a token reaches the client `Coefficients.token_out_s` after the step that made it (output
processing, detokenization, streaming). Deterministic: the same trace and profile give the same numbers,
so tests can hold the simulator to the recorded truth.
"""

from __future__ import annotations

import heapq
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine
from sim_gpu.hw_profiles import ModelProfile, load_hardware
from sim_gpu.latency import LatencyModel
from sim_gpu.traces import Trace


@dataclass
class Predicted:
    """The simulator's answer for one traced request (seconds since the trace's start)."""

    arrival: float
    first_token: float
    finished: float
    cached_tokens: int
    preemptions: int = 0  # times the engine preempted this request (vLLM recomputes it)

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival

    @property
    def e2e(self) -> float:
        return self.finished - self.arrival


@dataclass
class ReplayScore:
    """Relative errors |sim - real| / real over a trace's successful requests."""

    shape: str
    n: int
    ttft_median: float
    ttft_p90: float
    e2e_median: float
    e2e_p90: float
    real_ttft_median: float
    sim_ttft_median: float
    real_e2e_median: float
    sim_e2e_median: float
    cached_match: float  # share of requests whose simulated cached tokens equal the server's
    sim_preemptions: int = 0
    real_preemptions: float | None = None  # vllm:num_preemptions_total over the trace, when recorded
    errors: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "errors"}


def trace_latency(trace: Trace, hardware: str = "cpu") -> LatencyModel:
    """The latency model of `hardware` (a profile name or YAML path) for the model the trace was recorded with."""
    from sim_gpu.calibrate import model_profile_from_hf

    config = trace.server.get("model_config")
    if not config:
        raise ValueError(f"trace {trace.shape}: server.model_config is missing (the model's config.json)")
    model = ModelProfile(**model_profile_from_hf(config, str(config.get("_name_or_path") or "traced-model")))
    hw = load_hardware(hardware)
    return LatencyModel(hardware=hw, model=model)


def engine_config(trace: Trace, latency: LatencyModel) -> EngineConfig:
    """The simulated engine the traced pods ran as: block size, KV blocks, batch limits from their flags."""
    flags = trace.server.get("flags", {})
    model = trace.server.get("model_config", {})
    block = int(flags.get("block-size", 16))
    kv_bytes = flags.get("kv-cache-memory-bytes")
    if flags.get("num-gpu-blocks") is not None:  # vLLM's own count (cache_config_info), null block included
        num_blocks: int | None = int(flags["num-gpu-blocks"])
    elif kv_bytes is not None:
        per_block = latency.kv_bytes_per_token() * block
        num_blocks = int(int(kv_bytes) // per_block)
    else:
        num_blocks = None
    max_len = int(flags.get("max-model-len", model.get("max_position_embeddings", 4096)))
    return EngineConfig(
        block_size=block,
        num_gpu_blocks=num_blocks,
        max_num_seqs=int(flags.get("max-num-seqs", 256)),
        max_num_batched_tokens=int(flags.get("max-num-batched-tokens", max(8192, max_len))),
        max_model_len=max_len,
        latency=latency,
        vocab_size=int(model.get("vocab_size", 32000)),
        enable_kv_events=False,
    )


class _Pod:
    """One traced pod on the replay's clock: its engine, its queue of (engine arrival, request index)."""

    def __init__(self, engine: SimEngine) -> None:
        self.engine = engine
        self.now = 0.0
        self.queue: list[tuple[float, int]] = []

    def ready_at(self) -> float:
        """When this pod next does something: now if it has work, else its next arrival (inf: done)."""
        if self.engine.has_unfinished():
            return self.now
        return max(self.now, self.queue[0][0]) if self.queue else math.inf


def replay(trace: Trace, latency: LatencyModel) -> dict[str, Predicted]:
    """Simulated per-request timings for every successful request of `trace`, by request id.

    Each request goes to the pod the trace says served it (the router's recorded choice), so a two-pod trace
    checks the engines' timing under real routing without re-deciding it. Pods share no resource here: CPU
    pods contending for one host's cores are not modelled (see docs/simulator-accuracy.md).
    """
    coef = latency.coefficients
    t_in = coef.request_in_s + (coef.router_s if trace.via_router else 0.0)
    t_out = coef.token_out_s
    reqs = [r for r in trace.requests if r.ok]
    pods = [_Pod(SimEngine(engine_config(trace, latency))) for _ in range(max(1, len(trace.pods)))]
    for i, r in enumerate(reqs):
        pods[min(r.pod, len(pods) - 1)].queue.append((r.arrival + t_in, i))
    for pod in pods:
        heapq.heapify(pod.queue)
    index = {r.id: i for i, r in enumerate(reqs)}
    out: dict[str, Predicted] = {}
    first: dict[str, float] = {}
    cached: dict[str, int] = {}
    while True:
        pod = min(pods, key=_Pod.ready_at)
        start = pod.ready_at()
        if start == math.inf:
            break
        pod.now = start
        eng = pod.engine
        while pod.queue and pod.queue[0][0] <= start:
            at, i = heapq.heappop(pod.queue)
            r = reqs[i]
            eng.add_request(
                EngineRequest(
                    request_id=r.id,
                    prompt_token_ids=trace.prompt(r),
                    max_tokens=r.max_tokens,
                    ignore_eos=True,
                    arrival_time=at,
                )
            )
        res = eng.step(start)
        if res.idle:
            pod.now = start + 1e-3
            continue
        end = start + res.duration_s
        for o in res.outputs:
            if o.first_token:
                first[o.request_id] = end + t_out
                cached[o.request_id] = o.num_cached_tokens
            if o.finished:
                r = reqs[index[o.request_id]]
                out[r.id] = Predicted(r.arrival, first[r.id], end + t_out, cached[r.id], o.num_preemptions)
        pod.now = end
    return out


def _q(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def score(trace: Trace, predicted: dict[str, Predicted]) -> ReplayScore:
    """Median and p90 relative TTFT and end-to-end error of `predicted` against the trace."""
    reqs = [r for r in trace.requests if r.ok and r.id in predicted]
    if not reqs:
        raise ValueError(f"trace {trace.shape}: no successful request to score")
    ttft = [abs(predicted[r.id].ttft - r.ttft) / r.ttft for r in reqs]
    e2e = [abs(predicted[r.id].e2e - r.e2e) / r.e2e for r in reqs]
    match = [predicted[r.id].cached_tokens == (r.cached_tokens or 0) for r in reqs]
    return ReplayScore(
        shape=trace.shape,
        n=len(reqs),
        ttft_median=statistics.median(ttft),
        ttft_p90=_q(ttft, 0.9),
        e2e_median=statistics.median(e2e),
        e2e_p90=_q(e2e, 0.9),
        real_ttft_median=statistics.median(r.ttft for r in reqs),
        sim_ttft_median=statistics.median(predicted[r.id].ttft for r in reqs),
        real_e2e_median=statistics.median(r.e2e for r in reqs),
        sim_e2e_median=statistics.median(predicted[r.id].e2e for r in reqs),
        cached_match=sum(match) / len(match),
        sim_preemptions=sum(predicted[r.id].preemptions for r in reqs),
        real_preemptions=trace.server.get("preemptions"),
        errors={"ttft": ttft, "e2e": e2e},
    )


def replay_score(trace: Trace, latency: LatencyModel) -> ReplayScore:
    return score(trace, replay(trace, latency))


def as_prediction(repeat: Trace) -> dict[str, Predicted]:
    """A second recording of the same shape in the form of a prediction, so `score(first, as_prediction(second))`
    is the real engine's own run-to-run error: the floor under any simulator's per-request error."""
    return {
        r.id: Predicted(r.arrival, r.chunk_times[0], r.arrival + r.e2e, r.cached_tokens or 0)
        for r in repeat.requests
        if r.ok
    }
