"""Feeding the precise prefix index from every pod's ZMQ KV events (vLLM's wire format, both forms).

A pod either binds its PUB socket (vLLM's default `tcp://*:5557`) and we connect a SUB to it, or it connects
to us and we bind a SUB. Endpoints that share one ZMQ address share one socket; messages are routed to
their endpoint by topic (`kv@<host>:<port>@<model>`, as llm-d configures vLLM) and data-parallel rank. A
message that cannot be decoded or applied is counted and logged, never fatal: one bad pod must not blind
the router to the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from kvtiers.hashing import to_event_hash
from kvtiers.kvevents import MAX_PAYLOAD_BYTES, BlockRemoved, BlockStored, KVEventBatch, decode_frames
from router_lite.aio import cancel_and_wait
from router_lite.datalayer.discovery import EndpointSpec

log = logging.getLogger("router_lite.kv_subscriber")


def connect_address(spec: EndpointSpec) -> str:
    """The address to connect to for a pod that binds: a wildcard host becomes the pod's host."""
    assert spec.kv_events is not None
    url = spec.kv_events.endpoint
    host = spec.address.rpartition(":")[0]
    for wildcard in ("*", "0.0.0.0", "[::]"):
        url = url.replace(f"://{wildcard}:", f"://{host}:")
    return url


def bind_address(spec: EndpointSpec) -> str:
    """The address to bind for pods that connect (a concrete host stays; ZMQ binds it)."""
    assert spec.kv_events is not None
    return spec.kv_events.endpoint


def _to_uint64(h: Any) -> Any:
    return to_event_hash(bytes(h), True) if isinstance(h, (bytes, bytearray)) else h


def normalise_batch(batch: KVEventBatch) -> KVEventBatch:
    """Full-digest hashes (`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`) become the uint64 the router hashes to."""
    changed = False
    events = []
    for ev in batch.events:
        if (
            isinstance(ev, (BlockStored, BlockRemoved))
            and ev.block_hashes
            and isinstance(ev.block_hashes[0], (bytes, bytearray))
        ):
            changed = True
            if isinstance(ev, BlockStored):
                ev = msgspec.structs.replace(
                    ev,
                    block_hashes=[_to_uint64(h) for h in ev.block_hashes],
                    parent_block_hash=_to_uint64(ev.parent_block_hash),
                )
            else:
                ev = msgspec.structs.replace(ev, block_hashes=[_to_uint64(h) for h in ev.block_hashes])
        events.append(ev)
    return KVEventBatch(batch.ts, events, batch.data_parallel_rank) if changed else batch


@dataclass
class RouteStats:
    batches: int = 0
    events: int = 0
    errors: int = 0
    restarts: int = 0
    last_seq: int | None = None
    last_at: float = 0.0


@dataclass(eq=False)
class _Group:
    """One SUB socket (one ZMQ address) and the endpoints whose events arrive on it."""

    url: str
    bind: bool
    socket: zmq.asyncio.Socket
    routes: dict[str, EndpointSpec] = field(default_factory=dict)  # endpoint key -> spec
    topics: set[bytes] = field(default_factory=set)
    task: asyncio.Task | None = None
    decode_errors: int = 0
    unrouted: int = 0
    foreign_rank: int = 0


