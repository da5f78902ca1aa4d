"""SimEngine: one simulated vLLM engine core — scheduler + KV cache + latency model, no I/O.

`step(now)` plans one batch, "runs" it (appends one deterministic token to every request whose prompt is
fully computed), frees finished requests, and returns how long the step takes on the modelled hardware,
the outputs and the KV events. The caller owns time: a server sleeps `duration_s` on its clock, a planner
advances a virtual clock by it — or calls `fast_forward(now, until)`, which runs the same steps back to back
with steady decodes advanced lazily (work per block boundary, not per token) and merges their results; that
optimisation and its state live in `fast_forward.py`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from kvtiers.hashing import HASH_ALGOS, BlockHasher, to_event_hash
from sim_gpu.engine.block_pool import BlockPool
from sim_gpu.engine.fast_forward import LazyDecodes, Window
from sim_gpu.engine.kv_cache_manager import KVCacheManager
from sim_gpu.engine.lora import LoraSlots
from sim_gpu.engine.policy import POLICIES
from sim_gpu.engine.request import (
    FINISHED,
    WAITING_FOR_REMOTE_KVS,
    EngineRequest,
    EngineStats,
    FastForwardResult,
    Request,
    RequestOutput,
    StepResult,
)
from sim_gpu.engine.scheduler import Scheduler
from sim_gpu.engine.tokens import OUTPUT_MODES, TokenGenerator, TokenStream
from sim_gpu.latency import LatencyModel
from sim_gpu.multimodal import encode_time

ROLES = ("both", "prefill", "decode")


def _default_latency() -> LatencyModel:
    return LatencyModel.from_names("H100", "Llama-3.1-8B")


@dataclass
class EngineConfig:
    """Engine settings, named after vLLM's flags where one exists."""

    block_size: int = 16
    num_gpu_blocks: int | None = None  # None: from hardware memory x utilization - weights (see LatencyModel)
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 32768
    enable_prefix_caching: bool = True
    hash_algo: str = "sha256"  # vLLM --prefix-caching-hash-algo: sha256 | sha256_cbor
    hash_seed: str = "vllm-none-hash"  # PYTHONHASHSEED when set, as vLLM does (kvtiers.hashing.seed_from_env)
    latency: LatencyModel = field(default_factory=_default_latency)
    seed: int = 0  # jitter and generated tokens
    output_mode: str = "random"  # random | echo
    vocab_size: int = 32000
    eos_token_id: int | None = None
    role: str = "both"  # both | prefill | decode (P/D)
    data_parallel_rank: int = 0
    lora_name: str | None = None
    enable_kv_events: bool = True
    event_hash_int: bool = True  # VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES: uint64 (True) or full digest bytes
    scheduling_policy: str = "fcfs"  # vLLM --scheduling-policy: fcfs | priority (policy.py)

    def validate(self) -> None:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")

        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len", "vocab_size"):
            positive(name)
        if self.num_gpu_blocks is not None:
            positive("num_gpu_blocks")
        if self.hash_algo not in HASH_ALGOS:
            raise ValueError(f"hash_algo: expected one of {', '.join(HASH_ALGOS)}, got {self.hash_algo!r}")
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode: expected one of {', '.join(OUTPUT_MODES)}, got {self.output_mode!r}")
        if self.scheduling_policy not in POLICIES:
            raise ValueError(
                f"scheduling_policy: expected one of {', '.join(POLICIES)}, got {self.scheduling_policy!r}"
            )
        if self.role not in ROLES:
            raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {self.role!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization: expected a number in (0, 1], got {self.gpu_memory_utilization!r}"
            )


