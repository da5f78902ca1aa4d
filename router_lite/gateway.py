"""The OpenAI-compatible gateway: parse, admit, tokenize, schedule, proxy (with retry and P/D), publish.

Every answer the router itself gives is an OpenAI error object; every proxied answer carries
`x-llmd-endpoint` (and `x-llmd-prefill-endpoint` for P/D). Nothing a client sends can take the router down:
each handler turns unexpected failures into a 500 error object and a counted error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from router_lite import passthrough
from router_lite.admin_guard import ADMIN_DISABLED_MESSAGE, Refusal, check_admin_change, check_read, is_loopback  # noqa: F401 (re-exported)
from router_lite.admission import Rejected
from router_lite.app_state import RouterSettings, RouterState, config_from_text, named_config
from router_lite.config import ConfigError
from router_lite.director import Flow, NoEndpoint, Shed
from router_lite.lora import adapter_of
from router_lite.proxy import (
    EncodeError,
    PrefillError,
    Upstream,
    UpstreamError,
    forward_headers,
    is_router_owned,
    open_upstream,
    run_encode,
    run_prefill,
)
from router_lite.tokenization import chat_text, completion_prompt, multimodal_parts
from router_lite.types import LLMRequest

log = logging.getLogger("router_lite.gateway")

ENDPOINT_HEADER = "x-llmd-endpoint"
PREFILL_HEADER = "x-llmd-prefill-endpoint"
PRIORITY_HEADER = "x-llmd-priority"
_ENDPOINT_B = ENDPOINT_HEADER.encode()
_PREFILL_B = PREFILL_HEADER.encode()
_json_decoder = msgspec.json.Decoder()
MAX_N = 128  # choices per prompt, as the pods bound it: checked here too so a huge `n` never reaches a pod
BROKEN_SSE_ERROR = (
    b'data: {"error": {"message": "the model server failed mid-stream: the response is incomplete", '
    b'"type": "bad_gateway", "param": null, "code": 502}}\n\n'
)
SHUTDOWN_SSE_ERROR = (
    b'data: {"error": {"message": "the router is shutting down: stream cut before the model server finished", '
    b'"type": "service_unavailable", "param": null, "code": 503}}\n\n'
)


class ClientGone(Exception):
    """The client disconnected while the router waited for the pod."""


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, work: Any) -> Any:
    """`await work`, unless the client disconnects first: then `work` is cancelled and ClientGone raised."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except BaseException:  # noqa: BLE001 - cancelled as intended, or failed meanwhile: the client is gone
            pass
        raise ClientGone
    finally:
        watcher.cancel()


class ClientError(Exception):
    """A request the router refuses: becomes an OpenAI error object with this status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.headers = headers or {}


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
    500: "internal_error",
    502: "bad_gateway",
    504: "timeout",
}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error": {"message": message, "type": _ERROR_TYPES.get(status, "error"), "param": param, "code": code or status}
    }
    return JSONResponse(body, status_code=status, headers=headers)


def admin_locked(settings: RouterSettings) -> bool:
    """Changing the router's config is refused when the router has no key to check (any target, any bind)."""
    return not (settings.admin_key or settings.api_key)


ADMIN_LOCKED_MESSAGE = ADMIN_DISABLED_MESSAGE


