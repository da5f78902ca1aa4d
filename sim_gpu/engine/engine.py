"""SimEngine: one simulated vLLM engine core — scheduler + KV cache + latency model, no I/O.

`step(now)` plans one batch, "runs" it (appends one deterministic token to every request whose prompt is
fully computed), frees finished requests, and returns how long the step takes on the modelled hardware,
the outputs and the KV events. The caller owns time: a server sleeps `duration_s` on its clock, a planner
advances a virtual clock by it — or calls `fast_forward(now, until)`, which runs the same steps back to back
with steady decodes advanced lazily (work per block boundary, not per token) and merges their results.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from kvtiers.hashing import HASH_ALGOS, BlockHasher, to_event_hash
from sim_gpu.engine.block_pool import BlockPool
from sim_gpu.engine.kv_cache_manager import KVCacheManager
from sim_gpu.engine.request import (
    FINISHED,
    RUNNING,
    WAITING_FOR_REMOTE_KVS,
    EngineRequest,
    EngineStats,
    FastForwardResult,
    Request,
    RequestOutput,
    StepResult,
)
from sim_gpu.engine.scheduler import Scheduler
from sim_gpu.engine.tokens import OUTPUT_MODES, TokenGenerator
from sim_gpu.latency import BatchShape, LatencyModel

ROLES = ("both", "prefill", "decode")


def _run_seq(r: Request) -> int:
    return r.run_seq


class _Window:
    """fast_forward's accumulator: merges step results and lazy decodes' tokens into one result."""

    __slots__ = ("L0", "ends", "acc", "res", "finishes")

    def __init__(self, ends: list[float], L0: int, start: float) -> None:
        self.ends = ends  # the engine's end times of recent (non-idle) steps ...
        self.L0 = L0  # ... the first of which is step ordinal L0
        self.acc: dict[str, RequestOutput] = {}
        self.res = FastForwardResult(start, start)
        self.finishes = 0

    def record(self, r: Request, toks: list[int], from_L: int) -> None:
        """Tokens of a lazy decode, produced one per step from step `from_L` on (counters already updated)."""
        out = self.acc.get(r.request_id)
        if out is None:
            out = self.acc[r.request_id] = RequestOutput(
                r.request_id, [], False, None, r.prompt_len, r.num_cached_tokens if r.num_cached_tokens > 0 else 0,
                False, 0, None, None, r.num_remote_tokens, [],
            )
        out.new_token_ids += toks
        i = from_L - self.L0
        out.token_times += self.ends[i : i + len(toks)]  # type: ignore[operator]
        out.num_output_tokens = r.num_output_tokens
        self.res.num_generated_tokens += len(toks)

    def finish(self, r: Request, reason: str) -> None:
        self.finishes += 1
        out = self.acc[r.request_id]
        out.finished = True
        out.finish_reason = reason  # type: ignore[assignment]

    def add_step(self, step: StepResult, t: float) -> None:
        res = self.res
        te = t + step.duration_s
        res.step_durations.append(step.duration_s)
        if step.kv_events:
            res.kv_events += step.kv_events
            res.kv_event_times += [te] * len(step.kv_events)
        res.num_prefill_tokens += step.num_prefill_tokens
        res.num_scheduled_tokens += step.num_scheduled_tokens
        res.num_preempted += step.num_preempted
        acc = self.acc
        for o in step.outputs:
            res.num_generated_tokens += len(o.new_token_ids)
            if o.finished:
                self.finishes += 1
            out = acc.get(o.request_id)
            if out is None:
                o.token_times = [te] * len(o.new_token_ids)
                acc[o.request_id] = o
                continue
            out.new_token_ids += o.new_token_ids
            out.token_times += [te] * len(o.new_token_ids)  # type: ignore[operator]
            out.finished = o.finished
            out.finish_reason = o.finish_reason
            out.first_token = out.first_token or o.first_token
            out.num_output_tokens = o.num_output_tokens
            out.num_cached_tokens = o.num_cached_tokens
            out.num_remote_tokens = o.num_remote_tokens
            if o.block_hashes is not None:
                out.block_hashes = o.block_hashes
            if o.block_ids is not None:
                out.block_ids = o.block_ids

    def result(self, end: float, steps: int, stalled: bool) -> FastForwardResult:
        res = self.res
        res.end_s = end
        res.num_steps = steps
        res.outputs = list(self.acc.values())
        res.stalled = stalled
        return res


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
        if self.role not in ROLES:
            raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {self.role!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization: expected a number in (0, 1], got {self.gpu_memory_utilization!r}")


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
            num_blocks = self.latency.num_gpu_blocks(cfg.block_size, cfg.gpu_memory_utilization, cfg.max_num_batched_tokens)
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
        self.scheduler = Scheduler(self.kv, cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.max_model_len)
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
        # Lazy decodes (fast_forward): see "lazy decodes" below.
        self._caching = cfg.enable_prefix_caching
        self._L = 0  # engine steps run (non-idle)
        self._nlazy = 0
        self._lazy_ctx = 0
        self._due: dict[int, list[Request]] = {}
        self._ends: list[float] = []  # end time of fast_forward steps _ends_base, _ends_base + 1, ...
        self._ends_base = 0
        self._carry: _Window | None = None

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
        state = Request(req, self.tokens.stream(prompt, req.output_token_ids))
        self._requests[rid] = state
        self.scheduler.add(state)

    def abort_request(self, request_id: str) -> bool:
        """Drop a request and free its blocks (they stay cached); False if it is unknown or already done."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        if self._nlazy:
            self._delazify(self._carry_window())
        if self._carry is not None:
            self._carry.acc.pop(request_id, None)
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
        if self._nlazy:
            self._delazify(self._carry_window())
        res = self._step_core(now, None)
        if self._carry is not None:  # tokens fast_forward had not reported yet (they carry token_times)
            res.outputs[:0] = self._carry.acc.values()
            self._carry = None
        return res

    def fast_forward(
        self,
        now: float,
        until: float,
        max_steps: int | None = None,
        flush: bool = False,
        stop_on_finish: bool = False,
    ) -> FastForwardResult:
        """Run back-to-back steps from `now` while each starts before `until`; one aggregated result.

        It does to the engine exactly what the loop `t = now; while has_unfinished() and t < until: r =
        step(t); t += r.duration_s` (stopping after an idle step of 0 s, and after `max_steps` steps) does —
        same tokens, times, KV events, stats and jitter draws — but steady decodes are advanced lazily: a
        request costs work at its block boundaries and its finish, not once per token.

        Outputs: one RequestOutput per request with new tokens, carrying `token_times` (the simulated end of
        the step that produced each token). First tokens, finishes and prefill_only results are always
        reported in the call whose steps produced them. Plain decode tokens are reported lazily — with the
        request's next block boundary (within block_size steps), its finish, or the next `step()` /
        `abort_request()` — so a call may report tokens of earlier calls (their `token_times` say when);
        `flush=True` reports every token produced so far before returning (O(running requests)).
        `stop_on_finish=True` also stops after the first step in which a request finished (its finish time is
        then `end_s`), for drivers that react to finishes (P/D hand-off, the next turn of a session). Short
        calls are cheap: lazy state persists between calls.
        """
        if self._nlazy == 0:
            self._ends_base = self._L
            self._ends.clear()
        elif len(self._ends) > 4096:
            cut = min(r.lazy_at for r in self.scheduler.running[: self._nlazy]) - self._ends_base
            if cut > 0:
                del self._ends[:cut]
                self._ends_base += cut
        win = _Window(self._ends, self._ends_base, now)
        if self._carry is not None:
            win.acc.update(self._carry.acc)
            win.res.num_generated_tokens += self._carry.res.num_generated_tokens
            self._carry = None
        t = now
        steps = 0
        stalled = False
        if self._requests:
            self._lazify()
        sched = self.scheduler
        while self._requests and t < until and (max_steps is None or steps < max_steps):
            if self._nlazy and self._nlazy == len(sched.running) and not sched.waiting and self.pool.tiers is None:
                n = self._lazy_steps(t, until, None if max_steps is None else max_steps - steps, win, stop_on_finish)
                if n:
                    steps += n
                    t = self._ends[-1]
                    if stop_on_finish and win.finishes:
                        break
                    continue
            res = self._step_core(t, win)
            steps += 1
            win.add_step(res, t)
            if res.idle and res.duration_s <= 0:
                stalled = True
                break
            t += res.duration_s
            if stop_on_finish and win.finishes:
                break
        if flush and self._nlazy:
            L = self._L
            sync = self._sync
            for r in self.scheduler.running[: self._nlazy]:
                sync(r, L, win)
        return win.result(t, steps, stalled)

    # ---- lazy decodes (fast_forward) ------------------------------------------------------------------------
    #
    # A running request past its prompt gains exactly one token per step until it crosses a block boundary
    # (allocate a block / register a full one: KV events), finishes or is preempted. fast_forward keeps such
    # requests "lazy": the first `_nlazy` entries of the running list (decodes always precede prefilling
    # requests there: vLLM admits in order and chunks only the last admitted prompt), with their counters
    # as of step `lazy_at` and tokens drawn ahead into `future`. Each one sits in `_due[step]` for the next
    # step at which it needs the scheduler's attention; in between a step only adds their count and context
    # (`_lazy_ctx`, exact integers) to the batch shape. Step ordinals `_L` are engine-global.

    def _due_begin(
        self, due: list[Request], L: int, now: float, win: "_Window | None", allow_preempt: bool = False
    ) -> int | None:
        """The scheduler's decode path for lazy requests due at step L, in running order (so KV events come
        in the same order). A request that needs a block when none is free preempts from the running tail,
        as Scheduler.schedule does (victims leave `due`). Returns the number preempted, or None — with
        nothing changed — when a preemption is needed and not `allow_preempt`."""
        bs = self.config.block_size
        if len(due) > 1:
            due.sort(key=_run_seq)
        pool = self.pool
        if not allow_preempt:
            need = 0
            for r in due:
                if r.num_computed_tokens + (L - r.lazy_at) >= len(r.blocks) * bs:
                    need += 1
            if need > pool.num_free_blocks:
                return None
        tiers = pool.tiers
        if tiers is not None:
            tiers.advance(now)
        kv = self.kv
        sync = self._sync
        caching = self._caching
        running = self.scheduler.running
        victims = 0
        for r in due:
            if r.status != RUNNING:
                continue  # preempted above, as a victim of an earlier request
            sync(r, L, win)
            end = r.num_computed_tokens + 1
            # KVCacheManager.allocate_slots(r, 1) for a decode without prefix hits, unrolled: at most one new
            # block, then register the blocks `end` tokens fill.
            blocks = r.blocks
            if end > len(blocks) * bs:
                while pool.num_free_blocks < 1:
                    v = running.pop()
                    self._preempt_victim(v, L, win)
                    victims += 1
                    if v is r:
                        break
                if r.status != RUNNING:
                    break  # everything after it in the running list went first
                blocks += pool.get_new_blocks(1)
            if caching and end // bs > r.num_cached_blocks:
                kv.cache_blocks(r, end)
        if victims:
            due[:] = [r for r in due if r.status == RUNNING]
        return victims

    def _preempt_victim(self, v: Request, L: int, win: "_Window | None") -> None:
        """Preempt a request popped from the running tail during step L, lazy or not."""
        if v.lazy_at >= 0:
            self._sync(v, L, win)
            self._nlazy -= 1
            self._lazy_ctx -= v.num_computed_tokens
            v.lazy_at = -1
            if v.due_at != L:  # queued under a later step (one due now is dropped from `due` by the caller)
                bucket = self._due[v.due_at]
                bucket.remove(v)
                if not bucket:
                    del self._due[v.due_at]
        self.scheduler._preempt(v)

    def _due_end(self, due: list[Request], L: int, win: "_Window | None", finished: list[Request]) -> tuple[int, int]:
        """Lazy requests due at step L produce its token; finished ones are appended to `finished`.
        Returns (how many finished, their context after the step)."""
        eos = self._eos
        max_len = self.config.max_model_len
        done = done_ctx = 0
        for r in due:
            tok = r.future.pop(0)
            r.all_token_ids.append(tok)
            ntok = r.num_tokens = r.num_tokens + 1
            nout = r.num_output_tokens = r.num_output_tokens + 1
            r.num_computed_tokens += 1
            r.lazy_at = L + 1
            if win is not None:
                win.record(r, [tok], L)
            reason = None
            if nout >= r.max_tokens or ntok >= max_len:
                reason = "length"
            elif tok == eos and not r.ignore_eos:
                reason = "stop"
            if reason is None:
                self._event_step(r, L + 1)
            else:
                r.lazy_at = -1
                done += 1
                done_ctx += r.num_computed_tokens
                finished.append(r)
                if win is not None:
                    win.finish(r, reason)
        return done, done_ctx

    def _free_finished(self, finished: list[Request]) -> None:
        sched = self.scheduler
        done = set(id(r) for r in finished)
        sched.running = [r for r in sched.running if id(r) not in done]
        for req in finished:
            self.kv.free(req)
            req.status = FINISHED
            del self._requests[req.request_id]
        self._finished += len(finished)

    def _lazy_steps(self, t: float, until: float, limit: int | None, win: "_Window", stop_on_finish: bool) -> int:
        """Steps in which only lazy decodes run (nothing waits, no tiers): no scheduler pass, no StepResult;
        requests due at a step get the same calls _step_core makes. Same shape, step_time call, jitter draws
        and KV events as _step_core. Returns the steps run (0: the next one needs a preemption)."""
        due_map = self._due
        n_seqs = self._nlazy
        ctx = self._lazy_ctx
        L = self._L
        shape = BatchShape()
        rng = self._rng if self.latency.jitter > 0 else None
        step_time = self.latency.step_time
        ends = self._ends
        res = win.res
        durs = res.step_durations
        take_events = self.pool.take_events
        n = 0
        while t < until and n_seqs and (limit is None or n < limit):
            due = due_map.pop(L, None)
            if due is not None and self._due_begin(due, L, t, win) is None:
                due_map[L] = due
                break
            shape.decode_seqs = n_seqs
            shape.decode_context_tokens = ctx
            d = step_time(shape, rng)
            t += d
            ends.append(t)
            durs.append(d)
            self._gen_tokens += n_seqs
            res.num_scheduled_tokens += n_seqs
            ctx += n_seqs
            n += 1
            if due is not None:
                events = take_events()
                if events:
                    res.kv_events += events
                    res.kv_event_times += [t] * len(events)
                finished: list[Request] = []
                done, done_ctx = self._due_end(due, L, win, finished)
                L += 1
                if finished:
                    self._free_finished(finished)
                    n_seqs -= done
                    ctx -= done_ctx
                    if stop_on_finish:
                        break
            else:
                L += 1
        self._L = L
        self._nlazy = n_seqs
        self._lazy_ctx = ctx
        return n

    def _event_step(self, r: Request, L: int) -> None:
        """Queue a lazy request (counters current at step L) under the next step that needs it."""
        bs = self.config.block_size
        c = r.num_computed_tokens
        d = len(r.blocks) * bs - c  # its next step needs a new block
        if self._caching:
            d2 = (r.num_cached_blocks + 1) * bs - c - 1  # ... or fills a block (BlockStored)
            if d2 < d:
                d = d2
        d2 = r.max_tokens - r.num_output_tokens - 1  # ... or finishes by length
        if d2 < d:
            d = d2
        d2 = self.config.max_model_len - r.num_tokens - 1
        if d2 < d:
            d = d2
        if d < 0:
            d = 0
        f = r.future
        if len(f) <= d:  # draw a block ahead: fewer, longer draws (the stream is the same either way)
            f.extend(r.token_stream.take(d + 1 - len(f) + bs))
        eos = self._eos
        if eos is not None and not r.ignore_eos and eos in f:
            j = f.index(eos)
            if j < d:
                d = j
        r.due_at = L + d
        due = self._due.get(L + d)
        if due is None:
            self._due[L + d] = [r]
        else:
            due.append(r)

    def _sync(self, r: Request, L: int, win: "_Window | None") -> None:
        """Bring a lazy request's counters and tokens up to step L (it decoded once per step since lazy_at)."""
        k = L - r.lazy_at
        if k <= 0:
            return
        f = r.future
        toks = f[:k]
        del f[:k]
        r.all_token_ids.extend(toks)
        r.num_tokens += k
        r.num_computed_tokens += k
        r.num_output_tokens += k
        if win is not None:
            win.record(r, toks, r.lazy_at)
        r.lazy_at = L

    def _lazify(self) -> None:
        """Make the running requests after the lazy prefix lazy, as long as they are plain decodes."""
        running = self.scheduler.running
        n = self._nlazy
        limit = min(len(running), self.config.max_num_batched_tokens)
        L = self._L
        ctx = self._lazy_ctx
        while n < limit:
            r = running[n]
            if r.prefill_only or r.num_output_tokens <= 0 or r.num_tokens - r.num_computed_tokens != 1:
                break
            r.lazy_at = L
            ctx += r.num_computed_tokens
            self._event_step(r, L)
            n += 1
        self._nlazy = n
        self._lazy_ctx = ctx

    def _carry_window(self) -> "_Window":
        """Where tokens synced outside fast_forward go until the next step()/fast_forward result."""
        if self._carry is None:
            self._carry = _Window(self._ends, self._ends_base, 0.0)
        return self._carry

    def _delazify(self, win: "_Window | None") -> None:
        L = self._L
        for r in self.scheduler.running[: self._nlazy]:
            self._sync(r, L, win)
            r.lazy_at = -1
        self._due.clear()
        self._nlazy = 0
        self._lazy_ctx = 0

    def _step_core(self, now: float, win: "_Window | None") -> StepResult:
        """One step; lazy decodes ride along (those due now go through the scheduler's decode path)."""
        sched = self.scheduler
        pool = self.pool
        L = self._L
        nlazy = self._nlazy
        due = self._due.pop(L, None) if nlazy else None
        victims = 0
        if due:
            victims = self._due_begin(due, L, now, win, allow_preempt=True)  # type: ignore[assignment]
            nlazy = self._nlazy
            batch = sched.schedule(now, self._transfer_time, nlazy, self._lazy_ctx, False, no_admit=victims > 0)
        else:
            batch = sched.schedule(now, self._transfer_time, nlazy, self._lazy_ctx)
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
        if win is not None:
            self._ends.append(now + duration)
        outputs: list[RequestOutput] = []
        eos = self._eos
        max_len = self.config.max_model_len
        finished: list[Request] = []
        gen = nlazy
        lazy_done = lazy_done_ctx = 0
        if due:
            lazy_done, lazy_done_ctx = self._due_end(due, L, win, finished)
        append = outputs.append
        for req, _n in entries:
            ntok = req.num_tokens
            if req.num_computed_tokens < ntok:
                continue  # a prefill chunk that did not reach the end of the prompt
            f = req.future
            tok = f.pop(0) if f else req.token_stream._next()
            req.all_token_ids.append(tok)  # inlined Request.append_token (hot loop)
            req.num_tokens = ntok = ntok + 1
            nout = req.num_output_tokens = req.num_output_tokens + 1
            gen += 1
            first = nout == 1
            reason = None
            if nout >= req.max_tokens or ntok >= max_len:
                reason = "length"
            elif tok == eos and not req.ignore_eos:
                reason = "stop"
            out = RequestOutput(
                req.request_id,
                [tok],
                reason is not None,
                reason,  # type: ignore[arg-type]
                req.prompt_len,
                req.num_cached_tokens if req.num_cached_tokens > 0 else 0,
                first,
                nout,
                None,
                None,
                req.num_remote_tokens,
            )
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
        self._L = L + 1
        if nlazy:
            self._nlazy = nlazy - lazy_done
            self._lazy_ctx += nlazy - lazy_done_ctx
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
            self._lazify()
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
            self._sync(req, self._L, self._carry_window())
        hashes = self.kv.ensure_hashes(req, req.num_tokens // self.config.block_size)
        return [to_event_hash(h, self.config.event_hash_int) for h in hashes]

    def block_ids_of(self, request_id: str) -> list[int]:
        req = self._requests.get(request_id)
        return [b.block_id for b in req.blocks] if req is not None else []

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
