"""Load shapes: when each request is sent. Poisson rate stages, fixed concurrency, or a trace file.

A rate ladder is a list of `Stage(rate, duration)` as inference-perf writes them (llm-d's 73%-capacity
benchmark: a 15 QPS warm-up, then 3 -> 60 QPS); arrivals are a seeded Poisson process within each stage.
Everything is bounded: a schedule never holds more than `max_requests` arrivals.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

LOAD_KINDS = ("poisson", "concurrency", "trace")

# llm-d-kv-cache-manager benchmarking "73-capacity" (inference-perf, Poisson): warm-up then the QPS ladder.
LLMD_73_LADDER: list[tuple[float, float]] = [
    (15, 50),
    (3, 20),
    (10, 20),
    (15, 20),
    (20, 38),
    (22, 34),
    (25, 30),
    (30, 25),
    (35, 21),
    (40, 38),
    (43, 36),
    (46, 33),
    (49, 30),
    (52, 29),
    (55, 27),
    (57, 26),
    (60, 25),
]


@dataclass(frozen=True)
class Stage:
    rate: float  # requests per second
    duration: float  # seconds


@dataclass
class LoadSpec:
    """How requests arrive: `poisson` over `stages`, `concurrency` (closed loop, N in flight), or `trace`."""

    kind: str = "poisson"
    stages: list[Stage] = field(default_factory=lambda: [Stage(2.0, 5.0)])
    concurrency: int = 4
    trace: list[float] | None = None  # arrival offsets (s) from a trace file
    seed: int = 0
    max_requests: int = 100_000

    def check(self) -> None:
        if self.kind not in LOAD_KINDS:
            raise ValueError(f"load: expected one of {', '.join(LOAD_KINDS)}, got {self.kind!r}")
        if self.kind == "poisson":
            if not self.stages:
                raise ValueError("rate: expected at least one RATE:SECONDS stage")
            for s in self.stages:
                if not (s.rate > 0 and s.duration > 0):
                    raise ValueError(f"rate: stages need rate > 0 and duration > 0, got {s.rate}:{s.duration}")
        if self.kind == "concurrency" and self.concurrency < 1:
            raise ValueError(f"concurrency: expected an integer >= 1, got {self.concurrency}")
        if self.kind == "trace" and not self.trace:
            raise ValueError("trace: the trace file holds no arrivals")

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.stages)

    def describe(self) -> str:
        if self.kind == "concurrency":
            return f"closed loop, {self.concurrency} in flight"
        if self.kind == "trace":
            return f"trace, {len(self.trace or [])} arrivals over {max(self.trace or [0]):.0f}s"
        if len(self.stages) == 1:
            s = self.stages[0]
            return f"Poisson {s.rate:g} QPS for {s.duration:g}s"
        return f"Poisson ladder {' -> '.join(f'{s.rate:g}' for s in self.stages)} QPS over {self.duration:g}s"


def parse_stages(text: str) -> list[Stage]:
    """`RATE:SECONDS[,RATE:SECONDS...]` (e.g. `3:20,10:20`), or `llmd-73` for llm-d's ladder."""
    text = text.strip()
    if text in ("llmd-73", "llm-d-73"):
        return [Stage(float(r), float(d)) for r, d in LLMD_73_LADDER]
    stages = []
    for part in text.split(","):
        rate, sep, dur = part.strip().partition(":")
        try:
            stage = Stage(float(rate), float(dur) if sep else 10.0)
        except ValueError:
            raise ValueError(
                f"--rate {text!r}: expected RATE:SECONDS[,RATE:SECONDS...] (e.g. 3:20,10:20) or llmd-73"
            ) from None
        if not (stage.rate > 0 and stage.duration > 0):
            raise ValueError(f"--rate {part!r}: rate and seconds must be > 0")
        stages.append(stage)
    return stages


def scale_stages(stages: list[Stage], time_scale: float = 1.0, rate_scale: float = 1.0) -> list[Stage]:
    """Shorten (time_scale < 1) or thin (rate_scale < 1) a ladder, e.g. to run llm-d's shape at small scale."""
    return [Stage(s.rate * rate_scale, s.duration * time_scale) for s in stages]


def poisson_arrivals(stages: list[Stage], seed: int = 0, max_requests: int = 100_000) -> list[tuple[float, int]]:
    """(arrival time, stage index) of a Poisson process whose rate steps through `stages`, at most
    `max_requests` arrivals."""
    rng = random.Random(seed)
    out: list[tuple[float, int]] = []
    start = 0.0
    for i, st in enumerate(stages):
        t = start
        end = start + st.duration
        while len(out) < max_requests:
            t += rng.expovariate(st.rate)
            if t >= end:
                break
            out.append((t, i))
        start = end
        if len(out) >= max_requests:
            break
    return out


def read_trace(path: str | Path, max_requests: int = 100_000) -> list[float]:
    """Arrival offsets from a JSONL trace: one object per line with `timestamp` (s) or `arrival_time`
    (absolute times are shifted to start at 0). Bad lines are a one-line error naming the file and line."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read trace: {exc.strerror or exc}") from None
    times: list[float] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            t = float(doc["timestamp"] if "timestamp" in doc else doc["arrival_time"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{p}:{n}: expected a JSON object with a numeric 'timestamp' (seconds)") from None
        times.append(t)
        if len(times) >= max_requests:
            break
    if not times:
        raise ValueError(f"{p}: the trace holds no arrivals")
    t0 = min(times)
    return sorted(t - t0 for t in times)


def schedule(load: LoadSpec, n_requests: int) -> list[tuple[float, int]]:
    """(send time, stage) for open-loop kinds, bounded by `n_requests` and `load.max_requests`.
    A closed loop (`concurrency`) has no schedule: the runner sends as requests finish."""
    load.check()
    cap = min(n_requests, load.max_requests)
    if load.kind == "poisson":
        return poisson_arrivals(load.stages, load.seed, cap)
    if load.kind == "trace":
        return [(t, 0) for t in (load.trace or [])[:cap]]
    return [(0.0, 0)] * cap
