"""Talking to the model servers: pooled connections, streaming passthrough, and the P/D prefill step.

`open_upstream` sends a request and waits for the first body chunk before anything is committed to the
client, so a pod that dies before its first byte can be retried on another pod; after that, chunks are
passed on as they arrive (`aiter_raw`, no re-encoding, no buffering). One `httpx.AsyncClient` per backend
keeps connections warm.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

# Statuses that mean "this pod cannot serve now" (not "this request is wrong"): worth another pod.
RETRYABLE_STATUS = frozenset({502, 503, 504})
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
)
_RESPONSE_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "server", "date"})

PREFILL_KV_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


class UpstreamError(Exception):
    """A pod failed before its first response byte. `retryable`: another pod may succeed."""

    def __init__(self, kind: str, message: str, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.status = status


class BackendPool:
    """One pooled AsyncClient per backend address."""

    def __init__(self, request_timeout_s: float = 600.0, connect_timeout_s: float = 2.0, max_connections: int = 1024) -> None:
        self._timeout = httpx.Timeout(request_timeout_s, connect=connect_timeout_s)
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=60.0)
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client(self, address: str) -> httpx.AsyncClient:
        c = self._clients.get(address)
        if c is None:
            c = self._clients[address] = httpx.AsyncClient(base_url=f"http://{address}", timeout=self._timeout, limits=self._limits)
        return c

    async def drop(self, address: str) -> None:
        c = self._clients.pop(address, None)
        if c is not None:
            await c.aclose()

    async def aclose(self) -> None:
        for c in list(self._clients.values()):
            await c.aclose()
        self._clients.clear()


def forward_headers(headers: list[tuple[bytes, bytes]], strip_auth: bool) -> dict[str, str]:
    """Client headers worth passing to a pod: no hop-by-hop, no router credentials."""
    out: dict[str, str] = {}
    for k, v in headers:
        name = k.decode("latin-1").lower()
        if name in _HOP_BY_HOP or (strip_auth and name == "authorization"):
            continue
        out[name] = v.decode("latin-1")
    return out


@dataclass
class Upstream:
    """An open upstream response whose first chunk has arrived."""

    response: httpx.Response
    first_chunk: bytes
    _iter: AsyncIterator[bytes]

    @property
    def status_code(self) -> int:
        return self.response.status_code

    def headers(self) -> dict[str, str]:
        return {k: v for k, v in self.response.headers.items() if k.lower() not in _RESPONSE_DROP}

    async def body(self) -> AsyncIterator[bytes]:
        """The whole body, chunk by chunk as the pod sends it; closes the upstream when done or cancelled."""
        try:
            if self.first_chunk:
                yield self.first_chunk
            async for chunk in self._iter:
                yield chunk
        finally:
            await self.response.aclose()

    async def read_all(self) -> bytes:
        parts = [c async for c in self.body()]
        return b"".join(parts)

    async def aclose(self) -> None:
        await self.response.aclose()


async def open_upstream(client: httpx.AsyncClient, path: str, content: bytes, headers: dict[str, str]) -> Upstream:
    """POST and wait for the first body byte. Raises UpstreamError for failures before that byte."""
    request = client.build_request("POST", path, content=content, headers=headers)
    try:
        response = await client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        raise UpstreamError("timeout", f"pod timed out before responding: {type(exc).__name__}", retryable=isinstance(exc, httpx.ConnectTimeout)) from None
    except httpx.TransportError as exc:
        raise UpstreamError("connect", f"pod unreachable: {type(exc).__name__}: {exc}", retryable=True) from None
    if response.status_code in RETRYABLE_STATUS:
        await response.aclose()
        raise UpstreamError("status", f"pod answered {response.status_code}", retryable=True, status=response.status_code)
    it = response.aiter_raw()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = b""
    except httpx.TimeoutException as exc:
        await response.aclose()
        raise UpstreamError("timeout", f"pod timed out before its first byte: {type(exc).__name__}", retryable=False) from None
    except httpx.TransportError as exc:
        await response.aclose()
        raise UpstreamError("read", f"pod failed before its first byte: {type(exc).__name__}", retryable=True) from None
    return Upstream(response, first, it)


class PrefillError(Exception):
    """The prefill step of a P/D request failed; the message says why (it goes into the decision)."""


def prefill_body(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The prefill request as llm-d's decode sidecar builds it: one token, no streaming, remote decode."""
    out = dict(body)
    out["kv_transfer_params"] = dict(PREFILL_KV_PARAMS)
    out["max_tokens"] = 1
    out["stream"] = False
    out.pop("stream_options", None)
    if kind == "chat":
        out["max_completion_tokens"] = 1
    return out


async def run_prefill(client: httpx.AsyncClient, path: str, body: dict[str, Any], kind: str, headers: dict[str, str]) -> dict[str, Any]:
    """Send the prefill; returns the `kv_transfer_params` the prefill pod answered with."""
    content = json.dumps(prefill_body(body, kind)).encode()
    try:
        resp = await client.post(path, content=content, headers=headers)
    except httpx.TransportError as exc:
        raise PrefillError(f"prefill pod unreachable: {type(exc).__name__}") from None
    if resp.status_code != 200:
        raise PrefillError(f"prefill pod answered {resp.status_code}")
    try:
        params = resp.json().get("kv_transfer_params")
    except (ValueError, AttributeError):
        raise PrefillError("prefill pod answered with a body that is not a JSON object") from None
    if not isinstance(params, dict):
        raise PrefillError("prefill response carries no kv_transfer_params")
    return params
