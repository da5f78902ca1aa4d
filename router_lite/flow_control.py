"""A bounded queue with priority bands and a TTL, pure (the gateway drives it with its clock).

Requests wait in the band of their priority; dispatch takes the oldest request of the highest band. When
full, a new request displaces the newest request of a lower band (that one is rejected instead), else it is
rejected itself. Requests older than the TTL expire and are handed back so the gateway can answer them.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

__all__ = ["FlowQueue", "QueuedItem", "EnqueueResult"]


@dataclass
class QueuedItem(Generic[T]):
    item: T
    priority: int
    enqueued_at: float


@dataclass
class EnqueueResult(Generic[T]):
    accepted: bool
    displaced: list[QueuedItem[T]] = field(default_factory=list)  # lower-priority items rejected to make room
    reason: str = ""


class FlowQueue(Generic[T]):
    def __init__(
        self, max_requests: int = 1024, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_requests <= 0:
            raise ValueError(f"max_requests: expected a positive integer, got {max_requests}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s: expected a positive number of seconds, got {ttl_s}")
        self.max_requests = max_requests
        self.ttl_s = ttl_s
        self.clock = clock
        self._bands: dict[int, deque[QueuedItem[T]]] = {}
        self._size = 0
        self._expired_pending: list[QueuedItem[T]] = []
        self.stats: dict[str, int] = {"enqueued": 0, "dispatched": 0, "rejected": 0, "displaced": 0, "expired": 0}

    def __len__(self) -> int:
        return self._size

    def band_sizes(self) -> dict[int, int]:
        return {p: len(q) for p, q in sorted(self._bands.items(), reverse=True) if q}

    def enqueue(self, item: T, priority: int = 0) -> EnqueueResult[T]:
        displaced: list[QueuedItem[T]] = []
        if self._size >= self.max_requests:
            lower = [p for p, q in self._bands.items() if q and p < priority]
            if not lower:
                self.stats["rejected"] += 1
                return EnqueueResult(False, reason=f"queue full ({self.max_requests} requests)")
            victim_band = self._bands[min(lower)]
            displaced.append(victim_band.pop())  # newest of the lowest band
            self._size -= 1
            self.stats["displaced"] += 1
        self._bands.setdefault(priority, deque()).append(QueuedItem(item, priority, self.clock()))
        self._size += 1
        self.stats["enqueued"] += 1
        return EnqueueResult(True, displaced)

    def expire(self) -> list[QueuedItem[T]]:
        """Remove and return every item older than the TTL."""
        cutoff = self.clock() - self.ttl_s
        out: list[QueuedItem[T]] = []
        for q in self._bands.values():
            while q and q[0].enqueued_at <= cutoff:
                out.append(q.popleft())
        self._size -= len(out)
        self.stats["expired"] += len(out)
        return out

    def dequeue(self) -> QueuedItem[T] | None:
        """The oldest item of the highest non-empty band (expired items are not returned)."""
        self._expired_pending.extend(self.expire())
        for p in sorted(self._bands, reverse=True):
            q = self._bands[p]
            if q:
                self._size -= 1
                self.stats["dispatched"] += 1
                return q.popleft()
        return None

    def peek(self) -> QueuedItem[T] | None:
        """The item `dequeue` would return next (expired items included), left in place."""
        for p in sorted(self._bands, reverse=True):
            if self._bands[p]:
                return self._bands[p][0]
        return None

    def waiting_at_or_above(self, priority: int) -> bool:
        """Whether anything of `priority` or higher waits: a newcomer must not overtake it."""
        return any(q for p, q in self._bands.items() if p >= priority)

    def take_expired(self) -> list[QueuedItem[T]]:
        """Items that expired during `dequeue` calls, for the gateway to answer (then forgotten)."""
        out, self._expired_pending = self._expired_pending, []
        return out

    def remove(self, item: T) -> bool:
        """Withdraw a waiting item (its client went away)."""
        for q in self._bands.values():
            for qi in q:
                if qi.item is item:
                    q.remove(qi)
                    self._size -= 1
                    return True
        return False
