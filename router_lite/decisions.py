"""The decision stream: every routing decision fanned out to `/debug/decisions` readers as server-sent events.

Publishing must never slow the request path: each reader has a bounded queue and a reader that falls behind
loses decisions (counted) instead of holding anyone up. With no reader, a decision is kept as an unrendered
thunk in a small history ring and only turned into JSON if someone asks for the history.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec

DecisionSource = dict[str, Any] | Callable[[], dict[str, Any]]
_CLOSE: Any = object()  # queued to a subscriber by `close()`: its stream ends
_encoder = msgspec.json.Encoder(enc_hook=str)


def _render(item: DecisionSource) -> bytes:
    return _encoder.encode(item() if callable(item) else item)


class DecisionHub:
    """Fan-out of decisions to subscribers, each with a bounded queue of rendered JSON lines."""

    def __init__(self, queue_size: int = 1000, history: int = 256, on_drop: Callable[[], None] | None = None) -> None:
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue[bytes]] = set()
        self._history: deque[DecisionSource | bytes] = deque(maxlen=history)
        self._on_drop = on_drop
        self.published = 0
        self.dropped = 0
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, decision: DecisionSource) -> None:
        """Record one decision; renders it only when someone is listening. Never blocks, never raises."""
        self.published += 1
        if not self._subscribers:
            self._history.append(decision)
            return
        try:
            line = _render(decision)
        except Exception:  # a decision that cannot be rendered must not hurt the request
            self.dropped += 1
            return
        self._history.append(line)
        for q in self._subscribers:
            try:
                q.put_nowait(line)
            except asyncio.QueueFull:
                self.dropped += 1
                if self._on_drop:
                    self._on_drop()

    def history(self, n: int) -> list[bytes]:
        """The last `n` decisions, rendered (rendering happens here for those published with no reader)."""
        items = list(self._history)[-n:] if n > 0 else []
        out = []
        for item in items:
            try:
                out.append(item if isinstance(item, bytes) else _render(item))
            except Exception:
                continue
        return out

    def subscribe(self) -> asyncio.Queue[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=self.queue_size)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes]) -> None:
        self._subscribers.discard(q)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End every subscriber's stream now (server shutdown): an SSE response never ends on its own, and
        the HTTP server waits for open responses before it stops. Idempotent; later subscribers end at once."""
        self._closed = True
        for q in list(self._subscribers):
            while True:
                try:
                    q.put_nowait(_CLOSE)
                    break
                except asyncio.QueueFull:  # a reader that fell behind: it loses the backlog, not the close
                    q.get_nowait()

    def reopen(self) -> None:
        """Accept streams again after `close()` (a router started again in the same process)."""
        self._closed = False

    async def sse(self, history: int = 0, heartbeat_s: float = 15.0) -> AsyncIterator[bytes]:
        """Server-sent events: `data: {json}` per decision, a comment line as heartbeat; ends on `close()`."""
        q = self.subscribe()
        try:
            yield b": llmd decisions\n\n"
            for line in self.history(history):
                yield b"data: " + line + b"\n\n"
            while not self._closed:
                try:
                    async with asyncio.timeout(heartbeat_s):  # not wait_for: it can swallow a cancellation on 3.11
                        line = await q.get()
                except asyncio.TimeoutError:
                    yield b": ping\n\n"
                    continue
                if line is _CLOSE:
                    return
                yield b"data: " + line + b"\n\n"
        finally:
            self.unsubscribe(q)


def _parse_sse_line(line: str) -> dict[str, Any] | None:
    if line.startswith("data:"):
        try:
            return json.loads(line[5:].strip())
        except ValueError:
            return None
    return None


async def aiter_decisions(
    base_url: str, history: int = 0, headers: dict[str, str] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Follow a router's decision stream (async): yields one dict per decision until cancelled."""
    import httpx

    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
        url = base_url.rstrip("/") + f"/debug/decisions?history={history}"
        async with client.stream("GET", url, headers=headers) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                decision = _parse_sse_line(line)
                if decision is not None:
                    yield decision


def iter_decisions(
    base_url: str, history: int = 0, headers: dict[str, str] | None = None, timeout_s: float | None = None
) -> Iterator[dict[str, Any]]:
    """Follow a router's decision stream (blocking): yields one dict per decision; stops after `timeout_s` idle."""
    import httpx

    with httpx.Client(timeout=httpx.Timeout(10.0, read=timeout_s)) as client:
        url = base_url.rstrip("/") + f"/debug/decisions?history={history}"
        with client.stream("GET", url, headers=headers) as resp:
            resp.raise_for_status()
            try:
                for line in resp.iter_lines():
                    decision = _parse_sse_line(line)
                    if decision is not None:
                        yield decision
            except httpx.ReadTimeout:
                return
