"""The HTTP face of one pod: vLLM's OpenAI routes (and /tokenize, /metrics, ...) as a Starlette app over a Pod.

Parsing errors become OpenAI error objects; a client that leaves gets its request aborted, as vLLM does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from kvtiers.hashing import to_event_hash
from sim_gpu import api, multimodal, pd
from sim_gpu.api import APIError, ChoiceResult, GenRequest
from sim_gpu.choice import ChoiceOutput
from sim_gpu.engine import RequestOutput
from sim_gpu.faults import failure_body
from sim_gpu.http_metrics import HTTPMetrics
from sim_gpu.lora import runtime_updating_allowed
from sim_gpu.pod import Pod, Tracked
from sim_gpu.tools import ToolStream

JSON = "application/json"
DISCONNECT_POLL_S = 0.5  # how often a non-streaming request checks that its client is still there


class ClientGone(Exception):
    """The client of a non-streaming request disconnected before it finished."""


def _ints(hashes: list[Any] | None) -> list[Any]:
    return [to_event_hash(h, True) if isinstance(h, (bytes, bytearray)) else h for h in (hashes or [])]


class PodApp:
    """The routes of one pod; `app` is what uvicorn serves."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.cfg = pod.cfg
        self.tokenizer = pod.tokenizer
        self.faults = pod.faults
        self.metrics = pod.metrics
        self.served = pod.served
        self.port = pod.port
        starlette = self._build_app()
        self.app = HTTPMetrics(starlette, self.metrics.slow, {r.path for r in starlette.routes})

    def _build_app(self) -> Starlette:
        routes = [
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.health, methods=["GET"]),
            Route("/ping", self.health, methods=["GET", "POST"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
            Route("/reset_prefix_cache", self.reset_prefix_cache, methods=["POST"]),
            Route("/v1/completions/render", self.render_completion, methods=["POST"]),
            Route("/v1/chat/completions/render", self.render_chat, methods=["POST"]),
        ]
        if self.pod.loras is not None and runtime_updating_allowed():  # as vLLM: only with the env var set
            routes += [
                Route("/v1/load_lora_adapter", self.load_lora_adapter, methods=["POST"]),
                Route("/v1/unload_lora_adapter", self.unload_lora_adapter, methods=["POST"]),
            ]
        return Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})

    async def health(self, request: Request) -> Response:
        if not self.faults.ready:
            return _error(
                APIError(503, "The server is not ready yet (start-up delay).", err_type="ServiceUnavailableError")
            )
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        from sim_gpu import __version__

        return Response(api.dumps({"version": f"sim_gpu-{__version__}"}), media_type=JSON)

    async def models(self, request: Request) -> Response:
        # `root` is where the model's files are, as on vLLM: `vllm bench serve` without --model loads its
        # tokenizer from there, so with a tokenizer directory the client counts what the pod counts.
        root = self.cfg.tokenizer or self.cfg.model_profile
        now = int(time.time())
        adapters = self.pod.loras.cards(now) if self.pod.loras is not None else None
        return Response(api.dumps(api.models_response(self.served, now, root, adapters)), media_type=JSON)

    async def load_lora_adapter(self, request: Request) -> Response:
        return await self._lora_call(request, "load")

    async def unload_lora_adapter(self, request: Request) -> Response:
        return await self._lora_call(request, "unload")

    async def _lora_call(self, request: Request, op: str) -> Response:
        """vLLM's answers: the success line as plain text, or an OpenAI error object."""
        loras = self.pod.loras
        assert loras is not None  # the routes exist only with LoRA enabled
        try:
            body = api.loads_body(await read_body(request))
            text = loras.load(body) if op == "load" else loras.unload(body)
        except APIError as exc:
            return _error(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001 - the server never dies on a request
            return _error(APIError(500, f"Internal error: {exc!r}", err_type="InternalServerError"))
        return Response(text, status_code=200)

    async def metrics_endpoint(self, request: Request) -> Response:
        body, content_type = self.metrics.render_for(request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    async def tokenize(self, request: Request) -> Response:
        return await self._json_call(request, api.tokenize)

    async def detokenize(self, request: Request) -> Response:
        return await self._json_call(request, api.detokenize)

    async def render_completion(self, request: Request) -> Response:
        return await self._scale_out(request, api.render_completion)

    async def render_chat(self, request: Request) -> Response:
        return await self._scale_out(request, api.render_chat)

    async def _scale_out(self, request: Request, fn: Any) -> Response:
        """A Renderer API route: served with --enable-scale-out, else refused as vLLM refuses it (403)."""
        if not self.cfg.enable_scale_out:
            return _error(APIError(403, api.SCALE_OUT_DISABLED, err_type="PermissionDeniedError"))
        return await self._json_call(request, fn)

    async def reset_prefix_cache(self, request: Request) -> Response:
        self.pod.engine.reset_prefix_cache()
        self.pod.wake()
        return Response(status_code=200)

    async def _json_call(self, request: Request, fn: Any) -> Response:
        try:
            body = api.loads_body(await read_body(request))
            return Response(api.dumps(fn(body, self.served)), media_type=JSON)
        except APIError as exc:
            return _error(exc)
        except ClientDisconnect:  # the client left while sending: nobody to answer, nothing went wrong here
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001 - the server never dies on a request
            return _error(APIError(500, f"Internal error: {exc!r}", err_type="InternalServerError"))

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def _generate(self, request: Request, kind: str) -> Response:
        try:
            if not self.faults.ready:
                raise APIError(503, "The server is not ready yet (start-up delay).", err_type="ServiceUnavailableError")
            self.faults.count_request()
            body = api.loads_body(await read_body(request))
            req = api.parse_completion(body, self.served) if kind == "completion" else api.parse_chat(body, self.served)
            failure = self.faults.pick()
            if failure is not None:
                self.metrics.count_failure(failure)
                status, err = failure_body(failure, self.cfg.model, self.pod.max_model_len)
                return Response(api.dumps(err), status_code=status, media_type=JSON)
            rid = (
                req.request_id
                or request.headers.get("x-request-id")
                or api.random_id("cmpl" if kind == "completion" else "chatcmpl")
            )
            created = int(time.time())
            if self.cfg.role == "encode":  # E/P/D: run the encoder only and answer where the embeddings are
                return await self._encode(rid, created, req)
            pulled = multimodal.pulled_bytes(req.ec_transfer_params, req.mm_inputs)
            if pulled is not None and (req.kv_transfer_params or {}).get("do_remote_prefill"):
                pulled = 0  # a P/D decode pod gets the prompt's KV: the prefill pod pulled the embeddings
            if pulled is not None:  # embeddings from an encode pod: pull them instead of encoding here
                await self.pod.clock.sleep(multimodal.transfer_time(self.pod.engine.latency, pulled))
            runs = self._submit_all(rid, req, body, mm_encoded=pulled is not None)
        except APIError as exc:
            return _error(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001
            return _error(APIError(500, f"Internal error: {exc!r}", err_type="InternalServerError"))
        if req.stream:
            return StreamingResponse(self._stream(rid, created, req, runs), media_type="text/event-stream")
        try:
            results = await self._collect_unless_disconnected(request, runs, req)
        except asyncio.CancelledError:
            for run in runs:
                self.pod.abort(run.request_id)
            raise
        except ClientGone:  # as vLLM: a client that left gets its request aborted, not finished for nobody
            for run in runs:
                self.pod.abort(run.request_id)
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001
            return _error(APIError(500, f"Internal error: {exc!r}", err_type="InternalServerError"))
        kvp = self._kv_params_out(runs, results)
        build = api.completion_response if kind == "completion" else api.chat_response
        self._log(rid, results)
        details = self.cfg.enable_prompt_tokens_details
        return Response(api.dumps(build(rid, created, req, [r[0] for r in results], kvp, details)), media_type=JSON)

    async def _collect_unless_disconnected(self, request: Request, runs: list["_Run"], req: GenRequest) -> list[Any]:
        """Results of every run; raises ClientGone as soon as the client disconnects (checked twice a second)."""
        gathered = asyncio.ensure_future(asyncio.gather(*(self._collect(run, req) for run in runs)))
        try:
            while True:
                done, _ = await asyncio.wait({gathered}, timeout=DISCONNECT_POLL_S)
                if done:
                    return gathered.result()
                if await request.is_disconnected():
                    raise ClientGone
        finally:
            if not gathered.done():
                gathered.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await gathered

    async def _encode(self, rid: str, created: int, req: GenRequest) -> Response:
        """An encode pod's answer: a chat completion with no output tokens, carrying `ec_transfer_params`."""
        tokens = await self.pod.encode(req.mm_inputs)
        nbytes = multimodal.embedding_bytes(self.pod.engine.latency, tokens)
        choice = ChoiceResult(0, "", [], req.prompts[0], "length")
        out = api.chat_response(rid, created, req, [choice], None, self.cfg.enable_prompt_tokens_details)
        out["ec_transfer_params"] = multimodal.encode_params(req.mm_inputs, nbytes, self.pod.public_host, self.port)
        return Response(api.dumps(out), media_type=JSON)

    def _submit_all(
        self, rid: str, req: GenRequest, body: dict[str, Any] | None = None, mm_encoded: bool = False
    ) -> list["_Run"]:
        runs: list[_Run] = []
        try:
            self._submit_each(rid, req, runs, body or {}, mm_encoded)
        except Exception:
            for run in runs:
                self.pod.abort(run.request_id)
            raise
        return runs

    def _submit_each(
        self, rid: str, req: GenRequest, runs: list["_Run"], body: dict[str, Any], mm_encoded: bool = False
    ) -> None:
        for pi, prompt in enumerate(req.prompts):
            if self.pod.tiers is not None:
                try:  # block types (system prompt, tools, ...) for the tiers' per-type policies
                    self.pod.tiers.note_request(body, prompt, req.cache_salt)
                except ValueError as exc:
                    raise APIError(400, str(exc), "kv_block_type") from None
            plan = pd.plan(req.kv_transfer_params, len(prompt), self.cfg.role)  # type: ignore[arg-type]
            forced = None
            if req.forced is not None:
                forced = self.tokenizer.encode(req.forced.text, add_special_tokens=False)
            if plan.ignored_reason and self.cfg.log_requests:
                sys.stderr.write(
                    f"sim_gpu: pod {self.port}: {rid}: kv_transfer_params ignored: {plan.ignored_reason}\n"
                )
            for j in range(req.n):
                index = pi * req.n + j
                erid = self.pod.engine_request_id(rid, index)
                prefix = req.prompt_texts[pi] if req.echo and req.kind == "completion" else None
                if req.echo and prefix is None and req.kind == "completion":
                    prefix = self.tokenizer.decode(prompt)
                t = self.pod.submit(erid, prompt, req.max_tokens[pi], req, plan, j, forced, mm_encoded)
                choice = ChoiceOutput(
                    self.tokenizer,
                    req.sampling,
                    self.tokenizer.eos_token_id,
                    req.ignore_eos or plan.prefill_only,
                    len(forced) if forced else None,
                    req.max_tokens[pi],
                )
                run = _Run(erid, index, prompt, plan, t, choice, prefix or "")
                if req.forced is not None and req.forced.tools is not None:
                    run.tools = ToolStream(req.forced.tools)
                runs.append(run)

    async def _collect(self, run: "_Run", req: GenRequest) -> tuple[ChoiceResult, RequestOutput]:
        entries: list = []
        while True:
            out = await run.tracked.queue.get()
            if isinstance(out, Exception):
                raise out
            delta = run.choice.push(out.new_token_ids, out.finish_reason if out.finished else None)
            entries.extend(delta.logprobs)
            if out.first_token:
                run.cached = out.num_cached_tokens
            if run.choice.finished:
                if not out.finished:  # a stop string/id ended it before the engine did
                    self.pod.finish_early(run.request_id, "stop")
                return self._result(run, req, entries), out

    def _result(self, run: "_Run", req: GenRequest, entries: list) -> ChoiceResult:
        c = run.choice
        result = ChoiceResult(
            run.index, run.prefix + c.text, c.ids, run.prompt, c.finish_reason, run.cached, stop_reason=c.stop_reason
        )
        if req.sampling.logprobs is not None:
            result.logprobs = (
                api.completion_logprobs(entries, c.token_str, len(run.prefix))
                if req.kind == "completion"
                else api.chat_logprobs(entries, c.token_str)
            )
        return result

    def _kv_params_out(self, runs: list["_Run"], results: list[tuple[ChoiceResult, RequestOutput]]) -> dict | None:
        if not runs or not runs[0].plan.prefill_only:
            return None
        last = results[0][1]
        block_ids = last.block_ids if last.block_ids is not None else _ints(last.block_hashes)
        return pd.prefill_response_params(
            block_ids,
            engine_id=self.pod.engine_id,
            host=self.pod.public_host,
            port=self.port,
            tp_size=self.cfg.tp,
            request_id=runs[0].request_id,
        )

    async def _stream(self, rid: str, created: int, req: GenRequest, runs: list["_Run"]) -> AsyncIterator[bytes]:
        merged: asyncio.Queue = asyncio.Queue()
        pumps = [asyncio.ensure_future(self._pump(run, merged)) for run in runs]
        pending = len(runs)
        finals: list[tuple[ChoiceResult, RequestOutput]] = []
        try:
            if req.kind == "chat":
                for run in runs:
                    chunk = api.chat_chunk(
                        rid, created, req.model, run.index, {"role": "assistant", "content": ""}, None
                    )
                    if req.return_token_ids and run.index == 0:
                        chunk["prompt_token_ids"] = run.prompt
                    yield api.sse(chunk)
            while pending:
                run, out = await merged.get()
                if isinstance(out, Exception):
                    yield api.sse(api.error_body(500, f"Internal error: {out!r}", "InternalServerError"))
                    return
                if run.choice.finished:  # ended by a stop string/id; the engine's later outputs are dropped
                    continue
                c = run.choice
                d = c.push(out.new_token_ids, out.finish_reason if out.finished else None)
                if out.first_token:
                    run.cached = out.num_cached_tokens
                reason = c.finish_reason
                if reason is not None and not out.finished:
                    self.pod.finish_early(run.request_id, "stop")
                stop_reason = c.stop_reason if reason is not None else None
                tids = d.token_ids if req.return_token_ids else None
                lp = None
                if req.kind == "completion":
                    text = d.text
                    prompt_ids = None
                    if not run.sent_first:
                        text = run.prefix + d.text
                        prompt_ids = run.prompt if req.return_token_ids else None
                    if req.sampling.logprobs is not None:
                        lp = api.completion_logprobs(d.logprobs, c.token_str, run.offset)
                    run.offset += len(text)
                    chunk = api.completion_chunk(
                        rid, created, req.model, run.index, text, reason, tids, prompt_ids, lp, stop_reason
                    )
                else:
                    if req.sampling.logprobs is not None:
                        lp = api.chat_logprobs(d.logprobs, c.token_str)
                    delta: dict[str, Any] = {"content": d.text}
                    if run.tools is not None:  # a tool call: its arguments stream as tool_calls deltas
                        calls = run.tools.push(d.text)
                        if not calls and reason is None:
                            continue  # text around the arguments: vLLM's parser sends nothing for it
                        delta = {"tool_calls": calls} if calls else {}
                        reason = run.tools.finish_reason(reason)
                    chunk = api.chat_chunk(rid, created, req.model, run.index, delta, reason, tids, lp, stop_reason)
                run.sent_first = True
                if req.continuous_usage:
                    chunk["usage"] = api.usage(
                        len(run.prompt), len(c.ids), run.cached if self.cfg.enable_prompt_tokens_details else None
                    )
                if reason is not None:
                    pending -= 1
                    choice = ChoiceResult(run.index, "", c.ids, run.prompt, reason, run.cached)
                    finals.append((choice, out))
                    if run.index == 0 and run.plan.prefill_only:
                        chunk["kv_transfer_params"] = self._kv_params_out(runs, [(choice, out)])
                yield api.sse(chunk)
            if req.include_usage:
                finals.sort(key=lambda r: r[0].index)
                yield api.sse(
                    api.usage_chunk(
                        rid,
                        created,
                        req,
                        api._sum_usage(req, [c for c, _ in finals], self.cfg.enable_prompt_tokens_details),
                    )
                )
            yield api.SSE_DONE
            self._log(rid, finals)
        finally:
            for p in pumps:
                p.cancel()
            for run in runs:
                self.pod.abort(run.request_id)

    async def _pump(self, run: "_Run", merged: asyncio.Queue) -> None:
        while True:
            out = await run.tracked.queue.get()
            merged.put_nowait((run, out))
            if isinstance(out, Exception) or out.finished:
                return

    def _log(self, rid: str, results: list[tuple[ChoiceResult, RequestOutput]]) -> None:
        if not self.cfg.log_requests:
            return
        for c, out in results:
            sys.stderr.write(
                f"sim_gpu: pod {self.port} {rid} choice={c.index} prompt={len(c.prompt_token_ids)} "
                f"cached={c.num_cached_tokens} remote={out.num_remote_tokens} output={len(c.token_ids)} "
                f"finish={c.finish_reason}\n"
            )


@dataclass
class _Run:
    """One choice of one request: its engine id, stream and detokenizer."""

    request_id: str
    index: int
    prompt: list[int]
    plan: pd.PDPlan
    tracked: Tracked
    choice: ChoiceOutput
    prefix: str = ""
    offset: int = 0  # chars of text streamed so far (completions' logprobs text_offset)
    cached: int = 0
    sent_first: bool = False
    tools: ToolStream | None = None  # a tool-calling chat choice's stream parser


async def read_body(request: Request, limit: int = api.MAX_BODY_BYTES) -> bytes:
    """The request body, refused with a 413 as soon as it is known to exceed `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"Request body of {declared} bytes is over the limit of {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"Request body is over the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(exc: APIError) -> Response:
    return Response(api.dumps(exc.body()), status_code=exc.status, media_type=JSON)


async def _http_exception(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "Error")
    return Response(api.dumps(api.error_body(status, str(detail))), status_code=status, media_type=JSON)
