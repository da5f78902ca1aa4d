"""Talking to the model servers: pooled keep-alive connections, streaming passthrough, the P/D prefill step.

The hot path uses a small HTTP/1.1 client on asyncio with httptools (the parser uvicorn uses) instead of a
general-purpose client: the proxy only ever POSTs JSON and relays bytes, and the general client cost more
CPU per request than the rest of the router together. `open_upstream` waits for the first body chunk
before anything is committed to the client, so a pod that dies before its first byte can be retried on
another pod; after that, chunks are passed on as they arrive, without buffering.

Every wait on a pod is bounded (`Timeouts`): a hung pod once held requests for the whole 600 s request
timeout. A streaming answer's headers come before any generation (vLLM and the simulator send them at once),
so they get a short limit; a non-streaming answer's first byte is its last, so it gets the request's limit;
between the chunks of a stream, an idle limit. While waiting, a pod that stops answering its scrapes (the
`alive` hook) is given up on at once. Each attempt's outcome goes to `on_outcome` (the outlier detector).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httptools
import msgspec

from router_lite.failures import Failure, FailureKind
from router_lite.outliers import Outcome

# Statuses that mean "this pod cannot serve now" (not "this request is wrong"): worth another pod.
RETRYABLE_STATUS = frozenset({502, 503, 504})
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "content-type",
    }
)
_RESPONSE_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"server", b"date"})
_HIGH_WATER = 1 << 20  # pause reading a pod when a slow client leaves this much unread
ALIVE_POLL_S = 0.25  # how often a long wait asks whether the pod still answers its scrapes


@dataclass(frozen=True)
class Timeouts:
    """Limits on each wait for a pod, in seconds."""

    connect_s: float = 2.0
    headers_s: float = 10.0  # a streaming request's status line and headers (sent before generating)
    first_byte_s: float = 600.0  # the first body byte: a non-streaming answer arrives whole, so it is long
    idle_s: float = 60.0  # between two chunks of a streamed body

    def __post_init__(self) -> None:
        for name in ("connect_s", "headers_s", "first_byte_s", "idle_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, got {getattr(self, name)}")


OutcomeHook = Callable[[str, Outcome, str], None]  # (pod address, outcome, detail)
AliveHook = Callable[[str], bool]  # pod address -> still answering its scrapes


class _StreamFlag(msgspec.Struct):
    stream: Any = None


_stream_decoder = msgspec.json.Decoder(_StreamFlag)


def is_streaming(content: bytes) -> bool:
    """Whether a JSON request body asks for a stream (decodes only that field)."""
    try:
        return _stream_decoder.decode(content).stream is True
    except (msgspec.DecodeError, RecursionError):
        return False


PREFILL_KV_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


class UpstreamError(Exception):
    """A pod failed before its first response byte (kinds: connect, read, status, timeout, unresponsive).
    `retryable`: another pod may succeed."""

    def __init__(self, kind: str, message: str, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.status = status

    @property
    def failure(self) -> Failure:
        return Failure(FailureKind(self.kind), str(self), self.status)

    @property
    def client_status(self) -> int:
        """What the client gets when no other pod is left to try: 504 for a pod that timed out, 503 for one
        that cannot serve now (another try later may succeed), 502 for anything else."""
        if self.kind in ("timeout", "unresponsive"):
            return 504
        return 503 if self.retryable else 502


class _Conn(asyncio.Protocol):
    """One keep-alive connection to a pod, parsing responses with httptools as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.got_bytes = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = exc
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            self.error = exc or ConnectionResetError("connection closed by the pod")
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # llhttp resets its flags after the message
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.complete = True

    # waiting
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until something arrives (data, completion, close)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races a wake-up,
            # which left scrape tasks running after shutdown cancelled them (the router hung on SIGTERM).
            async with asyncio.timeout(timeout):
                await self._waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) > 1 else (self.chunks[0] if self.chunks else b"")
        self.chunks.clear()
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.resume_reading()
        self.buffered = 0
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None


