"""Publishes a pod's KV-cache events over ZMQ exactly as vLLM's ZmqEventPublisher puts them on the wire.

One PUB socket per (pod, data-parallel rank). Each engine step's events go out as one message
`[topic, 8-byte big-endian sequence, msgpack KVEventBatch]`; the sequence counts from 0 per publisher.
Like vLLM, the socket binds when the endpoint has a wildcard (`tcp://*:5557`) or is ipc/inproc, and
connects otherwise (so a router can bind one collector endpoint and every pod connects to it).
Sends never block the event loop: a full PUB queue drops, as ZMQ PUB does anyway for slow subscribers.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterable

import msgspec
import zmq

from kvtiers.hashing import to_event_hash
from kvtiers.kvevents import BlockRemoved, BlockStored, EventForm, KVEventBatch, encode_frames

_TCP_RE = re.compile(r"^(tcp://.*):(\d+)$")


def should_bind(endpoint: str) -> bool:
    """vLLM's rule: bind for wildcard, IPv6-any, ipc:// and inproc:// endpoints; connect for a concrete peer."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def offset_endpoint(endpoint: str, offset: int) -> str:
    """The endpoint of pod/rank number `offset`: tcp port + offset (ipc/inproc get a `-offset` suffix)."""
    if offset == 0:
        return endpoint
    m = _TCP_RE.match(endpoint)
    if m:
        return f"{m.group(1)}:{int(m.group(2)) + offset}"
    if endpoint.startswith(("ipc://", "inproc://")):
        return f"{endpoint}-{offset}"
    raise ValueError(
        f"--kv-events-endpoint: cannot derive a per-pod endpoint from {endpoint!r} (expected tcp://HOST:PORT)"
    )


def validate_endpoint(endpoint: str) -> None:
    """One-line error for an endpoint ZMQ would reject later."""
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(
            f"--kv-events-endpoint: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME, got {endpoint!r}"
        )
    if endpoint.startswith("tcp://") and not _TCP_RE.match(endpoint):
        raise ValueError(f"--kv-events-endpoint: missing port in {endpoint!r} (expected tcp://HOST:PORT)")


def render_topic(template: str | None, host: str, port: int, model: str, rank: int = 0, pod: int = 0) -> str:
    """The topic for one pod/rank; default `kv@<host>:<port>@<model>` as llm-d configures vLLM.

    A user template may use `{host}`, `{port}`, `{model}`, `{rank}` and `{pod}`.
    """
    if template is None:
        return f"kv@{host}:{port}@{model}"
    try:
        return template.format(host=host, port=port, model=model, rank=rank, pod=pod)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"--kv-events-topic: bad placeholder in {template!r}: {exc}") from None


def _convert_hash(h: Any, use_int: bool) -> Any:
    if isinstance(h, (bytes, bytearray)):
        return to_event_hash(bytes(h), use_int)
    return h


def convert_event(event: Any, use_int: bool) -> Any:
    """An engine event with its hashes in the wire representation (uint64 or full digest bytes)."""
    if isinstance(event, BlockStored):
        return msgspec.structs.replace(
            event,
            block_hashes=[_convert_hash(h, use_int) for h in event.block_hashes],
            parent_block_hash=_convert_hash(event.parent_block_hash, use_int),
        )
    if isinstance(event, BlockRemoved):
        return msgspec.structs.replace(event, block_hashes=[_convert_hash(h, use_int) for h in event.block_hashes])
    return event


class KVEventPublisher:
    """A ZMQ PUB socket sending one pod/rank's KV event batches in vLLM's wire format."""

    def __init__(
        self,
        endpoint: str,
        topic: str,
        *,
        form: EventForm = "map",
        int_hashes: bool = True,
        data_parallel_rank: int = 0,
        context: zmq.Context | None = None,
        hwm: int = 100_000,
    ) -> None:
        validate_endpoint(endpoint)
        if form not in ("map", "positional"):
            raise ValueError(f"--kv-events-form: expected map or positional, got {form!r}")
        self.endpoint = endpoint
        self.topic = topic
        self.form: EventForm = form
        self.int_hashes = int_hashes
        self.data_parallel_rank = data_parallel_rank
        self.seq = 0
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            if should_bind(endpoint):
                self._sock.bind(endpoint)
            else:
                self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise ValueError(
                f"--kv-events-endpoint: cannot {'bind' if should_bind(endpoint) else 'connect'} {endpoint}: {exc}"
            ) from None

    def publish(self, events: Iterable[Any], ts: float | None = None) -> int | None:
        """Send one batch; returns its sequence number (None when there was nothing to send)."""
        events = [convert_event(e, self.int_hashes) for e in events]
        if not events:
            return None
        batch = KVEventBatch(time.time() if ts is None else ts, events, self.data_parallel_rank)
        seq = self.seq
        self.seq += 1
        # A PUB socket never blocks or raises EAGAIN: past the high-water mark ZMQ drops silently, as for vLLM.
        self._sock.send_multipart(encode_frames(self.topic, seq, batch, self.form), copy=False)
        return seq

    def close(self) -> None:
        self._sock.close(0)