class Gateway:
    """HTTP handlers over one RouterState."""

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.s = state.settings
        self._models_cache: tuple[float, list[dict[str, Any]]] | None = None
        self._admin_key = self.s.admin_key or self.s.api_key

    # -- access: one check per route, by the route's policy ------------------------------------------------
    def guarded(self, handler: Any, policy: str) -> Any:
        """`handler` behind its access policy: "api" (the API key, when one is set), "read" (debug and config
        reads: the API key, and a loopback Host on a loopback bind) or "admin" (config changes: see admin_guard)."""

        async def run(request: Request) -> Response:
            refusal = self._refusal(request, policy)
            if refusal is None:
                return await handler(request)
            if policy == "api":
                self.state.metrics.requests.labels(request.url.path, str(refusal.status)).inc()
                self.state.metrics.request_failed(None, refusal.code)
            return _refused(refusal)

        return run

    def _refusal(self, request: Request, policy: str) -> Refusal | None:
        if policy == "admin":
            return check_admin_change(request.headers, self.s.host, self._admin_key)  # type: ignore[arg-type]
        if policy == "read" and (refusal := check_read(request.headers, self.s.host)) is not None:  # type: ignore[arg-type]
            return refusal
        key = self.s.api_key
        if key and request.headers.get("authorization", "") != f"Bearer {key}":
            return Refusal(401, "missing or invalid API key (Authorization: Bearer ...)", "invalid_api_key")
        return None

    async def _read_body(self, request: Request) -> bytes:
        limit = self.s.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise ClientError(
                        413,
                        f"request body of {declared} bytes is over the limit of {limit} bytes",
                        code="body_too_large",
                    )
            except ValueError:
                raise ClientError(400, "invalid Content-Length header", code="invalid_header") from None
        chunks = []
        size = 0
        idle = self.s.client_body_timeout_s
        stream = request.stream().__aiter__()
        while True:
            try:
                # A client that sends its body slowly (or stops) once held a request slot for ever (slowloris).
                async with asyncio.timeout(idle):
                    chunk = await stream.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise ClientError(
                    408, f"the request body stalled: nothing arrived for {idle:g}s", code="body_timeout"
                ) from None
            size += len(chunk)
            if size > limit:
                raise ClientError(413, f"request body is over the limit of {limit} bytes", code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, raw: bytes, kind: str) -> dict[str, Any]:
        if not raw.strip():
            raise ClientError(400, "request body is empty; expected a JSON object", code="invalid_json")
        try:
            body = _json_decoder.decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:  # msgspec raises RecursionError on hostile nesting
            raise ClientError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ClientError(
                400, f"request body must be a JSON object, got {type(body).__name__}", code="invalid_json"
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ClientError(
                400, "'model' is required and must be a non-empty string", param="model", code="missing_model"
            )
        if kind == "completions":
            if "prompt" not in body:
                raise ClientError(400, "'prompt' is required", param="prompt", code="missing_prompt")
            if completion_prompt(body["prompt"]) is None:
                raise ClientError(
                    400,
                    "'prompt' must be a string, a list of strings, or token ids",
                    param="prompt",
                    code="invalid_prompt",
                )
        else:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise ClientError(
                    400,
                    "'messages' is required and must be a non-empty list",
                    param="messages",
                    code="missing_messages",
                )
            for i, m in enumerate(msgs):
                if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                    raise ClientError(
                        400,
                        f"messages[{i}] must be an object with a string 'role'",
                        param="messages",
                        code="invalid_messages",
                    )
        n = body.get("n", 1)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N):
            raise ClientError(
                400, f"'n' must be an integer between 1 and {MAX_N}, got {str(n)[:40]}", param="n", code="invalid_n"
            )
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            raise ClientError(400, "'stream' must be a boolean", param="stream", code="invalid_stream")
        return body

    def _strip_client_kv_transfer(self, body: dict[str, Any], raw: bytes) -> bytes:
        """Drop a client's `kv_transfer_params`: they name hosts a pod pulls KV from (`remote_host`), and only
        the router's P/D step may set them. Returns the body to forward."""
        if "kv_transfer_params" not in body:
            return raw
        del body["kv_transfer_params"]
        self.state.metrics.errors.labels("client_kv_transfer_params_dropped").inc()
        return json.dumps(body).encode()

    @staticmethod
    def _with_pod_priority(body: dict[str, Any], raw: bytes, priority: int) -> bytes:
        """The body to forward, carrying the request's priority as vLLM's `priority` field, which pods started
        with `--scheduling-policy priority` serve (the others ignore it). Objectives count up (critical 1,
        sheddable -1), vLLM counts down (lower first): negated. The router owns the field: a client's own
        value is replaced, else it could jump the queue of every pod past its objective."""
        want = -priority
        if body.get("priority", 0) == want:
            return raw
        if want == 0:
            del body["priority"]
        else:
            body["priority"] = want
        return json.dumps(body).encode()

    def _priority(self, request: Request, model: str) -> int:
        raw = request.headers.get(PRIORITY_HEADER)
        if raw is not None:
            try:
                return int(raw)
            except ValueError:
                raise ClientError(
                    400,
                    f"header {PRIORITY_HEADER} must be an integer, got {raw!r}",
                    param=PRIORITY_HEADER,
                    code="invalid_priority",
                ) from None
        objective = request.headers.get("x-gateway-inference-objective") or model
        return self.s.objectives.get(objective, 0)

    def _llm_request(self, request: Request, body: dict[str, Any], kind: str, priority: int) -> LLMRequest:
        headers = {
            k.lower(): v
            for k, v in request.headers.items()
            if k.lower() not in ("authorization", "cookie") and not is_router_owned(k.lower())
        }
        # The router's own id keys everything inside (active requests, P/D, decisions): two clients sending
        # the same x-request-id must not share a slot. The client's id is forwarded and recorded.
        rid = uuid.uuid4().hex
        if kind == "completions":
            prompt = completion_prompt(body.get("prompt"))
            text = prompt if isinstance(prompt, str) else None
            ids = prompt if isinstance(prompt, list) else None
        else:
            text, ids = chat_text(body["messages"]), None
        salt = body.get("cache_salt")
        return LLMRequest(
            request_id=rid,
            model=body["model"],
            prompt_token_ids=ids,
            prompt_text=text,
            headers=headers,
            priority=priority,
            session_id=headers.get("x-session-id"),
            cache_salt=salt if isinstance(salt, str) else None,
            client_request_id=headers.get("x-request-id") or None,
            lora_name=adapter_of(body["model"], self.state.datalayer.endpoints()),
            multimodal=multimodal_parts(body.get("messages")) if kind == "chat" else 0,
        )

    # -- routes forwarded as they are (router_lite.passthrough) ----------------------------------------
    async def passthrough(self, request: Request) -> Response:
        path = request.url.path
        m = self.state.metrics
        try:
            raw = await self._read_body(request)
            try:
                body = _json_decoder.decode(raw) if raw.strip() else None
            except (msgspec.DecodeError, RecursionError):
                body = None
            if not isinstance(body, dict):
                raise ClientError(400, "request body must be a JSON object", code="invalid_json")
            return await self._forward(request, path, raw, body)
        except ClientError as exc:
            m.requests.labels(path, str(exc.status)).inc()
            return error_response(exc.status, str(exc), exc.param, exc.code, exc.headers)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as exc:  # the router never dies on a request
            log.exception("pass-through %s failed", path)
            m.errors.labels("internal").inc()
            return error_response(500, f"router error: {type(exc).__name__}", code="internal_error")

    async def _forward(self, request: Request, path: str, raw: bytes, body: dict[str, Any]) -> Response:
        """Generative pass-through routes (/v1/responses) go through the request flow; the rest (tokenize,
        embeddings, render) to the endpoint with the fewest requests in flight, once."""
        st = self.state
        base = forward_headers(request.headers.raw, strip_auth=bool(self.s.api_key))
        if not (path in passthrough.GENERATIVE and isinstance(body.get("model"), str)):
            candidates = st.datalayer.candidates()
            if not candidates:
                raise ClientError(
                    503,
                    "no healthy model server endpoint is available",
                    code="no_healthy_endpoint",
                    headers={"Retry-After": "1"},
                )
            target = min(candidates, key=lambda e: st.inflight.load(e.key).requests)
            try:
                upstream = await open_upstream(st.pool.backend(target.key), path, raw, base)
            except UpstreamError as exc:
                if exc.failure.kind.pod_down:
                    st.datalayer.report_failure(target.key, str(exc))
                raise ClientError(
                    exc.client_status, f"model server failed before responding: {exc}", code="upstream_error"
                ) from None
            st.metrics.requests.labels(path, str(upstream.status_code)).inc()
            if upstream.complete:
                return _whole_response(upstream, [(_ENDPOINT_B, target.key.encode())])
            resp = ProxiedStream(upstream.body(), upstream.status_code, upstream.abort)
            resp.raw_headers = upstream.raw_headers() + [(_ENDPOINT_B, target.key.encode())]
            return resp
        headers_in = {k.lower(): v for k, v in request.headers.items() if k.lower() not in ("authorization", "cookie")}
        req = LLMRequest(
            uuid.uuid4().hex, body["model"], prompt_text=passthrough.responses_text(body), headers=headers_in
        )
        flow = self._start(req)
        upstream = await self._dispatch(flow, request, path, raw, base, wait_for_client=not body.get("stream"))
        if isinstance(upstream, Response):
            return upstream
        st.metrics.requests.labels(path, str(upstream.status_code)).inc()
        ours = [(_ENDPOINT_B, flow.target.key.encode())]
        if upstream.complete:
            st.director.finished(flow)
            return _whole_response(upstream, ours)
        director = st.director

        def end() -> None:  # once, however the stream ends (ProxiedStream runs it even if never started)
            upstream.abort()
            director.finished(flow)

        async def relay():
            first = True
            try:
                async for chunk in upstream.body():
                    if first and chunk:
                        first = False
                        director.first_token(flow)
                    yield chunk
            finally:
                end()

        resp = ProxiedStream(relay(), upstream.status_code, end)
        resp.raw_headers = upstream.raw_headers() + ours
        return resp

    def _start(self, req: LLMRequest) -> Flow:
        """The director's start over the healthy endpoints, its refusals as the client will read them."""
        try:
            return self.state.director.start(req, self.state.datalayer.candidates())
        except NoEndpoint as exc:
            raise ClientError(503, str(exc), code=exc.code, headers={"Retry-After": "1"}) from None
        except Shed as exc:
            raise ClientError(429, str(exc), code="slo_unattainable", headers={"Retry-After": "1"}) from None

    async def _dispatch(
        self, flow: Flow, request: Request, path: str, content: bytes, base: dict[str, str], wait_for_client: bool
    ) -> Upstream | Response:
        """Send to the flow's target, retrying on the next candidates as the director says; the pod's open
        response, or a 499 when the client left first. Gives up with a ClientError."""
        st, director = self.state, self.state.director
        while True:
            try:
                opening = open_upstream(
                    st.pool.backend(flow.target.key),
                    path,
                    content,
                    {**base, **flow.headers},
                    stream=not wait_for_client,
                )
                # A non-streaming answer's first byte is its last: without this, a client that left kept the
                # pod generating for nobody. Cancelling the post closes the connection; the pod aborts on that.
                upstream = await (_unless_client_leaves(request, opening) if wait_for_client else opening)
                break
            except ClientGone:
                director.finished(flow)
                st.metrics.errors.labels("client_gone").inc()
                st.metrics.requests.labels(path, "499").inc()
                return Response(status_code=499)
            except UpstreamError as exc:
                if director.dispatch_failed(flow, exc.failure) is None:
                    st.hub.publish(director.decision(flow, exc.status or 502, None))
                    raise ClientError(
                        exc.client_status, f"model server failed before responding: {exc}", code="upstream_error"
                    ) from None
            except BaseException:
                director.finished(flow)
                raise
        director.dispatched(flow)
        st.hub.publish(director.decision(flow, upstream.status_code, flow.target.key))
        return upstream

    # -- OpenAI routes -----------------------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completions", "/v1/completions")

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, "chat", "/v1/chat/completions")

    async def _generate(self, request: Request, kind: str, path: str) -> Response:
        m = self.state.metrics
        t0 = time.perf_counter()
        req: LLMRequest | None = None
        try:
            raw = await self._read_body(request)
            body = self._parse(raw, kind)
            raw = self._strip_client_kv_transfer(body, raw)
            priority = self._priority(request, body["model"])
            raw = self._with_pod_priority(body, raw, priority)
            req = self._llm_request(request, body, kind, priority)
            m.request_received(req, len(raw))
            admission = self.state.admission
            ticket = None
            if admission is not None:
                try:
                    ticket = await admission.admit(req, self.state.datalayer.candidates)
                except Rejected as exc:
                    raise ClientError(
                        429, str(exc), code="saturated", headers={"Retry-After": str(exc.retry_after_s)}
                    ) from None
            try:
                resp = await self._route(request, req, body, raw, kind, path, t0)
            except BaseException:
                if ticket is not None:
                    ticket.release()
                raise
            if ticket is not None:
                resp = _release_after(resp, ticket)
            return resp
        except ClientError as exc:
            m.requests.labels(path, str(exc.status)).inc()
            m.request_failed(req, exc.code or str(exc.status))
            if exc.status >= 500:
                m.errors.labels("no_endpoint" if exc.status == 503 else "upstream").inc()
            return error_response(exc.status, str(exc), exc.param, exc.code, exc.headers)
        except ClientDisconnect:  # the client left while sending its body: nothing failed here
            m.requests.labels(path, "499").inc()
            return Response(status_code=499)
        except Exception as exc:  # the router never dies on a request
            log.exception("request failed")
            m.errors.labels("internal").inc()
            m.requests.labels(path, "500").inc()
            m.request_failed(req, "internal_error")
            return error_response(500, f"router error: {type(exc).__name__}", code="internal_error")

    async def _route(
        self, request: Request, req: LLMRequest, body: dict[str, Any], raw: bytes, kind: str, path: str, t0: float
    ) -> Response:
        """The director's flow over HTTP: P/D prefill leg, dispatch with retry, then the response."""
        st = self.state
        m = st.metrics
        if st.needs_tokens() and req.block_hashes is None:
            await st.request_tokenizer.prepare(req, kind, body)
        director = st.director
        flow = self._start(req)
        base = forward_headers(request.headers.raw, strip_auth=bool(self.s.api_key))
        wire_id = req.client_request_id or req.request_id
        base["x-request-id"] = wire_id
        content = raw
        if flow.encode is not None:  # E/P/D: the encoder pod first; later legs pull its embeddings
            t_enc = time.perf_counter()
            failure = None
            try:
                ec = await run_encode(st.pool.backend(flow.encode.key), path, body, kind, base)
                body = {**body, "ec_transfer_params": ec}
                content = json.dumps(body).encode()
            except EncodeError as exc:
                failure = exc.failure
            except BaseException:  # cancelled (client gone)
                director.finished(flow)
                raise
            director.encode_done(flow, time.perf_counter() - t_enc, failure)
        if flow.prefill is not None:
            failure = None
            try:
                params = await run_prefill(st.pool.backend(flow.prefill.key), path, body, kind, base)
                content = json.dumps({**body, "kv_transfer_params": params}).encode()
            except PrefillError as exc:
                failure = exc.failure
            except BaseException:  # cancelled (client gone): neither pod holds it any longer
                director.finished(flow)
                raise
            director.prefill_done(flow, failure)
        upstream = await self._dispatch(flow, request, path, content, base, wait_for_client=not body.get("stream"))
        if isinstance(upstream, Response):
            return upstream
        target = flow.target
        ours = [(_ENDPOINT_B, target.key.encode()), (b"x-request-id", wire_id.encode("latin-1"))]
        if flow.prefill is not None:
            ours.append((_PREFILL_B, flow.prefill.key.encode()))
        m.requests.labels(path, str(upstream.status_code)).inc()
        m.first_byte(req, time.perf_counter() - t0)
        if upstream.complete:  # a non-streaming answer arrived whole: no relay task needed
            m.completed(req, time.perf_counter() - t0, len(upstream.first_chunk), upstream.first_chunk[-4096:])
            director.finished(flow)
            return _whole_response(upstream, ours)
        end = _StreamEnd(st, upstream, flow, t0)
        resp = ProxiedStream(self._relay(upstream, flow, end), upstream.status_code, end)
        resp.raw_headers = upstream.raw_headers() + ours
        return resp

    async def _relay(self, upstream: Upstream, flow: Flow, end: "_StreamEnd"):
        """Relay the stream; `end` runs when it ends (and again, harmlessly, when the response closes)."""
        st = self.state
        target = flow.target
        first = True
        try:
            async for chunk in upstream.body():
                if first and chunk:
                    first = False
                    st.director.first_token(flow)  # its prefill is over: the load moves to decode
                end.events += chunk.count(b"data: ")  # ~one token per SSE event (less [DONE]): TPOT samples
                end.sent += len(chunk)
                end.tail = (end.tail + chunk)[-4096:]  # the usage object (output tokens) is at the end
                yield chunk
        except Exception as exc:  # the pod died mid-stream, or shutdown cut it: nothing to retry
            if st.stopping:
                st.metrics.errors.labels("shutdown_cut").inc()
                log.warning(
                    "shutdown: cut the stream from %s (request %s) after the grace period",
                    target.key,
                    flow.request.request_id,
                )
                if upstream.is_event_stream:  # say so in-band: an OpenAI client raises it instead of a silent end
                    yield SHUTDOWN_SSE_ERROR
            else:
                st.metrics.errors.labels("stream_broken").inc()
                log.warning("stream from %s broke: %s", target.key, type(exc).__name__)
                if upstream.is_event_stream:  # a cut stream must not read as a clean end without [DONE]
                    yield BROKEN_SSE_ERROR
        finally:
            end()

    # -- other routes ------------------------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        now = time.monotonic()
        if self._models_cache is None or now - self._models_cache[0] > 2.0:
            eps = self.state.datalayer.candidates()

            async def fetch(key: str) -> list[dict[str, Any]]:
                try:
                    r = await self.state.pool.http.get(f"http://{key}/v1/models", timeout=2.0)
                    data = r.json().get("data", [])
                    return [d for d in data if isinstance(d, dict) and "id" in d]
                except Exception:
                    return []

            lists = await asyncio.gather(*(fetch(e.key) for e in eps))
            seen: dict[str, dict[str, Any]] = {}
            for items in lists:
                for d in items:
                    seen.setdefault(d["id"], d)
            self._models_cache = (now, list(seen.values()))
        return JSONResponse({"object": "list", "data": self._models_cache[1]})

    async def health(self, request: Request) -> Response:
        """Liveness; with `?min_healthy=N`, readiness too: 503 until N endpoints are scraped and healthy.

        `llmdctl up` waits on the readiness form so the first request after `up` never meets an empty pool.
        """
        n = len(self.state.datalayer.candidates())
        body = {"status": "ok", "healthy_endpoints": n, "endpoints": len(self.state.datalayer.states)}
        try:
            wanted = int(request.query_params.get("min_healthy", "0"))
        except ValueError:
            return error_response(400, "min_healthy: expected an integer", param="min_healthy")
        if n < wanted:
            return JSONResponse({**body, "status": "starting"}, status_code=503)
        return JSONResponse(body)

    async def metrics(self, request: Request) -> Response:
        st = self.state
        st.metrics.queue_size.set(getattr(st.admission, "queue_size", 0) or 0)
        st.metrics.pool(st.settings.pool_name, st.datalayer.candidates(), st.indexes.stats())
        return Response(self.state.metrics.render(), media_type=self.state.metrics.content_type)

    async def decisions(self, request: Request) -> Response:
        try:
            history = max(0, min(int(request.query_params.get("history", "0")), 10_000))
        except ValueError:
            return error_response(400, "history: expected an integer", param="history")
        return StreamingResponse(
            self.state.hub.sse(history=history),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def endpoints(self, request: Request) -> Response:
        return JSONResponse(self.state.describe())

    async def get_config(self, request: Request) -> Response:
        return JSONResponse({"version": self.state.config_version, "config": self.state.config.to_dict()})

    async def post_config(self, request: Request) -> Response:
        """Switch the scheduling config live: body is an EndpointPickerConfig (JSON or YAML)."""
        try:
            text = (await self._read_body(request)).decode("utf-8", "replace")
            cfg = config_from_text(text, origin="POST /admin/config")
            self.state.swap_config(cfg)
        except ClientError as exc:
            return error_response(exc.status, str(exc), exc.param, exc.code)
        except ConfigError as exc:
            return error_response(400, str(exc), code="invalid_config")
        return JSONResponse(
            {
                "ok": True,
                "version": self.state.config_version,
                "profiles": [p.name for p in cfg.profiles],
                "warnings": cfg.warnings,
            }
        )

    async def post_profile(self, request: Request) -> Response:
        """Switch to a shipped profile's router config: `{"profile": "precise-prefix-cache"}`."""
        try:
            raw = await self._read_body(request)
            doc = _json_decoder.decode(raw) if raw.strip() else {}
        except ClientError as exc:
            return error_response(exc.status, str(exc), exc.param, exc.code)
        except msgspec.DecodeError as exc:
            return error_response(400, f"body is not valid JSON: {exc}", code="invalid_json")
        if not isinstance(doc, dict):
            return error_response(400, "body must be a JSON object", code="invalid_json")
        try:
            if isinstance(doc.get("config"), dict):
                from router_lite.config import load_config

                cfg, name = load_config(doc["config"], origin="POST /admin/profile config"), "inline"
            elif "profile" in doc:
                try:
                    cfg, name = named_config(self.s.named_configs, doc["profile"])
                except ConfigError as exc:
                    return error_response(400, str(exc), param="profile", code="invalid_profile")
            else:
                return error_response(
                    400, 'expected {"profile": NAME} or {"config": {...}}', param="profile", code="missing_profile"
                )
        except ConfigError as exc:
            return error_response(400, str(exc), code="invalid_config")
        self.state.swap_config(cfg)
        return JSONResponse(
            {
                "ok": True,
                "profile": name,
                "version": self.state.config_version,
                "profiles": [p.name for p in cfg.profiles],
                "warnings": cfg.warnings,
            }
        )

    async def not_found(self, request: Request) -> Response:
        return error_response(404, f"no route {request.method} {request.url.path}", code="not_found")


def _refused(refusal: Refusal) -> JSONResponse:
    return error_response(refusal.status, refusal.message, code=refusal.code)


class _StreamEnd:
    """What must happen exactly once when a proxied stream ends, however it ends.

    Counted in flight from the moment the response exists, so a client that disconnects before the relay
    generator ever starts still releases the pod connection and the scheduler's count.
    """

    def __init__(self, state: RouterState, upstream: Upstream, flow: Flow, t0: float) -> None:
        self.state, self.upstream, self.flow, self.t0 = state, upstream, flow, t0
        self.done = False
        self.events = 0  # SSE events relayed
        self.sent, self.tail = 0, b""
        state.metrics.inflight.inc()
        state.open_upstreams.add(upstream)

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        st = self.state
        st.open_upstreams.discard(self.upstream)
        self.upstream.abort()  # no-op when the body was read to its end and the connection went back to the pool
        st.metrics.inflight.dec()
        st.metrics.completed(self.flow.request, time.perf_counter() - self.t0, self.sent, self.tail)
        try:
            st.director.finished(self.flow, output_tokens=max(0, self.events - 1) or None)
        except Exception:
            log.exception("on_finished")


class ProxiedStream(StreamingResponse):
    """A relayed pod stream whose close callbacks run once the response is over, even if Starlette cancels
    it (client disconnect) before the body iterator's first step, when the generator's `finally` never runs."""

    def __init__(self, content: Any, status_code: int, on_close: Any) -> None:
        super().__init__(content, status_code=status_code)
        self.on_close: list[Any] = [on_close]

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        try:
            await super().__call__(scope, receive, send)
        finally:
            for cb in self.on_close:
                try:
                    cb()
                except Exception:
                    log.exception("closing a proxied stream")


def _whole_response(upstream: Upstream, extra: list[tuple[bytes, bytes]]) -> Response:
    """A non-streaming answer that arrived whole: the pod's headers, its length, and the router's `extra`."""
    resp = Response(upstream.first_chunk, status_code=upstream.status_code)
    resp.raw_headers = (
        [h for h in upstream.raw_headers() if h[0] != b"content-length"]
        + [(b"content-length", str(len(upstream.first_chunk)).encode())]
        + extra
    )
    return resp


def _release_after(resp: Response, ticket: Any) -> Response:
    """Hold a flow-control ticket until the response body has been fully sent."""
    if isinstance(resp, ProxiedStream):
        resp.on_close.append(ticket.release)  # idempotent; runs even if the body never started
    elif isinstance(resp, StreamingResponse):
        inner = resp.body_iterator

        async def wrapped():
            try:
                async for chunk in inner:
                    yield chunk
            finally:
                ticket.release()

        resp.body_iterator = wrapped()
    else:
        ticket.release()
    return resp


def build_app(settings: RouterSettings | None = None, state: RouterState | None = None) -> Starlette:
    """The ASGI app of one router. The lifespan starts scraping, event subscription and file watching."""
    import contextlib

    state = state or RouterState(settings or RouterSettings())
    gw = Gateway(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    api, read, admin = (
        (lambda h: gw.guarded(h, "api")),
        (lambda h: gw.guarded(h, "read")),
        (lambda h: gw.guarded(h, "admin")),
    )
    routes = [  # /health and /metrics are open, as vLLM's and the EPP's are (probes and Prometheus)
        Route("/v1/completions", api(gw.completions), methods=["POST"]),
        Route("/v1/chat/completions", api(gw.chat), methods=["POST"]),
        Route("/v1/models", api(gw.models), methods=["GET"]),
        *(Route(p, api(gw.passthrough), methods=["POST"]) for p in passthrough.PATHS),
        Route("/health", gw.health, methods=["GET"]),
        Route("/metrics", gw.metrics, methods=["GET"]),
        Route("/debug/decisions", read(gw.decisions), methods=["GET"]),
        Route("/debug/endpoints", read(gw.endpoints), methods=["GET"]),
        Route("/admin/config", read(gw.get_config), methods=["GET"]),
        Route("/admin/config", admin(gw.post_config), methods=["POST"]),
        Route("/admin/profile", admin(gw.post_profile), methods=["POST"]),
    ]

    async def on_404(request: Request, exc: Exception) -> Response:
        return await gw.not_found(request)

    async def on_405(request: Request, exc: Exception) -> Response:
        return error_response(
            405, f"method {request.method} not allowed on {request.url.path}", code="method_not_allowed"
        )

    async def on_500(request: Request, exc: Exception) -> Response:
        return error_response(500, f"router error: {type(exc).__name__}", code="internal_error")

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: on_404, 405: on_405, 500: on_500})
    app.state.router = state
    return app
