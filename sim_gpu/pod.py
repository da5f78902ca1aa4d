"""One simulated vLLM server (one data-parallel rank) without its HTTP face: engine, driver task, metrics, events.

The pod owns a SimEngine and one asyncio task that drives it: wait for work, `step(clock.now())`, sleep the
step's simulated duration, then hand the step's tokens to the waiting requests (one queue per request) and
publish its KV events. Nothing a request sends can stop the loop: an engine failure fails the requests in
flight and the loop carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from dataclasses import replace
from typing import Any

from sim_gpu import pd
from sim_gpu.api import APIError, GenRequest, ServedModel
from sim_gpu.clock import ScaledClock
from sim_gpu.engine import EngineRequest, RequestOutput
from sim_gpu.engine.lora import LoraSlots
from sim_gpu.faults import FaultInjector
from sim_gpu.kv_publisher import KVEventPublisher, offset_endpoint, render_topic
from sim_gpu.latency import LatencyModel
from sim_gpu.lora import LoraAdapters
from sim_gpu.metrics import FinishedRequest, PerfModel, PodMetrics
from sim_gpu.multimodal import MMInput, encode_time
from sim_gpu.serve_config import ServeConfig, build_engine
from sim_gpu.tiers import PodTiers, attach_pod_tiers

IDLE_POLL_S = 0.001  # simulated seconds to wait when the engine has work but nothing to schedule yet
TIER_POLL_S = 0.001  # simulated seconds between landings of write-behind tier copies while the engine idles


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


class Tracked:
    """A request in flight: its output queue and the timestamps its metrics need."""

    __slots__ = ("queue", "arrival", "last", "scheduled", "first", "prompt", "cached", "output", "max_tokens", "n")

    def __init__(self, arrival: float, prompt: int = 0, max_tokens: int = 0, n: int = 0) -> None:
        self.queue: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()
        self.arrival = arrival
        self.last = arrival
        self.scheduled = arrival
        self.first = arrival
        self.prompt = prompt
        self.cached = 0
        self.output = 0
        self.max_tokens = max_tokens
        self.n = n  # the request's n on its first choice, 0 on the others

    def finished(self, now: float) -> FinishedRequest:
        """vLLM's per-request intervals: queued (arrival -> scheduled), prefill (-> first token), decode."""
        return FinishedRequest(
            e2e_s=now - self.arrival,
            queue_s=self.scheduled - self.arrival,
            prefill_s=self.first - self.scheduled,
            decode_s=now - self.first,
            inference_s=now - self.scheduled,
            prompt_tokens=self.prompt,
            generation_tokens=self.output,
            cached_tokens=self.cached,
            max_tokens=self.max_tokens,
            n=self.n,
        )


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