class SimEngine:
    """A simulated vLLM engine core. Not thread-safe; one driver calls add/abort/step."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        cfg = config or EngineConfig()
        cfg.validate()
        self.config = cfg
        self.latency = cfg.latency
        if cfg.num_gpu_blocks is not None:
            num_blocks = cfg.num_gpu_blocks
        else:
            num_blocks = self.latency.num_gpu_blocks(
                cfg.block_size, cfg.gpu_memory_utilization, cfg.max_num_batched_tokens
            )
        self.num_gpu_blocks = num_blocks
        self.pool = BlockPool(
            num_blocks,
            cfg.block_size,
            enable_caching=cfg.enable_prefix_caching,
            enable_events=cfg.enable_kv_events and cfg.enable_prefix_caching,
            event_hash_int=cfg.event_hash_int,
        )
        self.hasher = BlockHasher(cfg.block_size, cfg.hash_algo, cfg.hash_seed)
        self.kv = KVCacheManager(self.pool, self.hasher, cfg.max_model_len, cfg.lora_name)
        self.scheduler = Scheduler(
            self.kv, cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.max_model_len, cfg.scheduling_policy
        )
        self.tokens = TokenGenerator(cfg.seed, cfg.vocab_size, cfg.output_mode)
        self._rng = random.Random(cfg.seed)
        self._requests: dict[str, Request] = {}
        self._eos = cfg.eos_token_id
        # Cumulative counters (vLLM metric names in EngineStats).
        self._queries = 0
        self._hits = 0
        self._preemptions = 0
        self._prompt_tokens = 0
        self._gen_tokens = 0
        self._finished = 0
        self.lazy = LazyDecodes(self)  # fast_forward's state (fast_forward.py)

    # ---- requests ----------------------------------------------------------------------------------------

    def add_request(self, req: EngineRequest) -> None:
        """Queue a request. Raises ValueError (one line, naming the field) for requests vLLM would reject."""
        cfg = self.config
        rid = req.request_id
        if not isinstance(rid, str) or not rid:
            raise ValueError("request_id: expected a non-empty string")
        if rid in self._requests:
            raise ValueError(f"request_id: {rid!r} is already running on this engine")
        prompt = req.prompt_token_ids
        if not prompt:
            raise ValueError("prompt_token_ids: the prompt is empty")
        if not isinstance(req.max_tokens, int) or isinstance(req.max_tokens, bool) or req.max_tokens < 1:
            raise ValueError(f"max_tokens: expected an integer >= 1, got {req.max_tokens!r}")
        max_tokens = 1 if req.prefill_only else req.max_tokens
        if len(prompt) + max_tokens > cfg.max_model_len:
            raise ValueError(
                f"This model's maximum context length is {cfg.max_model_len} tokens. However, you requested "
                f"{len(prompt) + max_tokens} tokens ({len(prompt)} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion."
            )
        capacity = (self.num_gpu_blocks - 1) * cfg.block_size
        if len(prompt) + max_tokens > capacity:
            # vLLM refuses to start when max_model_len exceeds the KV cache; here the pool may be set smaller
            # (tests, what-if runs), so refuse the request instead of letting it wait forever.
            raise ValueError(
                f"request needs {len(prompt) + max_tokens} tokens of KV cache but this engine holds only {capacity} "
                f"({self.num_gpu_blocks - 1} blocks of {cfg.block_size})"
            )
        rp = req.remote_prefill
        if rp is not None and (not isinstance(rp.num_tokens, int) or rp.num_tokens < 0):
            raise ValueError(f"remote_prefill.num_tokens: expected an integer >= 0, got {rp.num_tokens!r}")
        if req.lora_name is not None:
            lora = self.scheduler.lora
            if lora is None:
                raise ValueError(f"lora_name: {req.lora_name!r} given but LoRA is not enabled on this engine")
            if req.lora_name not in lora.adapter_ids:
                raise ValueError(f"lora_name: adapter {req.lora_name!r} is not loaded on this engine")
        pbh = req.prompt_block_hashes
        if pbh is not None and len(pbh) > len(prompt) // cfg.block_size:
            raise ValueError(
                f"prompt_block_hashes: expected at most {len(prompt) // cfg.block_size} digests "
                f"(full blocks of {cfg.block_size} tokens), got {len(pbh)}"
            )
        state = Request(req, None)
        state.token_stream = TokenStream.deferred(lambda: self._token_stream(state, req.output_token_ids, req.seed))
        self._requests[rid] = state
        self.scheduler.add(state)

    def _token_stream(self, req: Request, replay: list[int] | None, seed: int | None = None) -> TokenStream:
        """The request's output stream, built at its first draw: by then the prompt's full blocks are hashed
        (when caching), and their digests chain the prompt key's crc32 cheaply (TokenGenerator.key)."""
        bs = self.config.block_size
        plen = req.prompt_len
        blocks = (bs, req.block_hashes[: plen // bs]) if req.block_hashes else None
        # fast_forward draws up to a block ahead of the last token: one run covers the whole request
        return self.tokens.stream(req.prompt_token_ids, replay, blocks, expect=req.max_tokens + bs + 1, seed=seed)

    def enable_lora(self, slots: LoraSlots) -> None:
        """Serve LoRA adapters: requests may name one registered in `slots` (see engine/lora.py)."""
        self.scheduler.lora = slots
        self.kv.lora_ids = slots.adapter_ids

    def abort_request(self, request_id: str) -> bool:
        """Drop a request and free its blocks (they stay cached); False if it is unknown or already done."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        lazy = self.lazy
        lazy.settle()
        if lazy.carry is not None:
            lazy.carry.acc.pop(request_id, None)
        self.scheduler.remove(req)
        self.kv.free(req)
        req.status = FINISHED
        return True

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    def num_unfinished(self) -> int:
        return len(self._requests)

    # ---- stepping ----------------------------------------------------------------------------------------

    def _transfer_time(self, req: Request, num_tokens: int) -> float:
        rp = req.remote_prefill
        if rp is not None and rp.transfer_time_s is not None:
            return max(0.0, float(rp.transfer_time_s))
        return self.latency.kv_transfer_time(num_tokens, remote_tp=rp.remote_tp if rp is not None else None)

    def step(self, now: float) -> StepResult:
        """Run one engine step at simulated time `now` (seconds)."""
        self.lazy.settle()
        res = self._step_core(now, None)
        self.lazy.take_carry(res.outputs)
        return res

    def fast_forward(
        self,
        now: float,
        until: float,
        max_steps: int | None = None,
        flush: bool = False,
        stop_on_finish: bool = False,
        tokens: bool = True,
    ) -> FastForwardResult:
        """Run back-to-back steps from `now` while each starts before `until`; one aggregated result — exactly
        what a loop of `step()` calls would do, with steady decodes advanced lazily (see fast_forward.py for
        the contract: outputs with `token_times`, late decode tokens, `flush`, `stop_on_finish`, `tokens`)."""
        return self.lazy.run(now, until, max_steps, flush, stop_on_finish, tokens)

    # ---- one step ------------------------------------------------------------------------------------------

    def _free_finished(self, finished: list[Request]) -> None:
        sched = self.scheduler
        done = set(id(r) for r in finished)
        sched.running = [r for r in sched.running if id(r) not in done]
        for req in finished:
            self.kv.free(req)
            req.status = FINISHED
            del self._requests[req.request_id]
        self._finished += len(finished)

    def _step_core(self, now: float, win: Window | None) -> StepResult:
        """One step; lazy decodes ride along (those due now go through the scheduler's decode path)."""
        sched = self.scheduler
        pool = self.pool
        lazy = self.lazy
        L = lazy.L
        nlazy = lazy.n
        victims = 0
        due = lazy.begun
        if due is not None:  # lazy_steps began this step (due_begin, no preemption) and hands it over
            lazy.begun = None
            batch = sched.schedule(now, self._transfer_time, nlazy, lazy.ctx, False)
        else:
            due = lazy.due.pop(L, None) if nlazy else None
            if due:
                victims = lazy.due_begin(due, L, now, win, allow_preempt=True)  # type: ignore[assignment]
                nlazy = lazy.n
                batch = sched.schedule(now, self._transfer_time, nlazy, lazy.ctx, False, no_admit=victims > 0)
            else:
                batch = sched.schedule(now, self._transfer_time, nlazy, lazy.ctx)
        for req, local, _remote in batch.new_hits:
            if req.num_preemptions == 0:
                self._queries += req.num_tokens
                self._hits += local
        npre = len(batch.preempted) + victims
        self._preemptions += npre
        events = pool.take_events()
        entries = batch.entries
        if not entries and not nlazy:
            # Nothing to compute: idle until the earliest remote KV transfer lands (0 when none is pending).
            wait = 0.0
            pending = [r.remote_ready_at for r in sched.waiting if r.status == WAITING_FOR_REMOTE_KVS]
            if pending:
                wait = max(0.0, min(pending) - now)
            return StepResult(duration_s=wait, kv_events=events, num_preempted=npre, idle=True)

        duration = self.latency.step_time(batch.shape, self._rng if self.latency.jitter > 0 else None)
        duration += batch.lora_load_s
        if batch.new_hits:  # multimodal requests run their encoder in the step that first schedules them
            duration += self._encoder_time(batch.new_hits)
        if win is not None:
            lazy.ends.append(now + duration)
        outputs: list[RequestOutput] = []
        eos = self._eos
        max_len = self.config.max_model_len
        finished: list[Request] = []
        gen = nlazy
        lazy_done = lazy_done_ctx = 0
        if due:
            lazy_done, lazy_done_ctx = lazy.due_end(due, L, win, finished)
        append = outputs.append
        for req, _n in entries:
            ntok = req.num_tokens
            if req.num_computed_tokens < ntok:
                continue  # a prefill chunk that did not reach the end of the prompt
            out = req.output_token_ids
            nout = req.num_output_tokens
            if nout < len(out):  # drawn ahead (it was a lazy decode)
                tok = out[nout]
            else:
                tok = req.token_stream._next()
                out.append(tok)
            req.num_tokens = ntok = ntok + 1
            nout = req.num_output_tokens = nout + 1
            gen += 1
            first = nout == 1
            reason = None
            if nout >= req.max_tokens or ntok >= max_len:
                reason = "length"
            elif tok == eos and not req.ignore_eos:
                reason = "stop"
            out = RequestOutput.of(req, [tok], reason, first)
            if first:
                self._prompt_tokens += req.prompt_len
            if reason is not None:
                if req.prefill_only:
                    out.block_ids = [b.block_id for b in req.blocks]
                    out.block_hashes = [
                        to_event_hash(h, self.config.event_hash_int)
                        for h in self.kv.ensure_hashes(req, req.prompt_len // self.config.block_size)
                    ]
                finished.append(req)
            append(out)
        self._gen_tokens += gen
        if finished:
            self._free_finished(finished)
        lazy.L = L + 1
        if nlazy:
            lazy.n = nlazy - lazy_done
            lazy.ctx += nlazy - lazy_done_ctx
        res = StepResult(
            duration_s=duration,
            outputs=outputs,
            kv_events=events,
            num_scheduled_tokens=batch.num_scheduled_tokens,
            num_prefill_tokens=batch.shape.prefill_tokens,
            num_decode_seqs=batch.shape.decode_seqs,
            num_preempted=npre,
        )
        if win is not None:
            lazy.lazify()
        return res

    # ---- cache control and introspection ----------------------------------------------------------------

    def reset_prefix_cache(self) -> bool:
        """Forget all cached blocks (AllBlocksCleared goes out with the next step's events), as vLLM's
        /reset_prefix_cache; refused (False) while requests hold blocks."""
        return self.pool.reset_prefix_cache()

    def take_events(self) -> list[Any]:
        """KV events queued outside a step (e.g. by reset_prefix_cache), for drivers that flush while idle."""
        return self.pool.take_events()

    def block_hashes_of(self, request_id: str) -> list[int | bytes]:
        """Event-form hashes of a live request's full blocks (P/D transfer params)."""
        req = self._requests.get(request_id)
        if req is None:
            return []
        if req.lazy_at >= 0:
            self.lazy.sync(req, self.lazy.L, self.lazy.carry_window())
        hashes = self.kv.ensure_hashes(req, req.num_tokens // self.config.block_size)
        return [to_event_hash(h, self.config.event_hash_int) for h in hashes]

    def mute_kv_events(self) -> None:
        """Publish no more KV events (a planner's engines, once no router will read them again). Kept where
        KV tiers are attached: they act on the GPU events."""
        if self.pool.tiers is None:
            self.pool.enable_events = False

    def block_ids_of(self, request_id: str) -> list[int]:
        req = self._requests.get(request_id)
        return [b.block_id for b in req.blocks] if req is not None else []

    def _encoder_time(self, new_hits: list[tuple[Request, int, int]]) -> float:
        """Encoder seconds for first-scheduled requests' multimodal items not already in cached KV."""
        tokens = 0
        for req, local, remote in new_hits:
            if req.mm_items and req.mm_encode:
                hit = local + remote
                tokens += sum(n for _, off, n in req.mm_items if off + n > hit)
        return encode_time(self.latency, tokens) if tokens else 0.0

    def lora_adapters(self) -> tuple[list[str], list[str]]:
        """Adapters of the running and of the waiting requests, each in order of first appearance (the
        running_lora_adapters / waiting_lora_adapters labels of vllm:lora_requests_info)."""
        sched = self.scheduler
        running = dict.fromkeys(r.lora_name for r in sched.running if r.lora_name is not None)
        waiting = dict.fromkeys(r.lora_name for r in sched.waiting if r.lora_name is not None)
        return list(running), list(waiting)

    def stats(self) -> EngineStats:
        sched = self.scheduler
        return EngineStats(
            num_running=len(sched.running),
            num_waiting=len(sched.waiting),
            kv_cache_usage=self.pool.usage(),
            prefix_cache_queries_tokens=self._queries,
            prefix_cache_hits_tokens=self._hits,
            num_preemptions=self._preemptions,
            prompt_tokens_total=self._prompt_tokens,
            generation_tokens_total=self._gen_tokens,
            num_gpu_blocks=self.num_gpu_blocks,
            block_size=self.config.block_size,
            num_requests_finished=self._finished,
            num_waiting_for_remote_kv=(
                sum(1 for r in sched.waiting if r.status == WAITING_FOR_REMOTE_KVS) if sched._holders else 0
            ),  # only requests holding blocks can wait for remote KV: no scan of a long queue without them
        )
