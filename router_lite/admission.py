"""Admission: the asyncio shell around the pure saturation detectors, usage limit and flow-control queue.

Each request is let through while the pool's saturation is below its priority's ceiling (the usage limit:
1.0 for every priority by default, lower for lower bands with llm-d's priority-holdback-policy) and nothing
of its priority or higher is waiting. A band is held back only while a higher band is active (seen in the
last `band_idle_s`, or waiting): the highest active band may fill the pool, so one class of traffic alone
gets all of it, and a critical request arriving lowers the others' ceilings (the headroom then builds up as
their requests finish). Ceilings are spread over the configured bands (the objectives' priorities and 0).

Otherwise a sheddable request (priority < 0) is rejected with 429 and Retry-After when the pool is
saturated, as llm-d does; others wait in their priority band — with a queue configured — until the pool is
below their ceiling again (checked on every finished request and every 10 ms), and are answered 429 if
their TTL runs out or a higher-priority request displaces them.

Saturation comes from the utilization detector (scraped queue depth and KV use: the fraction of endpoints
without capacity) or from llm-d's concurrency detector (the requests this admission let through and that
have not finished, over maxConcurrency per endpoint: counted here, so never stale).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from router_lite.flow_control import FlowQueue
from router_lite.saturation import (
    ConcurrencyConfig,
    ConcurrencyDetector,
    SaturationConfig,
    SaturationDetector,
    UsageLimit,
    should_shed,
    utilization_saturation,
)
from router_lite.types import Endpoint, LLMRequest

log = logging.getLogger("router_lite.admission")


class Rejected(Exception):
    """Not admitted: `reason` names why; the gateway answers 429 with Retry-After."""

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Ticket:
    """Held while an admitted request is served; releasing it lets the next one be dispatched."""

    def __init__(self, admission: "Admission | None", counted: bool = False) -> None:
        self._admission = admission
        self._counted = counted

    def release(self) -> None:
        if self._admission is not None:
            adm, self._admission = self._admission, None
            adm._release(self._counted)


class Admission:
    def __init__(
        self,
        detector: SaturationDetector | ConcurrencyDetector,
        queue_size: int = 0,
        queue_ttl_s: float = 30.0,
        metrics: Any = None,
        admitters: list[Any] | None = None,
        usage_limit: UsageLimit | None = None,
        priorities: list[int] | None = None,
        band_idle_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.detector = detector
        self.admitters = list(admitters or [])  # llm-d Admitter plugins (e.g. probabilistic-admitter), asked first
        self.queue: FlowQueue[asyncio.Future] | None = FlowQueue(queue_size, queue_ttl_s) if queue_size > 0 else None
        self.metrics = metrics
        self.usage_limit = usage_limit or UsageLimit()
        self.priorities = sorted({0, *(priorities or [])})  # the configured bands: the objectives' and the default
        self.band_idle_s = band_idle_s
        self.clock = clock
        self._seen: dict[int, float] = {}  # priority -> last time a request of it arrived
        self.counting = isinstance(detector, ConcurrencyDetector)
        self.active = 0  # admitted and not finished (kept when the detector counts)
        self._candidates: Callable[[], list[Endpoint]] | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    @classmethod
    def from_config(
        cls,
        config: Any,
        queue_size: int,
        queue_ttl_s: float,
        metrics: Any = None,
        admitters: list[Any] | None = None,
        priorities: list[int] | None = None,
    ) -> "Admission":
        extra = getattr(config, "extra_sections", None) or {}
        raw = extra.get("saturationDetector")
        detector: SaturationDetector | ConcurrencyDetector
        if raw and raw.get("detector") == "concurrency":
            detector = ConcurrencyDetector(
                ConcurrencyConfig.from_dict({k: v for k, v in raw.items() if k != "detector"})
            )
        else:
            detector = SaturationDetector(SaturationConfig.from_dict(raw))
        limit = extra.get("usageLimit")
        usage = UsageLimit(**limit) if limit else None
        return cls(detector, queue_size, queue_ttl_s, metrics, admitters, usage, priorities)

    @property
    def queue_size(self) -> int:
        return len(self.queue) if self.queue is not None else 0

    def saturation(self, endpoints: list[Endpoint]) -> float:
        """The pool's saturation: 1.0 and above is full."""
        if isinstance(self.detector, ConcurrencyDetector):
            return self.detector.saturation(endpoints, self.active)
        return utilization_saturation(self.detector, endpoints)

    def bands(self) -> list[int]:
        """The active priority bands: seen in the last `band_idle_s`, or waiting in the queue."""
        cutoff = self.clock() - self.band_idle_s
        for p in [p for p, t in self._seen.items() if t < cutoff]:
            del self._seen[p]
        waiting = self.queue.band_sizes() if self.queue is not None else {}
        return sorted({*self._seen, *waiting})

    def ceiling(self, priority: int) -> float:
        """`priority`'s ceiling now: the policy's while a higher band is active, else the highest."""
        active = self.bands()
        if not any(p > priority for p in active):
            return self.usage_limit.max_ceiling
        return self.usage_limit.ceiling(priority, sorted({*self.priorities, *active}))

    def _shed(self, reason: str, label: str) -> Rejected:
        if self.metrics is not None:
            self.metrics.shed.labels(label).inc()
        return Rejected(reason)

    def _ticket(self) -> Ticket | None:
        if self.counting:
            self.active += 1
            return Ticket(self, counted=True)
        return None

    def _release(self, counted: bool) -> None:
        if counted:
            self.active -= 1
        self._kick()

    async def admit(self, request: LLMRequest, candidates: Callable[[], list[Endpoint]]) -> Ticket | None:
        """None or a Ticket to release when done; raises Rejected."""
        self._candidates = candidates
        for admitter in self.admitters:
            reason = admitter.reject(request, candidates())
            if reason is not None:
                raise self._shed(reason, "admitter")
        queue = self.queue
        self._seen[request.priority] = self.clock()
        sat = self.saturation(candidates())
        if sat < self.ceiling(request.priority) and not (
            queue is not None and queue.waiting_at_or_above(request.priority)
        ):
            return self._ticket()
        if should_shed(request.priority, sat >= 1.0):
            raise self._shed(
                "the model servers are saturated and this request is sheddable (priority < 0)", "saturated"
            )
        if queue is None:
            return self._ticket()
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        res = queue.enqueue(fut, request.priority)
        for victim in res.displaced:
            if not victim.item.done():
                victim.item.set_exception(
                    self._shed("displaced from the queue by a higher-priority request", "displaced")
                )
        if not res.accepted:
            raise self._shed(f"saturated and {res.reason}", "queue_full")
        self._ensure_dispatcher()
        try:
            await fut
        except asyncio.CancelledError:
            if not queue.remove(fut) and fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(self.counting)  # dispatched just as its client left: give the slot back
            raise
        return Ticket(self, counted=self.counting)

    # -- dispatch --------------------------------------------------------------------------------------
    def _ensure_dispatcher(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._dispatch_loop(), name="flow-control")
        self._kick()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _fail_expired(self, expired: list) -> None:
        assert self.queue is not None
        for qi in expired:
            if not qi.item.done():
                qi.item.set_exception(self._shed(f"waited longer than the queue TTL ({self.queue.ttl_s:g}s)", "ttl"))

    async def _dispatch_loop(self) -> None:
        assert self.queue is not None and self._wake is not None
        queue = self.queue
        while len(queue):
            try:
                async with asyncio.timeout(0.01):  # not wait_for: it can swallow a cancellation on 3.11
                    await self._wake.wait()
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            self._fail_expired(queue.expire())
            if self._candidates is None:
                continue
            endpoints = self._candidates()
            while len(queue):
                head = queue.peek()
                if head is None or self.saturation(endpoints) >= self.ceiling(head.priority):
                    break  # strict priority: lower bands have lower ceilings
                qi = queue.dequeue()
                if qi is not None and not qi.item.done():
                    if self.counting:
                        self.active += 1
                    qi.item.set_result(None)
                if not self.counting:
                    break  # scraped saturation: one at a time, the next scrape must show the effect
            self._fail_expired(queue.take_expired())
