"""Clocks the engine steps against: real, scaled, or virtual time.

The engine never reads wall time; it is told `now` and returns how long a step takes. Whoever drives it
owns a clock: the HTTP server sleeps on a real (or sped-up) one, an offline planner advances a virtual one
by each step's duration, so the same engine code runs live or hundreds of times faster than real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What drivers need: the current simulated time in seconds, and a way to wait simulated seconds."""

    def now(self) -> float: ...

    async def sleep(self, dt: float) -> None: ...


class RealClock:
    """Wall time (monotonic seconds); `sleep` is asyncio's."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, dt: float) -> None:
        await asyncio.sleep(max(0.0, dt))


class ScaledClock:
    """Simulated time running `speed` times faster than wall time (speed 10: a 1 s step waits 0.1 s).

    `now()` starts at `start` and advances at `speed` simulated seconds per wall second.
    """

    def __init__(self, speed: float = 1.0, start: float = 0.0) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed: expected a positive number, got {speed!r}")
        self.speed = float(speed)
        self._start = float(start)
        self._wall0 = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._wall0) * self.speed

    async def sleep(self, dt: float) -> None:
        await asyncio.sleep(max(0.0, dt) / self.speed)


class VirtualClock:
    """Time that moves only when told: `advance(dt)` / `advance_to(t)`.

    Planners call `advance(step.duration_s)` directly. Coroutines may also `await sleep(dt)`: they wake when
    the clock is advanced past their deadline; `advance_to_next()` jumps to the earliest pending deadline,
    which is how a discrete-event driver runs several sleepers on one virtual timeline.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._ids = itertools.count()

    def now(self) -> float:
        return self._t

    def advance(self, dt: float) -> float:
        """Move time forward by `dt` seconds (negative is an error), waking due sleepers; returns now()."""
        if dt < 0:
            raise ValueError(f"virtual clock: cannot advance by a negative amount ({dt!r})")
        return self.advance_to(self._t + dt)

    def advance_to(self, t: float) -> float:
        """Move time forward to `t` (never backwards), waking every sleeper whose deadline is <= t."""
        if t > self._t:
            self._t = float(t)
        while self._sleepers and self._sleepers[0][0] <= self._t:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        return self._t

    def next_deadline(self) -> float | None:
        """Earliest deadline among pending sleepers, or None."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def advance_to_next(self) -> float | None:
        """Jump to the earliest pending sleeper's deadline and wake it; None when nobody sleeps."""
        deadline = self.next_deadline()
        if deadline is None:
            return None
        return self.advance_to(deadline)

    async def sleep(self, dt: float) -> None:
        if dt <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + dt, next(self._ids), fut))
        await fut