class Backend:
    """Keep-alive connections to one pod."""

    def __init__(
        self,
        address: str,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_idle: int = 256,
        *,
        timeouts: Timeouts | None = None,
        on_outcome: OutcomeHook | None = None,
        alive: AliveHook | None = None,
    ) -> None:
        self.address = address
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s  # small GETs (scrapes); requests use `timeouts`
        self.timeouts = timeouts or Timeouts(
            connect_s=connect_timeout_s, headers_s=read_timeout_s, first_byte_s=read_timeout_s, idle_s=read_timeout_s
        )
        self.on_outcome = on_outcome
        self.alive = alive
        self.max_idle = max_idle
        self._idle: list[_Conn] = []
        self._host_header = f"host: {address}\r\n".encode("latin-1")

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):  # not wait_for: see _Conn.wait
                _, conn = await loop.create_connection(_Conn, self.host, self.port)
        except asyncio.TimeoutError:
            raise UpstreamError(
                "connect",
                f"pod {self.address} did not accept a connection within {self.connect_timeout_s:g}s",
                retryable=True,
            ) from None
        except OSError as exc:
            raise UpstreamError(
                "connect", f"pod {self.address} unreachable: {exc.strerror or exc}", retryable=True
            ) from None
        return conn  # type: ignore[return-value]

    def release(self, conn: _Conn) -> None:
        if conn.reusable() and len(self._idle) < self.max_idle:
            conn._reset()
            self._idle.append(conn)
        elif conn.transport is not None and not conn.transport.is_closing():
            conn.transport.close()

    def discard(self, conn: _Conn) -> None:
        if conn.transport is not None:
            conn.transport.close()

    def _request_bytes(self, path: str, content: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1\r\n".encode("latin-1"), self._host_header]
        for k, v in headers.items():
            lines.append(f"{k}: {v}\r\n".encode("latin-1"))
        lines.append(f"content-length: {len(content)}\r\n\r\n".encode("latin-1"))
        lines.append(content)
        return b"".join(lines)

    def _outcome(self, outcome: Outcome, detail: str = "") -> None:
        if self.on_outcome is not None:
            self.on_outcome(self.address, outcome, detail)

    async def wait_for(self, conn: _Conn, ready: Callable[[], bool], limit_s: float, what: str) -> None:
        """Wait until `ready()`, a connection error, `limit_s`, or the pod stops answering its scrapes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not ready():
            if conn.error is not None:
                raise conn.error
            left = deadline - loop.time()
            if left <= 0:
                raise UpstreamError("timeout", f"pod {self.address} sent no {what} within {limit_s:g}s", retryable=True)
            if self.alive is not None and not self.alive(self.address):
                raise UpstreamError(
                    "unresponsive", f"pod {self.address} stopped answering while it held this request", retryable=True
                )
            try:
                await conn.wait(min(left, ALIVE_POLL_S) if self.alive is not None else left)
            except asyncio.TimeoutError:
                pass

    async def post(self, path: str, content: bytes, headers: dict[str, str], stream: bool | None = None) -> "Upstream":
        """Send and wait for the first body byte (or the end of an empty body). `stream`: whether the body
        asks for a stream (read from it when None); it decides the headers limit."""
        data = self._request_bytes(path, content, headers)
        t = self.timeouts
        if stream is None:
            stream = is_streaming(content)
        for attempt in range(2):
            reused = False
            conn = None
            while self._idle:
                c = self._idle.pop()
                if not c.closed:
                    conn, reused = c, True
                    break
            if conn is None:
                conn = await self._connect()
            assert conn.transport is not None
            conn.transport.write(data)
            try:
                if stream:
                    await self.wait_for(
                        conn, lambda: conn.headers_done or conn.complete, t.headers_s, "response headers"
                    )
                await self.wait_for(conn, lambda: bool(conn.chunks) or conn.complete, t.first_byte_s, "response")
            except UpstreamError as exc:
                self.discard(conn)
                self._outcome(Outcome.TIMEOUT, str(exc))
                raise
            except (OSError, httptools.HttpParserError) as exc:
                self.discard(conn)
                if reused and not conn.got_bytes and attempt == 0:
                    continue  # the pod had closed this idle connection: one fresh try, not a pod failure
                raise UpstreamError(
                    "read", f"pod {self.address} failed before its first byte: {type(exc).__name__}", retryable=True
                ) from None
            except BaseException:  # cancelled (client gone, shutdown, a cancelled prefill): never leak the connection
                self.discard(conn)
                raise
            status = conn.status
            if status in RETRYABLE_STATUS:
                self._finish_quietly(conn)
                self._outcome(Outcome.UNAVAILABLE if status == 503 else Outcome.ERROR, f"answered {status}")
                raise UpstreamError("status", f"pod {self.address} answered {status}", retryable=True, status=status)
            self._outcome(Outcome.OK, f"answered {status}")  # it answered (a 500 may be this request's doing)
            return Upstream(self, conn)
        raise UpstreamError("read", f"pod {self.address} closed the connection", retryable=True)

    async def get(self, path: str, timeout_s: float) -> tuple[int, bytes]:
        """A small GET (metrics, health) on a pooled connection: (status, whole body)."""
        conn = None
        while self._idle:
            c = self._idle.pop()
            if not c.closed:
                conn = c
                break
        if conn is None:
            conn = await self._connect()
        assert conn.transport is not None
        conn.transport.write(b"GET " + path.encode("latin-1") + b" HTTP/1.1\r\n" + self._host_header + b"\r\n")
        parts = []
        try:
            while not conn.complete:
                if conn.error is not None:
                    raise conn.error
                if conn.chunks:
                    parts.append(conn.take())
                    continue
                await conn.wait(timeout_s)
        except BaseException:
            self.discard(conn)
            raise
        parts.append(conn.take())
        status = conn.status
        self.release(conn)
        return status, b"".join(parts)

    def _finish_quietly(self, conn: _Conn) -> None:
        if conn.complete:
            conn.take()
            self.release(conn)
        else:
            self.discard(conn)

    def close(self) -> None:
        for c in self._idle:
            self.discard(c)
        self._idle.clear()


class Upstream:
    """An open response from a pod whose first body chunk (or whole body) has arrived."""

    def __init__(self, backend: Backend, conn: _Conn) -> None:
        self._backend = backend
        self._conn = conn
        self.status_code = conn.status
        self.first_chunk = conn.take()
        chunked = any(k == b"transfer-encoding" for k, _ in conn.raw_headers)
        # The pod's headers minus hop-by-hop ones; content-length kept only when the body is relayed as is.
        self._headers = [
            (k, v) for k, v in conn.raw_headers if k not in _RESPONSE_DROP and not (chunked and k == b"content-length")
        ]
        self._released = False
        self.complete = conn.complete  # the whole body is in `first_chunk` (a non-streaming answer)
        if conn.complete:
            self._release()

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return list(self._headers)

    @property
    def is_event_stream(self) -> bool:
        return any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in self._headers)

    def abort(self) -> None:
        """Close the pod connection now (shutdown): a reader waiting in `body()` gets a connection error."""
        if not self._released:
            self._released = True
            self._backend.discard(self._conn)

    def headers(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.raw_headers()}

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._backend.release(self._conn)

    async def body(self) -> AsyncIterator[bytes]:
        """The whole body, chunk by chunk as the pod sends it; closes the upstream on error or cancel."""
        conn = self._conn
        try:
            if self.first_chunk:
                yield self.first_chunk
            if self.complete:
                return
            while True:
                if conn.chunks:
                    yield conn.take()
                    continue
                if conn.complete:
                    break
                try:
                    await self._backend.wait_for(
                        conn, lambda: bool(conn.chunks) or conn.complete, self._backend.timeouts.idle_s, "stream data"
                    )
                except UpstreamError as exc:
                    self._backend._outcome(Outcome.TIMEOUT, str(exc))
                    raise
            self._release()
        finally:
            if not self._released:
                self._released = True
                self._backend.discard(conn)

    async def read_all(self) -> bytes:
        return b"".join([c async for c in self.body()])

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._backend.discard(self._conn)


class BackendPool:
    """One `Backend` per pod address for the hot path, and one httpx client for everything else."""

    def __init__(
        self,
        request_timeout_s: float = 600.0,
        connect_timeout_s: float = 2.0,
        *,
        timeouts: Timeouts | None = None,
        on_outcome: OutcomeHook | None = None,
        alive: AliveHook | None = None,
    ) -> None:
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.timeouts = timeouts or Timeouts(
            connect_s=connect_timeout_s,
            first_byte_s=request_timeout_s,
            idle_s=min(60.0, request_timeout_s),
            headers_s=min(10.0, request_timeout_s),
        )
        self.on_outcome = on_outcome
        self.alive = alive
        self._backends: dict[str, Backend] = {}
        self._http: Any = None

    @property
    def http(self) -> Any:
        """An httpx.AsyncClient for the few non-hot calls (imported on first use: it is slow to import)."""
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=self.connect_timeout_s))
        return self._http

    def backend(self, address: str) -> Backend:
        b = self._backends.get(address)
        if b is None:
            b = self._backends[address] = Backend(
                address,
                self.timeouts.connect_s,
                self.request_timeout_s,
                timeouts=self.timeouts,
                on_outcome=self.on_outcome,
                alive=self.alive,
            )
        return b

    def drop(self, address: str) -> None:
        b = self._backends.pop(address, None)
        if b is not None:
            b.close()

    async def aclose(self) -> None:
        for b in self._backends.values():
            b.close()
        self._backends.clear()
        if self._http is not None:
            await self._http.aclose()


# Headers only the router may set toward a pod: they steer where the pod (or llm-d's decode sidecar in front
# of it) pulls KV from or forwards to. Passed through from a client, `x-prefiller-host-port` sent a decode pod
# to any host the client named (a cloud metadata address included).
ROUTER_OWNED_HEADERS = frozenset(
    {
        "x-prefiller-host-port",
        "x-data-parallel-host-port",
        "x-gateway-destination-endpoint",
        "x-gateway-destination-endpoint-served",
    }
)


def is_router_owned(name: str) -> bool:
    """A header a client may not send toward pods (lower-case name)."""
    return name in ROUTER_OWNED_HEADERS or name.startswith("x-llmd-endpoint") or name.startswith("x-llmd-prefill")


def forward_headers(headers: list[tuple[bytes, bytes]], strip_auth: bool) -> dict[str, str]:
    """Client headers worth passing to a pod: no hop-by-hop, no router credentials, none the router owns."""
    out: dict[str, str] = {}
    for k, v in headers:
        name = k.decode("latin-1").lower()
        if name in _HOP_BY_HOP or (strip_auth and name == "authorization") or is_router_owned(name):
            continue
        out[name] = v.decode("latin-1")
    out["content-type"] = "application/json"  # the body was validated as JSON; pods need to be told
    return out


async def open_upstream(
    backend: Backend, path: str, content: bytes, headers: dict[str, str], stream: bool | None = None
) -> Upstream:
    """POST and wait for the first body byte. Raises UpstreamError for failures before that byte. `stream`:
    whether the body asks for a stream, when the caller knows (else it is read from `content`)."""
    return await backend.post(path, content, headers, stream)


class PrefillError(Exception):
    """The prefill step of a P/D request failed: `failure` says how (its message goes into the decision)."""

    def __init__(self, kind: FailureKind, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.failure = Failure(kind, message, status)


def _one_token(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """A copy of `body` asking for one token, not streamed (the legs before the decode)."""
    out = dict(body)
    out["max_tokens"] = 1
    out["stream"] = False
    out.pop("stream_options", None)
    if kind == "chat":
        out["max_completion_tokens"] = 1
    return out


def prefill_body(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The prefill request as llm-d's decode sidecar builds it: one token, no streaming, remote decode."""
    out = _one_token(body, kind)
    out["kv_transfer_params"] = dict(PREFILL_KV_PARAMS)
    return out


def encode_body(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The encode request (E/P/D): the same messages to the encoder pod, one token, no streaming."""
    out = _one_token(body, kind)
    out.pop("kv_transfer_params", None)
    return out


class EncodeError(PrefillError):
    """The encode step of an E/P/D request failed (the target then encodes the items itself)."""


async def run_prefill(
    backend: Backend, path: str, body: dict[str, Any], kind: str, headers: dict[str, str]
) -> dict[str, Any]:
    """Send the prefill; returns the `kv_transfer_params` the prefill pod answered with."""
    return await _run_leg(backend, path, prefill_body(body, kind), headers, "kv_transfer_params", "prefill")


async def run_encode(
    backend: Backend, path: str, body: dict[str, Any], kind: str, headers: dict[str, str]
) -> dict[str, Any]:
    """Send the multimodal items to the encoder pod; returns the `ec_transfer_params` it answered with."""
    return await _run_leg(backend, path, encode_body(body, kind), headers, "ec_transfer_params", "encode")


async def _run_leg(
    backend: Backend, path: str, out: dict[str, Any], headers: dict[str, str], field: str, leg: str
) -> dict[str, Any]:
    """One leg before the decode request (prefill, encode): its answer's `field` object, or the leg's error."""
    error = EncodeError if leg == "encode" else PrefillError
    content = json.dumps(out).encode()
    try:
        up = await backend.post(path, content, headers)
        raw = await up.read_all()
    except UpstreamError as exc:
        if exc.status is not None:
            raise error(FailureKind.STATUS, f"{leg} pod answered {exc.status}", exc.status) from None
        raise error(FailureKind(exc.kind), f"{leg} pod unreachable: {exc}") from None
    except (OSError, asyncio.TimeoutError, httptools.HttpParserError) as exc:
        raise error(FailureKind.READ, f"{leg} pod unreachable: connection broke ({type(exc).__name__})") from None
    if up.status_code != 200:
        raise error(FailureKind.STATUS, f"{leg} pod answered {up.status_code}", up.status_code)
    try:
        params = json.loads(raw).get(field)
    except (ValueError, AttributeError):
        raise error(FailureKind.BAD_RESPONSE, f"{leg} pod answered with a body that is not a JSON object") from None
    if not isinstance(params, dict):
        raise error(FailureKind.BAD_RESPONSE, f"{leg} response carries no {field}")
    return params
