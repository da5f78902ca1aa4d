"""The simulator's HTTP shell: one Starlette app per pod/rank, many pods in one process on consecutive ports.

Each pod owns a SimEngine and one asyncio task that drives it: wait for work, `step(clock.now())`, sleep the
step's simulated duration, then hand the step's tokens to the waiting requests and publish its KV events.
All pods share one event loop (uvloop) and one uvicorn server per port, which keeps a laptop's cores free
for the router and the benchmark client. Nothing a request sends can stop a pod: parsing errors become
OpenAI error objects, an engine failure fails the requests in flight and the loop carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from kvtiers.hashing import seed_from_env, to_event_hash
from sim_gpu import api, pd
from sim_gpu.api import APIError, ChoiceResult, GenRequest, ServedModel
from sim_gpu.clock import ScaledClock
from sim_gpu.engine import EngineConfig, EngineRequest, RequestOutput, SimEngine
from sim_gpu.faults import FaultInjector, failure_body
from sim_gpu.latency import LatencyModel
from sim_gpu.kv_publisher import KVEventPublisher, offset_endpoint, render_topic, validate_endpoint
from sim_gpu.metrics import CONTENT_TYPE, PodMetrics
from sim_gpu.tiers import PodTiers, attach_pod_tiers
from sim_gpu.tiers import parse_spec as parse_tiers
from kvtiers.tokenizer import IncrementalDetokenizer, load_tokenizer

JSON = "application/json"
IDLE_POLL_S = 0.001  # simulated seconds to wait when the engine has work but nothing to schedule yet
TIER_POLL_S = 0.001  # simulated seconds between landings of write-behind tier copies while the engine idles
DISCONNECT_POLL_S = 0.5  # how often a non-streaming request checks that its client is still there


class ClientGone(Exception):
    """The client of a non-streaming request disconnected before it finished."""


@dataclass
class ServeConfig:
    """Everything `sim serve` accepts (names follow the CLI flags)."""

    host: str = "127.0.0.1"
    port: int = 8000
    pods: int = 1
    model: str = "sim-model"
    hardware: str = "H100"
    model_profile: str = "Llama-3.1-8B"
    tp: int = 1
    data_parallel_size: int = 1
    block_size: int = 16
    num_gpu_blocks: int | None = None
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int | None = None
    role: str = "both"
    kv_events_endpoint: str = ""
    kv_events_topic: str | None = None
    kv_events_form: str = "map"
    kv_events_int_hashes: bool = True
    prefix_caching_hash_algo: str = "sha256"
    hash_seed: str | None = None
    tokenizer: str | None = None
    output_mode: str = "random"
    time_scale: float = 1.0
    seed: int = 0
    jitter: float = 0.0
    network: str | None = None
    enable_expert_parallel: bool = False
    failure_injection_rate: float = 0.0
    failure_types: list[str] = field(default_factory=list)
    startup_delay: float = 0.0
    crash_after: int = 0
    log_requests: bool = False
    enable_prompt_tokens_details: bool = False  # vLLM's flag: usage.prompt_tokens_details (cached_tokens), else null
    enable_scale_out: bool = False  # vLLM's flag: serve the Renderer API (/v1/completions/render, ...), else 403
    kv_tiers: str | None = None  # --kv-tiers: a profile's kv_tiers section as JSON, or a file holding it

    def validate(self) -> None:
        """One-line errors naming the flag, before anything binds."""
        checks = [
            (self.pods >= 1, f"--pods: expected >= 1, got {self.pods}"),
            (self.data_parallel_size >= 1, f"--data-parallel-size: expected >= 1, got {self.data_parallel_size}"),
            (1 <= self.port and self.port + self.pods * self.data_parallel_size - 1 <= 65535,
             f"--port: {self.port} + pods x ranks does not fit below 65536"),
            (self.tp >= 1, f"--tp: expected >= 1, got {self.tp}"),
            (self.block_size >= 1, f"--block-size: expected >= 1, got {self.block_size}"),
            (self.max_num_seqs >= 1, f"--max-num-seqs: expected >= 1, got {self.max_num_seqs}"),
            (self.max_num_batched_tokens >= 1, f"--max-num-batched-tokens: expected >= 1, got {self.max_num_batched_tokens}"),
            (self.num_gpu_blocks is None or self.num_gpu_blocks >= 1, f"--num-gpu-blocks: expected >= 1, got {self.num_gpu_blocks}"),
            (self.max_model_len is None or self.max_model_len >= 2, f"--max-model-len: expected >= 2, got {self.max_model_len}"),
            (self.role in pd.ROLES, f"--role: expected one of {', '.join(pd.ROLES)}, got {self.role!r}"),
            (self.kv_events_form in ("map", "positional"), f"--kv-events-form: expected map or positional, got {self.kv_events_form!r}"),
            (self.output_mode in ("random", "echo"), f"--output-mode: expected random or echo, got {self.output_mode!r}"),
            (self.time_scale >= 0, f"--time-scale: expected >= 0 (0 = instant), got {self.time_scale}"),
            (self.jitter >= 0, f"--jitter: expected >= 0, got {self.jitter}"),
            (bool(self.model), "--model: the served model name cannot be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.kv_events_endpoint:
            validate_endpoint(self.kv_events_endpoint)
        if self.kv_tiers:
            parse_tiers(self.kv_tiers)


class InstantClock:
    """`--time-scale 0`: simulated time jumps by each step's duration; sleeping only yields to the loop."""

    def __init__(self) -> None:
        self._t = 0.0

    def now(self) -> float:
        return self._t

    async def sleep(self, dt: float) -> None:
        if dt > 0:
            self._t += dt
        await asyncio.sleep(0)


