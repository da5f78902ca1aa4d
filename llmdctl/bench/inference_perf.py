"""inference-perf's load client, as llm-d ran it for its published benchmarks — the facts, in one place.

What `inference-perf` (kubernetes-sigs/inference-perf, `loadgen/load_generator.py`, `loadgen/load_timer.py`,
`datagen/shared_prefix_datagen.py`) does with a `load: {type: poisson, stages: [...]}` config, and so what the
planner must do to be comparable with a figure measured through it (sources: docs/benchmarks.md):

- a stage sends exactly `int(rate * duration)` requests;
- their send times: for each second, a Poisson(rate) count of requests, spread over that second by exponential
  gaps normalised to sum to one second (`PoissonLoadTimer`), starting one second after the stage opens (the
  generator's lead time for its workers);
- a stage ends only when every one of its requests has finished (the generator waits for its finished-requests
  counter), then `load.interval` seconds (default 1.0) pass before the next stage opens: stages never overlap,
  so a backlog never carries from one stage into the next;
- shared_prefix builds `num_groups x num_prompts_per_group` prompts once, shuffles them once, and every stage
  walks that list from its start (`data_index % len(prompts)`), so request j of any stage repeats prompt j;
- TTFT is timed from the moment the request is posted, not from its scheduled time;
- the worker pool (`num_workers` processes, default one per CPU of the client machine, x
  `worker_max_concurrency` = 100 requests each) caps the requests open at once; llm-d's 73%-capacity config
  sets neither, and llm-d's rendered config of a later run of the same ladder shows 224 workers (22,400 open
  requests: the cap does not bind), so the planner's inference-perf client has no cap unless asked for one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from llmdctl.bench.load import Stage
from llmdctl.bench.workloads import BenchRequest, WorkloadSpec, generate

STAGE_LEAD_S = 1.0  # load_generator: `start_time = time.perf_counter() + 1`
STAGE_INTERVAL_S = 1.0  # LoadConfig.interval default: pause between one stage's drain and the next stage
WORKER_MAX_CONCURRENCY = 100  # LoadConfig.worker_max_concurrency default (per worker process)


@dataclass(frozen=True)
class ClientModel:
    """How a benchmark client releases requests: `inference-perf` (stages drain before the next opens) or
    `open-loop` (every Poisson arrival on time, stages overlap freely), plus an optional cap on open requests."""

    kind: str = "inference-perf"
    max_in_flight: int | None = None

    def check(self) -> None:
        if self.kind not in CLIENTS:
            raise ValueError(f"client: expected one of {', '.join(CLIENTS)}, got {self.kind!r}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight: expected a positive integer or none, got {self.max_in_flight}")

    @property
    def stage_barrier_s(self) -> float | None:
        """Seconds between a stage's last finish and the next stage's opening; None when stages overlap."""
        return STAGE_INTERVAL_S if self.kind == "inference-perf" else None

    def describe(self) -> str:
        cap = f", at most {self.max_in_flight} open" if self.max_in_flight else ""
        if self.kind == "inference-perf":
            return f"inference-perf stages (each drains, {STAGE_INTERVAL_S:g}s pause){cap}"
        return f"open loop (stages overlap){cap}"


CLIENTS = ("inference-perf", "open-loop")


def stage_request_counts(stages: list[Stage]) -> list[int]:
    """Requests per stage, as inference-perf counts them: `int(rate * duration)`."""
    return [int(s.rate * s.duration) for s in stages]


def stage_send_offsets(stage: Stage, rng: np.random.Generator) -> list[float]:
    """Send times of one stage's requests, in seconds from the stage's opening (lead time included): per
    second a Poisson(rate) count, spread over that second by exponential gaps normalised to sum to 1 s."""
    n = int(stage.rate * stage.duration)
    out: list[float] = []
    second = STAGE_LEAD_S
    while len(out) < n:
        k = int(rng.poisson(stage.rate))
        if k > 0:
            gaps = rng.exponential(1.0 / k, k)
            t = second
            for g in (gaps / gaps.sum()).tolist()[: n - len(out)]:
                t += g
                out.append(t)
        second += 1.0
    return out


def staged_arrivals(stages: list[Stage], seed: int = 0) -> list[tuple[float, int]]:
    """(send offset from its stage's opening, stage index) for every request of every stage, stage by stage."""
    rng = np.random.default_rng(seed)
    return [(t, i) for i, st in enumerate(stages) for t in stage_send_offsets(st, rng)]


def staged_requests(spec: WorkloadSpec, counts: list[int]) -> list[BenchRequest]:
    """shared_prefix as inference-perf sends it: one shuffled set of prompts; stage k's j-th request is prompt
    `j % len(set)` (every stage walks the set from its start). Ids stay unique per stage and position."""
    if spec.kind != "shared-prefix":
        raise ValueError(f"client inference-perf: models the shared_prefix data generator, got workload {spec.kind!r}")
    order = generate(replace(spec, num_requests=None))  # one pass over the set, in one seeded shuffle
    out: list[BenchRequest] = []
    for k, n in enumerate(counts):
        for j in range(n):
            r = order[j % len(order)]
            out.append(replace(r, request_id=f"{r.request_id}-s{k}-{j}"))
    return out


__all__ = [
    "CLIENTS",
    "STAGE_INTERVAL_S",
    "STAGE_LEAD_S",
    "WORKER_MAX_CONCURRENCY",
    "ClientModel",
    "stage_request_counts",
    "stage_send_offsets",
    "staged_arrivals",
    "staged_requests",
]