class Pod:
    """One simulated vLLM server (one data-parallel rank): engine, driver task, metrics, events (no HTTP)."""

    def __init__(
        self,
        cfg: ServeConfig,
        index: int,
        rank: int,
        *,
        tokenizer: Any,
        faults: FaultInjector,
        latency: LatencyModel | None = None,
        tiers: tuple[dict, str | None] | None = None,
    ) -> None:
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
            self.tiers = attach_pod_tiers(
                self.engine,
                spec,
                block_bytes=block_bytes,
                base_dir=base_dir,
                count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
            )
        self.clock: Any = InstantClock() if cfg.time_scale == 0 else ScaledClock(cfg.time_scale)
        self.max_model_len = self.engine.config.max_model_len
        self.served = ServedModel(cfg.model, self.max_model_len, tokenizer, tools=cfg.tool_settings())
        self.public_host = public_host(cfg.host)
        self.engine_id = f"sim-{self.public_host}-{self.port}"
        stats = self.engine.stats()
        self._encoder = asyncio.Lock()  # E/P/D encode pod: one encoder pass at a time
        self.encode_running = 0
        self.encode_waiting = 0
        self.metrics = PodMetrics(
            cfg.model,
            self._encode_stats if cfg.role == "encode" else self.engine.stats,
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
            max_model_len=self.max_model_len,
            perf=PerfModel.of(self.engine.latency),
        )
        self.loras: LoraAdapters | None = None
        if cfg.enable_lora:  # adapters as model names, max_loras per batch, vllm:lora_requests_info
            slots = LoraSlots(max_loras=cfg.max_loras, max_cpu_loras=cfg.max_cpu_loras)
            self.engine.enable_lora(slots)
            self.loras = LoraAdapters(cfg.lora_config(), cfg.model, self.engine.latency.model, slots)
            self.served.loras = self.loras.adapters
            self.metrics.enable_lora(cfg.max_loras)
        self.publisher: KVEventPublisher | None = None
        if cfg.kv_events_endpoint:
            self.publisher = KVEventPublisher(
                offset_endpoint(cfg.kv_events_endpoint, self.offset),
                render_topic(cfg.kv_events_topic, self.public_host, self.port, cfg.model, rank, index),
                form=cfg.kv_events_form,  # type: ignore[arg-type]
                int_hashes=cfg.kv_events_int_hashes,
                data_parallel_rank=rank,
            )
        self._tracked: dict[str, Tracked] = {}
        self._seq = 0  # makes engine request ids unique per pod
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

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
            if res.num_scheduled_tokens:
                self.metrics.observe_iteration(res.num_scheduled_tokens)
            if self.loras is not None:
                self.metrics.observe_lora(*eng.lora_adapters())
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
            t.output += n
            if out.first_token:
                t.first, t.cached = now, out.num_cached_tokens
                if out.scheduled_at >= 0:
                    t.scheduled = out.scheduled_at
                m.observe_ttft(now - t.arrival)
                if out.num_remote_tokens:
                    m.count_remote_prefill(out.num_remote_tokens)
                if n > 1:
                    m.observe_itl(0.0, n - 1)
            elif n:
                m.observe_itl((now - t.last) / n, n)
            t.last = now
            if out.finished:
                done = t.finished(now)
                done.num_preemptions = out.num_preemptions
                m.observe_finished(now - t.arrival, out.finish_reason, done)
                del self._tracked[out.request_id]
            t.queue.put_nowait(out)

    def _fail_all(self, exc: Exception) -> None:
        sys.stderr.write(f"sim_gpu: pod {self.port}: engine error: {exc!r}; failing {len(self._tracked)} requests\n")
        for rid, t in list(self._tracked.items()):
            with contextlib.suppress(Exception):
                self.engine.abort_request(rid)
            t.queue.put_nowait(exc)
        self._tracked.clear()

    def submit(
        self,
        request_id: str,
        prompt: list[int],
        max_tokens: int,
        req: GenRequest,
        plan: pd.PDPlan,
        choice: int = 0,
        forced_ids: list[int] | None = None,
        mm_encoded: bool = False,
    ) -> Tracked:
        """Queue choice `choice` on the engine; the engine's own rejections become 400s. `forced_ids`: the output
        structured decoding forces (the engine emits them, then the choice ends)."""
        now = self.clock.now()
        replay = req.replay_output_ids
        if forced_ids is not None:
            replay, max_tokens = forced_ids, max(1, min(max_tokens, len(forced_ids)))
        ereq = EngineRequest(
            request_id=request_id,
            prompt_token_ids=prompt,
            max_tokens=1 if plan.prefill_only else max_tokens,
            ignore_eos=req.ignore_eos or req.sampling.min_tokens > 0,  # EOS before min_tokens: see ChoiceOutput
            cache_salt=req.cache_salt,
            arrival_time=now,
            priority=req.priority,
            remote_prefill=plan.remote_prefill,
            prefill_only=plan.prefill_only,
            output_token_ids=replay,
            seed=req.sampling.choice_seed(choice),
            lora_name=req.lora_name,
            mm_items=req.mm_items or None,
            mm_encode=not mm_encoded,
        )
        try:
            self.engine.add_request(ereq)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        t = self._tracked[request_id] = Tracked(now, len(prompt), max_tokens, req.n if choice == 0 else 0)
        self._wake.set()
        return t

    def finish_early(self, request_id: str, reason: str) -> None:
        """A choice ended by a stop string/id the output side found (vLLM's output processor aborts the engine
        request then): free it, and count it as finished, not aborted."""
        t = self._tracked.pop(request_id, None)
        if t is None:
            return
        with contextlib.suppress(Exception):
            self.engine.abort_request(request_id)
        now = self.clock.now()
        self.metrics.observe_finished(now - t.arrival, reason, t.finished(now))

    def abort(self, request_id: str) -> None:
        if self._tracked.pop(request_id, None) is not None:
            with contextlib.suppress(Exception):
                self.engine.abort_request(request_id)

    def _encode_stats(self) -> Any:
        """An encode pod's load, in the gauges routers read (running / waiting requests)."""
        return replace(self.engine.stats(), num_running=self.encode_running, num_waiting=self.encode_waiting)

    async def encode(self, inputs: list[MMInput]) -> int:
        """E/P/D encode pod: run the encoder over `inputs` (queued behind other encoder passes); the
        placeholder tokens encoded."""
        tokens = sum(i.num_tokens for i in inputs)
        self.encode_waiting += 1
        waiting = True
        try:
            async with self._encoder:
                self.encode_waiting -= 1
                waiting = False
                self.encode_running += 1
                try:
                    await self.clock.sleep(encode_time(self.engine.latency, tokens))
                finally:
                    self.encode_running -= 1
        finally:
            if waiting:  # cancelled (client gone) while queued
                self.encode_waiting -= 1
        return tokens

    def wake(self) -> None:
        """New work or new events outside a request (e.g. a prefix-cache reset): let the driver run."""
        self._wake.set()

    def engine_request_id(self, request_id: str, index: int) -> str:
        """An engine id unique on this pod whatever the client sent: two requests with one x-request-id once
        shared a slot, and one got the other's tokens while the other hung."""
        self._seq += 1
        return f"{request_id}-{index}-{self._seq}"