class _Tracked:
    """A request in flight: its output queue and the timestamps its metrics need."""

    __slots__ = ("queue", "arrival", "last")

    def __init__(self, arrival: float) -> None:
        self.queue: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()
        self.arrival = arrival
        self.last = arrival


def public_host(host: str) -> str:
    """The address others reach this pod at: the bind host, or $POD_IP (else the hostname's) for a wildcard."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    if os.environ.get("POD_IP"):
        return os.environ["POD_IP"]
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _ints(hashes: list[Any] | None) -> list[Any]:
    return [to_event_hash(h, True) if isinstance(h, (bytes, bytearray)) else h for h in (hashes or [])]


class Pod:
    """One simulated vLLM server (one data-parallel rank): engine, driver task, HTTP app, metrics, events."""

    def __init__(self, cfg: ServeConfig, index: int, rank: int, *, tokenizer: Any, faults: FaultInjector,
                 latency: LatencyModel | None = None, tiers: tuple[dict, str | None] | None = None) -> None:
        self.cfg = cfg
        self.index = index
        self.rank = rank
        self.offset = index * cfg.data_parallel_size + rank
        self.port = cfg.port + self.offset
        self.tokenizer = tokenizer
        self.faults = faults
        self.engine = build_engine(cfg, rank, self.offset, tokenizer, latency)
        self.tiers: PodTiers | None = None
        if tiers is not None:  # CPU / shared filesystem tiers below the GPU (kvtiers)
            spec, base_dir = tiers
            block_bytes = max(1, int(self.engine.latency.kv_bytes_per_token_per_gpu() * cfg.block_size))
            self.tiers = attach_pod_tiers(self.engine, spec, block_bytes=block_bytes, base_dir=base_dir,
                                          count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False)))
        self.clock: Any = InstantClock() if cfg.time_scale == 0 else ScaledClock(cfg.time_scale)
        self.max_model_len = self.engine.config.max_model_len
        self.served = ServedModel(cfg.model, self.max_model_len, tokenizer)
        self.public_host = public_host(cfg.host)
        self.engine_id = f"sim-{self.public_host}-{self.port}"
        stats = self.engine.stats()
        self.metrics = PodMetrics(
            cfg.model,
            self.engine.stats,
            engine_index=rank,
            tiers_fn=self.tiers.figures if self.tiers else None,
            cache_info={
                "block_size": stats.block_size,
                "cache_dtype": "auto",
                "enable_prefix_caching": True,
                "gpu_memory_utilization": cfg.gpu_memory_utilization,
                "num_cpu_blocks": self.tiers.num_cpu_blocks if self.tiers else None,
                "num_gpu_blocks": stats.num_gpu_blocks,
                "num_gpu_blocks_override": cfg.num_gpu_blocks,
                "prefix_caching_hash_algo": cfg.prefix_caching_hash_algo,
                "sliding_window": None,
                "swap_space": 0,
            },
        )
        self.publisher: KVEventPublisher | None = None
        if cfg.kv_events_endpoint:
            self.publisher = KVEventPublisher(
                offset_endpoint(cfg.kv_events_endpoint, self.offset),
                render_topic(cfg.kv_events_topic, self.public_host, self.port, cfg.model, rank, index),
                form=cfg.kv_events_form,  # type: ignore[arg-type]
                int_hashes=cfg.kv_events_int_hashes,
                data_parallel_rank=rank,
            )
        self._tracked: dict[str, _Tracked] = {}
        self._seq = 0  # makes engine request ids unique per pod
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------------------------- engine driver
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drive(), name=f"sim-pod-{self.port}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.tiers is not None:
            with contextlib.suppress(Exception):  # land in-flight offloads so the shared tier keeps them
                self.tiers.store.flush()
        if self.publisher:
            self.publisher.close()

    async def _drive(self) -> None:
        eng, clock = self.engine, self.clock
        while True:
            if not eng.has_unfinished():
                if self.tiers is not None and self.tiers.store.pending():
                    # Idle, but write-behind copies are in flight: land them and publish their events.
                    await clock.sleep(TIER_POLL_S)
                    self.tiers.hook.advance(clock.now())
                    events = eng.take_events()
                    if events and self.publisher is not None:
                        self.publisher.publish(events)
                    continue
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                res = eng.step(clock.now())
            except Exception as exc:  # an engine bug must not take the pod down: fail what is in flight
                self._fail_all(exc)
                await asyncio.sleep(0.01)
                continue
            if res.duration_s > 0:
                await clock.sleep(res.duration_s)
            elif not res.outputs and not res.kv_events:
                await clock.sleep(IDLE_POLL_S)
            else:
                await asyncio.sleep(0)
            if res.kv_events and self.publisher is not None:
                self.publisher.publish(res.kv_events)
            if res.outputs:
                self._deliver(res.outputs, clock.now())

    def _deliver(self, outputs: list[RequestOutput], now: float) -> None:
        m = self.metrics
        for out in outputs:
            t = self._tracked.get(out.request_id)
            if t is None:
                continue
            n = len(out.new_token_ids)
            if out.first_token:
                m.observe_ttft(now - t.arrival)
                if out.num_remote_tokens:
                    m.count_remote_prefill(out.num_remote_tokens)
                if n > 1:
                    m.observe_itl(0.0, n - 1)
            elif n:
                m.observe_itl((now - t.last) / n, n)
            t.last = now
            if out.finished:
                m.observe_finished(now - t.arrival, out.finish_reason)
                del self._tracked[out.request_id]
            t.queue.put_nowait(out)

    def _fail_all(self, exc: Exception) -> None:
        sys.stderr.write(f"sim_gpu: pod {self.port}: engine error: {exc!r}; failing {len(self._tracked)} requests\n")
        for rid, t in list(self._tracked.items()):
            with contextlib.suppress(Exception):
                self.engine.abort_request(rid)
            t.queue.put_nowait(exc)
        self._tracked.clear()

    def submit(self, request_id: str, prompt: list[int], max_tokens: int, req: GenRequest,
               plan: pd.PDPlan) -> _Tracked:
        """Queue one choice on the engine; the engine's own rejections become 400s."""
        now = self.clock.now()
        ereq = EngineRequest(
            request_id=request_id,
            prompt_token_ids=prompt,
            max_tokens=1 if plan.prefill_only else max_tokens,
            ignore_eos=req.ignore_eos,
            cache_salt=req.cache_salt,
            arrival_time=now,
            priority=req.priority,
            remote_prefill=plan.remote_prefill,
            prefill_only=plan.prefill_only,
            output_token_ids=req.replay_output_ids,
        )
        try:
            self.engine.add_request(ereq)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        t = self._tracked[request_id] = _Tracked(now)
        self._wake.set()
        return t

    def abort(self, request_id: str) -> None:
        if self._tracked.pop(request_id, None) is not None:
            with contextlib.suppress(Exception):
                self.engine.abort_request(request_id)

    # ------------------------------------------------------------------------------------------- HTTP
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
        return Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})

    async def health(self, request: Request) -> Response:
        if not self.faults.ready:
            return _error(APIError(503, "The server is not ready yet (start-up delay).", err_type="ServiceUnavailableError"))
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        from sim_gpu import __version__

        return Response(api.dumps({"version": f"sim_gpu-{__version__}"}), media_type=JSON)

    async def models(self, request: Request) -> Response:
        return Response(api.dumps(api.models_response(self.served, int(time.time()), self.cfg.model_profile)), media_type=JSON)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

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
        self.engine.reset_prefix_cache()
        self._wake.set()
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
                status, err = failure_body(failure, self.cfg.model, self.max_model_len)
                return Response(api.dumps(err), status_code=status, media_type=JSON)
            rid = req.request_id or request.headers.get("x-request-id") or api.random_id(
                "cmpl" if kind == "completion" else "chatcmpl")
            created = int(time.time())
            runs = self._submit_all(rid, req, body)
        except APIError as exc:
            return _error(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001
            return _error(APIError(500, f"Internal error: {exc!r}", err_type="InternalServerError"))
        if req.stream:
            return StreamingResponse(self._stream(rid, created, req, runs), media_type="text/event-stream")
        try:
            results = await self._collect_unless_disconnected(request, runs)
        except asyncio.CancelledError:
            for run in runs:
                self.abort(run.request_id)
            raise
        except ClientGone:  # as vLLM: a client that left gets its request aborted, not finished for nobody
            for run in runs:
                self.abort(run.request_id)
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001
            return _error(APIError(500, f"Internal error: {exc!r}", err_type="InternalServerError"))
        kvp = self._kv_params_out(runs, results)
        build = api.completion_response if kind == "completion" else api.chat_response
        self._log(rid, results)
        details = self.cfg.enable_prompt_tokens_details
        return Response(api.dumps(build(rid, created, req, [r[0] for r in results], kvp, details)), media_type=JSON)

    async def _collect_unless_disconnected(self, request: Request, runs: list["_Run"]) -> list[Any]:
        """Results of every run; raises ClientGone as soon as the client disconnects (checked twice a second)."""
        gathered = asyncio.ensure_future(asyncio.gather(*(self._collect(run) for run in runs)))
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

    def _submit_all(self, rid: str, req: GenRequest, body: dict[str, Any] | None = None) -> list["_Run"]:
        runs: list[_Run] = []
        try:
            self._submit_each(rid, req, runs, body or {})
        except Exception:
            for run in runs:
                self.abort(run.request_id)
            raise
        return runs

    def _submit_each(self, rid: str, req: GenRequest, runs: list["_Run"], body: dict[str, Any]) -> None:
        for pi, prompt in enumerate(req.prompts):
            if self.tiers is not None:
                try:  # block types (system prompt, tools, ...) for the tiers' per-type policies
                    self.tiers.note_request(body, prompt, req.cache_salt)
                except ValueError as exc:
                    raise APIError(400, str(exc), "kv_block_type") from None
            plan = pd.plan(req.kv_transfer_params, len(prompt), self.cfg.role)  # type: ignore[arg-type]
            if plan.ignored_reason and self.cfg.log_requests:
                sys.stderr.write(f"sim_gpu: pod {self.port}: {rid}: kv_transfer_params ignored: {plan.ignored_reason}\n")
            for j in range(req.n):
                index = pi * req.n + j
                # The engine id is unique on this pod whatever the client sent: two requests with one
                # x-request-id once shared a slot, and one got the other's tokens while the other hung.
                self._seq += 1
                erid = f"{rid}-{index}-{self._seq}"
                prefix = req.prompt_texts[pi] if req.echo and req.kind == "completion" else None
                if req.echo and prefix is None and req.kind == "completion":
                    prefix = self.tokenizer.decode(prompt)
                t = self.submit(erid, prompt, req.max_tokens[pi], req, plan)
                runs.append(_Run(erid, index, prompt, plan, t, IncrementalDetokenizer(self.tokenizer), prefix or ""))

    async def _collect(self, run: "_Run") -> tuple[ChoiceResult, RequestOutput]:
        ids: list[int] = []
        while True:
            out = await run.tracked.queue.get()
            if isinstance(out, Exception):
                raise out
            ids.extend(out.new_token_ids)
            if out.first_token:
                run.cached = out.num_cached_tokens
            if out.finished:
                text = run.prefix + self.tokenizer.decode(ids)
                return ChoiceResult(run.index, text, ids, run.prompt, out.finish_reason, run.cached), out

    def _kv_params_out(self, runs: list["_Run"], results: list[tuple[ChoiceResult, RequestOutput]]) -> dict | None:
        if not runs or not runs[0].plan.prefill_only:
            return None
        last = results[0][1]
        block_ids = last.block_ids if last.block_ids is not None else _ints(last.block_hashes)
        return pd.prefill_response_params(
            block_ids, engine_id=self.engine_id, host=self.public_host, port=self.port,
            tp_size=self.cfg.tp, request_id=runs[0].request_id,
        )

    async def _stream(self, rid: str, created: int, req: GenRequest, runs: list["_Run"]) -> AsyncIterator[bytes]:
        merged: asyncio.Queue = asyncio.Queue()
        pumps = [asyncio.ensure_future(self._pump(run, merged)) for run in runs]
        pending = len(runs)
        completion_tokens = 0
        finals: list[tuple[ChoiceResult, RequestOutput]] = []
        try:
            if req.kind == "chat":
                for run in runs:
                    chunk = api.chat_chunk(rid, created, req.model, run.index, {"role": "assistant", "content": ""}, None)
                    if req.return_token_ids and run.index == 0:
                        chunk["prompt_token_ids"] = run.prompt
                    yield api.sse(chunk)
            while pending:
                run, out = await merged.get()
                if isinstance(out, Exception):
                    yield api.sse(api.error_body(500, f"Internal error: {out!r}", "InternalServerError"))
                    return
                new = out.new_token_ids
                completion_tokens += len(new)
                run.ids.extend(new)
                if out.first_token:
                    run.cached = out.num_cached_tokens
                delta = run.detok.push(new)
                reason = out.finish_reason if out.finished else None
                tids = new if req.return_token_ids else None
                if req.kind == "completion":
                    text = delta
                    prompt_ids = None
                    if not run.sent_first:
                        text = run.prefix + delta
                        prompt_ids = run.prompt if req.return_token_ids else None
                    chunk = api.completion_chunk(rid, created, req.model, run.index, text, reason, tids, prompt_ids)
                else:
                    chunk = api.chat_chunk(rid, created, req.model, run.index, {"content": delta}, reason, tids)
                run.sent_first = True
                if req.continuous_usage:
                    chunk["usage"] = api.usage(len(run.prompt), len(run.ids),
                                               run.cached if self.cfg.enable_prompt_tokens_details else None)
                if out.finished:
                    pending -= 1
                    choice = ChoiceResult(run.index, "", run.ids, run.prompt, out.finish_reason, run.cached)
                    finals.append((choice, out))
                    if run.index == 0 and run.plan.prefill_only:
                        chunk["kv_transfer_params"] = self._kv_params_out(runs, [(choice, out)])
                yield api.sse(chunk)
            if req.include_usage:
                finals.sort(key=lambda r: r[0].index)
                yield api.sse(api.usage_chunk(rid, created, req, api._sum_usage(req, [c for c, _ in finals], self.cfg.enable_prompt_tokens_details)))
            yield api.SSE_DONE
            self._log(rid, finals)
        finally:
            for p in pumps:
                p.cancel()
            for run in runs:
                self.abort(run.request_id)

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
    tracked: _Tracked
    detok: IncrementalDetokenizer
    prefix: str = ""
    ids: list[int] = field(default_factory=list)
    cached: int = 0
    sent_first: bool = False


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


def build_latency(cfg: ServeConfig) -> LatencyModel:
    """The latency model every pod of this process shares (profiles are read once)."""
    return LatencyModel.from_names(
        hardware=cfg.hardware,
        model=cfg.model_profile,
        tp=cfg.tp,
        ep=cfg.tp * cfg.data_parallel_size if cfg.enable_expert_parallel else 1,
        network=cfg.network,
        jitter=cfg.jitter,
    )


def build_engine(cfg: ServeConfig, rank: int, offset: int, tokenizer: Any,
                 latency: LatencyModel | None = None) -> SimEngine:
    """The engine of one pod/rank (seeded per pod so pods do not all emit identical text)."""
    latency = latency or build_latency(cfg)
    blocks = cfg.num_gpu_blocks or latency.num_gpu_blocks(cfg.block_size, cfg.gpu_memory_utilization,
                                                          cfg.max_num_batched_tokens)
    max_len = cfg.max_model_len or latency.model.max_model_len
    capacity = blocks * cfg.block_size
    if max_len > capacity:
        # vLLM refuses to start here; the simulator serves with the longest context its cache holds, as vLLM's
        # error message suggests, so that a small --num-gpu-blocks never leaves a request waiting forever.
        if offset == 0:
            sys.stderr.write(f"sim_gpu: max model length {max_len} exceeds the KV cache ({blocks} blocks x "
                             f"{cfg.block_size} = {capacity} tokens); serving with max model length {capacity}\n")
        max_len = capacity
    return SimEngine(EngineConfig(
        block_size=cfg.block_size,
        num_gpu_blocks=blocks,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        max_num_seqs=cfg.max_num_seqs,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        max_model_len=max_len,
        hash_algo=cfg.prefix_caching_hash_algo,
        hash_seed=cfg.hash_seed if cfg.hash_seed is not None else seed_from_env(),
        latency=latency,
        seed=cfg.seed + offset,
        output_mode=cfg.output_mode,
        vocab_size=tokenizer.vocab_size,
        eos_token_id=tokenizer.eos_token_id,
        role=cfg.role,
        data_parallel_rank=rank,
        enable_kv_events=bool(cfg.kv_events_endpoint) or bool(cfg.kv_tiers),  # tiers replicate on GPU events
        event_hash_int=cfg.kv_events_int_hashes,
    ))


# ------------------------------------------------------------------------------------------ process runner
SHUTDOWN_GRACE_S = 2.0  # in-flight requests get this long after SIGTERM, then their tasks are cancelled


class _Server:
    """A uvicorn server that leaves signal handling to the runner (one handler for every pod)."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        class _NoSignals(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[override]
                yield

        config = uvicorn.Config(app, log_level="warning", access_log=False, http="httptools", lifespan="off",
                                timeout_keep_alive=60, backlog=4096, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
        self.server = _NoSignals(config)
        self.sock = sock

    async def serve(self) -> None:
        await self.server.serve(sockets=[self.sock])


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"--port: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class SimProcess:
    """Every pod and rank of one `sim serve` process."""

    def __init__(self, cfg: ServeConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        self.faults = FaultInjector(cfg.failure_injection_rate, list(cfg.failure_types), cfg.startup_delay,
                                    cfg.crash_after, seed=cfg.seed)
        self.tiers = parse_tiers(cfg.kv_tiers) if cfg.kv_tiers else None  # (spec, base dir)
        self.pods: list[Pod] = []
        self._servers: list[_Server] = []

    def build(self) -> None:
        """Create engines, publishers and sockets (raises ValueError with a one-line message on bad input)."""
        socks: list[socket.socket] = []
        latency = build_latency(self.cfg)
        try:
            for i in range(self.cfg.pods):
                for r in range(self.cfg.data_parallel_size):
                    pod = Pod(self.cfg, i, r, tokenizer=self.tokenizer, faults=self.faults, latency=latency,
                              tiers=self.tiers)
                    self.pods.append(pod)
                    socks.append(_bind(self.cfg.host, pod.port))
        except Exception:
            for s in socks:
                s.close()
            for p in self.pods:
                if p.publisher:
                    p.publisher.close()
            raise
        self._servers = [_Server(p.app, s) for p, s in zip(self.pods, socks)]

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        import prometheus_client

        prometheus_client.disable_created_metrics()  # vLLM's exposition has no *_created series
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        for p in self.pods:
            p.start()
        tasks = [asyncio.ensure_future(s.serve()) for s in self._servers]
        while not all(s.server.started for s in self._servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.005)
        self.faults.start_delay()
        self._announce()
        if ready is not None:
            ready.set()
        done_waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([done_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for s in self._servers:
            s.server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        done_waiter.cancel()
        for p in self.pods:
            await p.stop()

    def _announce(self) -> None:
        cfg, first, last = self.cfg, self.pods[0], self.pods[-1]
        events = ""
        if cfg.kv_events_endpoint:
            events = f", KV events {first.publisher.endpoint}..{last.publisher.endpoint}"  # type: ignore[union-attr]
        if self.tiers is not None:
            spec = self.tiers[0]
            fs = spec["filesystem"]
            events += f"; KV tiers: CPU {spec['cpu_blocks']} blocks" + (f", shared FS {fs['path']!r} ({fs['capacity_mb']} MB)" if fs else "")
        sys.stderr.write(
            f"sim_gpu: serving {cfg.model!r} ({cfg.model_profile} on {cfg.tp}x {cfg.hardware}, role {cfg.role}) "
            f"as {len(self.pods)} pod/rank(s) on http://{cfg.host}:{first.port}..{last.port}"
            f"{events}; {first.engine.stats().num_gpu_blocks} blocks of {first.engine.stats().block_size} per pod; "
            f"time scale {cfg.time_scale or 'instant'}\n"
        )
        sys.stderr.flush()


def run(cfg: ServeConfig) -> None:
    """Build and serve until SIGINT/SIGTERM (ValueError for user mistakes, raised before serving)."""
    proc = SimProcess(cfg)

    async def main() -> None:
        proc.build()
        await proc.serve()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(main())

