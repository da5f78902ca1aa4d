"""Admission: the asyncio shell around the pure saturation detector and flow-control queue.

Not saturated: a request goes straight through. Saturated: a sheddable request (priority < 0) is rejected
with 429 and Retry-After, as llm-d does; others go through, or — with a queue configured — wait in their
priority band until the pool has capacity again (checked on every finished request and every few ms), and
are answered 429 if their TTL runs out or a higher-priority request displaces them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from router_lite.flow_control import FlowQueue
from router_lite.saturation import SaturationConfig, SaturationDetector, should_shed
from router_lite.types import Endpoint, LLMRequest

log = logging.getLogger("router_lite.admission")


class Rejected(Exception):
    """Not admitted: `reason` names why; the gateway answers 429 with Retry-After."""

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Ticket:
    """Held while a queued request is being served; releasing it lets the next one be dispatched."""

    def __init__(self, admission: "Admission | None") -> None:
        self._admission = admission

    def release(self) -> None:
        if self._admission is not None:
            adm, self._admission = self._admission, None
            adm._kick()


class Admission:
    def __init__(
        self,
        detector: SaturationDetector,
        queue_size: int = 0,
        queue_ttl_s: float = 30.0,
        metrics: Any = None,
        admitters: list[Any] | None = None,
    ) -> None:
        self.detector = detector
        self.admitters = list(admitters or [])  # llm-d Admitter plugins (e.g. probabilistic-admitter), asked first
        self.queue: FlowQueue[asyncio.Future] | None = FlowQueue(queue_size, queue_ttl_s) if queue_size > 0 else None
        self.metrics = metrics
        self._candidates: Callable[[], list[Endpoint]] | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    @classmethod
    def from_config(
        cls, config: Any, queue_size: int, queue_ttl_s: float, metrics: Any = None, admitters: list[Any] | None = None
    ) -> "Admission":
        raw = (getattr(config, "extra_sections", None) or {}).get("saturationDetector")
        return cls(SaturationDetector(SaturationConfig.from_dict(raw)), queue_size, queue_ttl_s, metrics, admitters)

    @property
    def queue_size(self) -> int:
        return len(self.queue) if self.queue is not None else 0

    def _shed(self, reason: str, label: str) -> Rejected:
        if self.metrics is not None:
            self.metrics.shed.labels(label).inc()
        return Rejected(reason)

    async def admit(self, request: LLMRequest, candidates: Callable[[], list[Endpoint]]) -> Ticket | None:
        """None or a Ticket to release when done; raises Rejected."""
        self._candidates = candidates
        for admitter in self.admitters:
            reason = admitter.reject(request, candidates())
            if reason is not None:
                raise self._shed(reason, "admitter")
        saturated = self.detector.is_saturated(candidates())
        if not saturated and not self.queue_size:
            return None
        if should_shed(request.priority, saturated):
            raise self._shed(
                "the model servers are saturated and this request is sheddable (priority < 0)", "saturated"
            )
        if self.queue is None or not saturated:
            return None
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        res = self.queue.enqueue(fut, request.priority)
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
            self.queue.remove(fut)
            raise
        return Ticket(self)

    # -- dispatch --------------------------------------------------------------------------------------
    def _ensure_dispatcher(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._dispatch_loop(), name="flow-control")
        self._kick()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _dispatch_loop(self) -> None:
        assert self.queue is not None and self._wake is not None
        while len(self.queue):
            try:
                async with asyncio.timeout(0.01):  # not wait_for: it can swallow a cancellation on 3.11
                    await self._wake.wait()
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            for qi in self.queue.expire():
                if not qi.item.done():
                    qi.item.set_exception(
                        self._shed(f"waited longer than the queue TTL ({self.queue.ttl_s:g}s)", "ttl")
                    )
            if self._candidates is None:
                continue
            # Dispatch one at a time: the next scrape must show the effect before the pool is judged again.
            if len(self.queue) and not self.detector.is_saturated(self._candidates()):
                qi = self.queue.dequeue()
                if qi is not None and not qi.item.done():
                    qi.item.set_result(None)
            for qi in self.queue.take_expired():
                if not qi.item.done():
                    qi.item.set_exception(
                        self._shed(f"waited longer than the queue TTL ({self.queue.ttl_s:g}s)", "ttl")
                    )