class KVEventSubscriber:
    """SUB sockets for every endpoint with `kvEvents`; applies each batch with `apply(key, seq, batch)`."""

    def __init__(
        self,
        apply: Callable[[str, int, KVEventBatch], Any],
        metrics: Any = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self._apply = apply
        self.metrics = metrics
        self._ctx = context or zmq.asyncio.Context.instance()
        self._groups: dict[tuple[str, bool], _Group] = {}
        self.stats: dict[str, RouteStats] = {}
        self.errors = 0
        self._running = False
        self._last_log = 0.0

    # -- membership ----------------------------------------------------------------------------------
    def on_membership(self, added: list[EndpointSpec], removed: list[EndpointSpec]) -> None:
        """DataLayer listener: follow endpoints as discovery adds and removes them."""
        for spec in removed:
            self.remove(spec)
        for spec in added:
            self.add(spec)

    def add(self, spec: EndpointSpec) -> None:
        if spec.kv_events is None:
            return
        bind = spec.kv_events.bind
        url = bind_address(spec) if bind else connect_address(spec)
        gk = (url, bind)
        group = self._groups.get(gk)
        if group is None:
            sock = self._ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_PAYLOAD_BYTES + 65536)  # ZMQ drops the peer before allocating more
            try:
                if bind:
                    sock.bind(url)
                else:
                    sock.connect(url)
            except zmq.ZMQError as exc:
                sock.close(0)
                self.errors += 1
                log.error("kv events for %s: cannot %s %s: %s", spec.key, "bind" if bind else "connect", url, exc)
                return
            group = self._groups[gk] = _Group(url=url, bind=bind, socket=sock)
            if self._running:
                group.task = asyncio.get_running_loop().create_task(self._recv_loop(group), name=f"kv-sub-{url}")
        group.routes[spec.key] = spec
        self.stats.setdefault(spec.key, RouteStats())
        self._resubscribe(group)

    def remove(self, spec: EndpointSpec) -> None:
        self.stats.pop(spec.key, None)
        for gk, group in list(self._groups.items()):
            if group.routes.pop(spec.key, None) is None:
                continue
            if not group.routes:
                if group.task:
                    group.task.cancel()
                group.socket.close(0)
                del self._groups[gk]
            else:
                self._resubscribe(group)

    def _resubscribe(self, group: _Group) -> None:
        wanted = {s.kv_events.topic.encode() for s in group.routes.values() if s.kv_events}
        if b"" in wanted:
            wanted = {b""}
        for t in group.topics - wanted:
            group.socket.setsockopt(zmq.UNSUBSCRIBE, t)
        for t in wanted - group.topics:
            group.socket.setsockopt(zmq.SUBSCRIBE, t)
        group.topics = wanted

    # -- running -------------------------------------------------------------------------------------
    async def start(self, specs: list[EndpointSpec] | None = None) -> None:
        self._running = True
        for spec in specs or []:
            self.add(spec)
        loop = asyncio.get_running_loop()
        for group in self._groups.values():
            if group.task is None:
                group.task = loop.create_task(self._recv_loop(group), name=f"kv-sub-{group.url}")

    async def stop(self, timeout_s: float = 1.0) -> None:
        """Cancel the receive loops (bounded wait) and close every socket."""
        self._running = False
        await cancel_and_wait([g.task for g in self._groups.values() if g.task], timeout_s, "KV event receive")
        for g in self._groups.values():
            g.socket.close(0)
        self._groups.clear()

    def _route(self, group: _Group, topic: str, batch: KVEventBatch) -> tuple[EndpointSpec | None, str]:
        """(spec, key to apply under) for one message; the index adds the batch's DP rank to the key's port."""
        routes = group.routes
        if len(routes) == 1:
            spec = next(iter(routes.values()))
        else:
            matches = [s for s in routes.values() if s.kv_events and s.kv_events.topic == topic]
            if not matches:
                matches = [s for s in routes.values() if f"@{s.address}@" in topic or topic.endswith(f"@{s.address}")]
            if not matches:  # llm-d's topics name the pod IP only: kv@<pod-ip>@<model>
                matches = [s for s in routes.values() if f"@{s.address.rpartition(':')[0]}@" in topic]
            if len(matches) > 1 and batch.data_parallel_rank is not None:
                matches = [s for s in matches if (s.dp_rank or 0) == batch.data_parallel_rank] or matches
            spec = matches[0] if matches else None
        if spec is None:
            return None, ""
        key = spec.key
        if spec.dp_rank and batch.data_parallel_rank is not None:
            host, _, port = key.rpartition(":")
            key = f"{host}:{int(port) - spec.dp_rank}"  # the pod's base port; the index adds the rank
        return spec, key

    def handle(self, group: _Group, frames: list[bytes]) -> None:
        """Decode, route and apply one message; every failure is counted, none propagates."""
        try:
            topic, seq, batch = decode_frames(frames)
        except Exception as exc:  # any frame a publisher can send, however malformed, is one counted error
            group.decode_errors += 1
            self._error(None, f"undecodable KV event message on {group.url}: {type(exc).__name__}: {exc}")
            return
        spec, key = self._route(group, topic, batch)
        if spec is None:
            group.unrouted += 1
            self._error(None, f"KV events with unknown topic {topic!r} on {group.url}")
            return
        claimed = batch.data_parallel_rank
        if claimed is not None and claimed != (spec.dp_rank or 0):
            # A publisher speaks only for the endpoint it is bound to: a frame on one pod's socket claiming
            # another rank once purged a different pod's entries.
            group.foreign_rank += 1
            self.stats.setdefault(spec.key, RouteStats()).errors += 1
            self._error(
                spec.key,
                f"KV events on {group.url} for {spec.key} claim data-parallel rank {claimed}, "
                f"expected {spec.dp_rank or 0}: dropped",
            )
            return
        st = self.stats.setdefault(spec.key, RouteStats())
        try:
            outcome = self._apply(key, seq, normalise_batch(batch))
        except Exception as exc:
            st.errors += 1
            self._error(spec.key, f"applying KV events from {spec.key}: {type(exc).__name__}: {exc}")
            return
        st.batches += 1
        st.events += len(batch.events)
        st.last_seq = seq
        st.last_at = time.monotonic()
        if outcome == "restart":
            st.restarts += 1
            log.info(
                "KV events from %s: sequence went back to %d, pod restarted; its blocks were dropped", spec.key, seq
            )
        if self.metrics is not None:
            self.metrics.kv_events.labels(spec.key).inc()

    def _error(self, key: str | None, message: str) -> None:
        self.errors += 1
        if self.metrics is not None:
            self.metrics.kv_event_errors.labels(key or "unknown").inc()
        now = time.monotonic()
        if now - self._last_log > 1.0:  # at most one line a second
            self._last_log = now
            log.warning("%s", message)

    async def _recv_loop(self, group: _Group) -> None:
        sock = group.socket
        while True:
            try:
                frames = await sock.recv_multipart()
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM or sock.closed:
                    return
                self._error(None, f"ZMQ receive on {group.url}: {exc}")
                await asyncio.sleep(0.1)
                continue
            try:
                self.handle(group, frames)
            except Exception as exc:  # the loop outlives any one message: one bad frame must not blind the router
                self._error(None, f"KV events on {group.url}: {type(exc).__name__}: {exc}")

    def snapshot(self) -> dict[str, Any]:
        return {
            "sockets": [
                {
                    "url": g.url,
                    "bind": g.bind,
                    "endpoints": sorted(g.routes),
                    "decode_errors": g.decode_errors,
                    "unrouted": g.unrouted,
                    "foreign_rank": g.foreign_rank,
                    "receiving": g.task is not None and not g.task.done(),
                }
                for g in self._groups.values()
            ],
            "per_endpoint": {
                k: {
                    "batches": s.batches,
                    "events": s.events,
                    "errors": s.errors,
                    "restarts": s.restarts,
                    "last_seq": s.last_seq,
                }
                for k, s in self.stats.items()
            },
            "errors": self.errors,
        }
