"""Fast-forward: many engine steps back to back, steady decodes advanced lazily (work per block boundary).

`SimEngine.fast_forward(now, until)` does to the engine exactly what the loop `t = now; while
has_unfinished() and t < until: r = step(t); t += r.duration_s` does — same tokens, times, KV events, stats
and jitter draws — but a running request past its prompt, which gains exactly one token per step until it
crosses a block boundary (allocate a block / register a full one: KV events), finishes or is preempted, costs
work only at those steps. This module holds that optimisation and all its state (`LazyDecodes`, one per
engine), so the engine's step stays the plain vLLM-shaped loop. The seam: the engine's step reads the lazy
count and context (`n`, `ctx`) into its batch shape, sends requests due at its step ordinal `L` through
`due_begin` / `due_end` (or takes a step `lazy_steps` began, `begun`), and calls `lazify` after a
fast-forwarded step; anything else that touches requests first calls `settle`; `step()` reports tokens synced
meanwhile through `take_carry`; `run` is fast_forward. Steps with only lazy decodes run without the scheduler
while nothing waits or what waits cannot start (`Scheduler.admission_blocked`).

Lazy requests are the first `n` entries of the running list (decodes always precede prefilling requests
there: vLLM admits in order and chunks only the last admitted prompt), with their counters as of step
`lazy_at` and their tokens drawn ahead (`output_token_ids` past `num_output_tokens`). Each one sits in
`due[step]` for the next step at which it needs the scheduler's attention; in between a step only adds
their count and context (`ctx`, exact integers) to the batch shape. Step ordinals `L` are engine-global.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING

from sim_gpu.engine.request import RUNNING, FastForwardResult, Request, RequestOutput, StepResult
from sim_gpu.latency import BatchShape

if TYPE_CHECKING:
    from sim_gpu.engine.engine import SimEngine


_run_seq = attrgetter("run_seq")  # a request's admission order (the running list's order)


class Window:
    """fast_forward's accumulator: merges step results and lazy decodes' tokens into one result."""

    __slots__ = ("L0", "ends", "acc", "res", "finishes", "tokens")

    def __init__(self, ends: list[float], L0: int, start: float, tokens: bool = True) -> None:
        self.ends = ends  # the engine's end times of recent (non-idle) steps ...
        self.L0 = L0  # ... the first of which is step ordinal L0
        self.acc: dict[str, RequestOutput] = {}
        self.res = FastForwardResult(start, start)
        self.finishes = 0
        self.tokens = tokens  # False: lazy decodes' tokens are counted, not reported (see LazyDecodes.run)

    def record(self, r: Request, start: int, k: int, from_L: int) -> None:
        """A lazy decode's output tokens [start, start + k), produced one per step from step `from_L` on
        (counters already updated)."""
        if not self.tokens:
            self.res.num_generated_tokens += k
            return
        toks = r.output_token_ids[start : start + k]
        out = self.acc.get(r.request_id)
        if out is None:
            out = self.acc[r.request_id] = RequestOutput.of(r, [])
            out.token_times = []
        out.new_token_ids += toks
        i = from_L - self.L0
        out.token_times += self.ends[i : i + len(toks)]  # type: ignore[operator]
        out.num_output_tokens = r.num_output_tokens
        self.res.num_generated_tokens += len(toks)

    def record_one(self, r: Request, tok: int, L: int) -> None:
        """`record(r, [tok], L)` without the list: a due lazy decode's token of step L (the hot path)."""
        out = self.acc.get(r.request_id)
        if out is None:
            out = self.acc[r.request_id] = RequestOutput.of(r, [])
            out.token_times = []
        out.new_token_ids.append(tok)
        out.token_times.append(self.ends[L - self.L0])  # type: ignore[union-attr]
        out.num_output_tokens = r.num_output_tokens
        self.res.num_generated_tokens += 1

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


class LazyDecodes:
    """The fast-forward state of one engine: lazy requests, their due steps, step end times, unreported tokens."""

    __slots__ = (
        "eng",
        "caching",
        "bs",
        "max_len",
        "eos",
        "L",
        "n",
        "ctx",
        "due",
        "ends",
        "ends_base",
        "carry",
        "begun",
    )

    def __init__(self, engine: SimEngine) -> None:
        self.eng = engine
        cfg = engine.config
        self.caching = cfg.enable_prefix_caching
        self.bs, self.max_len, self.eos = cfg.block_size, cfg.max_model_len, engine._eos  # read per due request
        self.L = 0  # engine steps run (non-idle)
        self.n = 0  # lazy requests: the first n of the running list
        self.ctx = 0  # their summed context tokens
        self.due: dict[int, list[Request]] = {}  # step -> lazy requests that need the scheduler then
        self.ends: list[float] = []  # end time of fast_forward steps ends_base, ends_base + 1, ...
        self.ends_base = 0
        self.carry: Window | None = None  # tokens synced outside fast_forward, reported with the next result
        self.begun: list[Request] | None = None  # step L's due requests, due_begin done: _step_core goes on

    def settle(self) -> None:
        """Bring every lazy request up to date (before anything but a step or fast_forward touches them)."""
        if self.n:
            self.delazify(self.carry_window())

    def take_carry(self, outputs: list[RequestOutput]) -> None:
        """Put tokens fast_forward had not reported yet (they carry token_times) before a step's outputs."""
        if self.carry is not None:
            outputs[:0] = self.carry.acc.values()
            self.carry = None

    def run(
        self, now: float, until: float, max_steps: int | None, flush: bool, stop_on_finish: bool, tokens: bool = True
    ) -> FastForwardResult:
        """Run back-to-back steps from `now` while each starts before `until`; one aggregated result.

        It does to the engine exactly what the loop `t = now; while has_unfinished() and t < until: r =
        step(t); t += r.duration_s` (stopping after an idle step of 0 s, and after `max_steps` steps) does —
        same tokens, times, KV events, stats and jitter draws — but steady decodes are advanced lazily: a
        request costs work at its block boundaries and its finish, not once per token.

        Outputs: one RequestOutput per request with new tokens, carrying `token_times` (the simulated end of
        the step that produced each token). First tokens, finishes and prefill_only results are always
        reported in the call whose steps produced them. Plain decode tokens are reported lazily — with the
        next block the request fills (within block_size steps; without prefix caching, not before its finish),
        its finish, or the next `step()` / `abort_request()` — so a call may report tokens of earlier calls
        (their `token_times` say when); `flush=True` reports every token produced so far before returning
        (O(running requests)).
        `stop_on_finish=True` also stops after the first step in which a request finished (its finish time is
        then `end_s`), for drivers that react to finishes (P/D hand-off, the next turn of a session). Short
        calls are cheap: lazy state persists between calls.
        `tokens=False`, for drivers that need when requests start and finish, not what they say: lazy decodes'
        tokens are counted (`num_output_tokens`, `num_generated_tokens`) but not reported, so a lazy request
        appears only with its finish, whose output then lists its last token alone; tokens of steps that went
        through the scheduler (first tokens among them) are reported as usual.
        """
        if self.n == 0:
            self.ends_base = self.L
            self.ends.clear()
        elif len(self.ends) > 4096:
            cut = min(r.lazy_at for r in self.eng.scheduler.running[: self.n]) - self.ends_base
            if cut > 0:
                del self.ends[:cut]
                self.ends_base += cut
        win = Window(self.ends, self.ends_base, now, tokens)
        if self.carry is not None:
            win.acc.update(self.carry.acc)
            win.res.num_generated_tokens += self.carry.res.num_generated_tokens
            self.carry = None
        t = now
        steps = 0
        stalled = False
        if self.eng._requests:
            self.lazify()
        sched = self.eng.scheduler
        while self.eng._requests and t < until and (max_steps is None or steps < max_steps):
            if self.n and self.n == len(sched.running) and self.eng.pool.tiers is None:
                # Only lazy decodes run, and nothing waits — or what waits cannot start (seats, budget, blocks).
                blocked, watch = sched.admission_blocked(self.n) if sched.waiting else (False, None)
                n = 0
                if blocked or not sched.waiting:
                    lim = None if max_steps is None else max_steps - steps
                    n = self.lazy_steps(t, until, lim, win, stop_on_finish, blocked, watch)
                if n:
                    steps += n
                    t = self.ends[-1]
                    if self.begun is None:
                        if stop_on_finish and win.finishes:
                            break
                        continue
            res = self.eng._step_core(t, win)
            steps += 1
            win.add_step(res, t)
            if res.idle and res.duration_s <= 0:
                stalled = True
                break
            t += res.duration_s
            if stop_on_finish and win.finishes:
                break
        if flush and self.n:
            L = self.L
            sync = self.sync
            for r in self.eng.scheduler.running[: self.n]:
                sync(r, L, win)
        return win.result(t, steps, stalled)

    def due_begin(
        self, due: list[Request], L: int, now: float, win: "Window | None", allow_preempt: bool = False
    ) -> int | None:
        """The scheduler's decode path for lazy requests due at step L, in running order (so KV events come
        in the same order). A request that needs a block when none is free preempts from the running tail,
        as Scheduler.schedule does (victims leave `due`). Returns the number preempted, or None — with
        nothing changed — when a preemption is needed and not `allow_preempt`."""
        bs = self.bs
        if len(due) > 1:
            due.sort(key=_run_seq)
        pool = self.eng.pool
        if not allow_preempt and len(due) > pool.num_free_blocks:  # (each needs at most one block)
            need = 0
            for r in due:
                if r.num_computed_tokens + (L - r.lazy_at) >= len(r.blocks) * bs:
                    need += 1
            if need > pool.num_free_blocks:
                return None
        tiers = pool.tiers
        if tiers is not None:
            tiers.advance(now)
        kv = self.eng.kv
        take_block = pool.take_block
        sync = self.sync
        caching = self.caching
        running = self.eng.scheduler.running
        victims = 0
        for r in due:
            if r.status != RUNNING:
                continue  # preempted above, as a victim of an earlier request
            # Counters as of step L without syncing: tokens are only needed when a block fills (its hash).
            end = r.num_computed_tokens + (L - r.lazy_at) + 1
            # KVCacheManager.allocate_slots(r, 1) for a decode without prefix hits, unrolled: at most one new
            # block, then register the blocks `end` tokens fill.
            blocks = r.blocks
            if end > len(blocks) * bs:
                block = take_block()
                while block is None:  # no free block: preempt from the tail until one frees up
                    v = running.pop()
                    self.preempt_victim(v, L, win)
                    victims += 1
                    if v is r:
                        break
                    block = take_block()
                if r.status != RUNNING:
                    break  # everything after it in the running list went first
                blocks.append(block)
            if caching and end // bs > r.num_cached_blocks:
                sync(r, L, win)
                if end // bs == r.num_cached_blocks + 1:
                    kv.cache_decode_block(r)
                else:
                    kv.cache_blocks(r, end)
        if victims:
            due[:] = [r for r in due if r.status == RUNNING]
        return victims

    def preempt_victim(self, v: Request, L: int, win: "Window | None") -> None:
        """Preempt a request popped from the running tail during step L, lazy or not."""
        if v.lazy_at >= 0:
            self.sync(v, L, win)
            self.n -= 1
            self.ctx -= v.num_computed_tokens
            v.lazy_at = -1
            if v.due_at != L:  # queued under a later step (one due now is dropped from `due` by the caller)
                bucket = self.due[v.due_at]
                bucket.remove(v)
                if not bucket:
                    del self.due[v.due_at]
        self.eng.scheduler._preempt(v)

    def due_end(self, due: list[Request], L: int, win: "Window | None", finished: list[Request]) -> tuple[int, int]:
        """Lazy requests due at step L: one that finishes at L is synced and produces its last token (appended
        to `finished`); the others stay lazy (their step-L token is produced with the rest) and are queued
        under their next due step. Returns (how many finished, their context after the step)."""
        max_len = self.max_len
        done = done_ctx = 0
        for r in due:
            k = L - r.lazy_at
            if self.event_step(r, L, k, handled=True):
                continue
            if k:
                self.sync(r, L, win)
            tok = r.output_token_ids[r.num_output_tokens]  # drawn ahead (event_step)
            ntok = r.num_tokens = r.num_tokens + 1
            nout = r.num_output_tokens = r.num_output_tokens + 1
            r.num_computed_tokens += 1
            r.lazy_at = -1
            if win is not None:
                win.record_one(r, tok, L)
            done += 1
            done_ctx += r.num_computed_tokens
            finished.append(r)
            if win is not None:
                win.finish(r, "length" if nout >= r.max_tokens or ntok >= max_len else "stop")
        return done, done_ctx

    def lazy_steps(
        self,
        t: float,
        until: float,
        limit: int | None,
        win: "Window",
        stop_on_finish: bool,
        blocked: bool = False,
        watch: bytes | None = None,
    ) -> int:
        """Steps in which only lazy decodes run (no tiers): no scheduler pass, no StepResult; requests due at a
        step get the same calls _step_core makes. Same shape, step_time call, jitter draws and KV events as
        _step_core. Returns the steps run (0: the next one needs a preemption).

        `blocked`: requests wait, but the scheduler would admit none (Scheduler.admission_blocked). That holds
        until a request finishes (blocks and seats come free: it returns after that step) or the blocks due
        requests fill cache `watch`, the waiting head's first missing prompt block: that step's due_begin is
        done, and `begun` hands it to _step_core, which schedules the rest of it. Allocations and evictions
        only take free blocks and hits away, so they cannot unblock the head."""
        due_map = self.due
        n_seqs = self.n
        ctx = self.ctx
        L = self.L
        shape = BatchShape()
        rng = self.eng._rng if self.eng.latency.jitter > 0 else None
        step_time = self.eng.latency.step_time
        ends = self.ends
        res = win.res
        durs = res.step_durations
        take_events = self.eng.pool.take_events
        n = 0
        while t < until and n_seqs and (limit is None or n < limit):
            due = due_map.pop(L, None)
            if due is not None:
                if self.due_begin(due, L, t, win) is None:
                    due_map[L] = due
                    break
                if watch is not None and self.eng.pool.get_cached_block(watch) is not None:
                    self.begun = due
                    break
            shape.decode_seqs = n_seqs
            shape.decode_context_tokens = ctx
            d = step_time(shape, rng)
            t += d
            ends.append(t)
            durs.append(d)
            self.eng._gen_tokens += n_seqs
            res.num_scheduled_tokens += n_seqs
            ctx += n_seqs
            n += 1
            if due is not None:
                events = take_events()
                if events:
                    res.kv_events += events
                    res.kv_event_times += [t] * len(events)
                finished: list[Request] = []
                done, done_ctx = self.due_end(due, L, win, finished)
                L += 1
                if finished:
                    self.eng._free_finished(finished)
                    n_seqs -= done
                    ctx -= done_ctx
                    if stop_on_finish or blocked:
                        break
            else:
                L += 1
        self.L = L
        self.n = n_seqs
        self.ctx = ctx
        return n

    def event_step(self, r: Request, L: int, k: int = 0, handled: bool = False) -> bool:
        """Queue a lazy request under the next step at or after L that needs it; its counters are as of step
        L - k (`lazy_at`: tokens of k steps not synced yet). `handled`: step L's block needs are done (due_begin)
        and only a finish can make it due at L; then False, with nothing queued, when it finishes at L (by
        length or EOS): the caller finishes it."""
        bs = self.bs
        c = r.num_computed_tokens + k
        d = len(r.blocks) * bs - c  # its next step needs a new block
        if self.caching:
            d2 = (r.num_cached_blocks + 1) * bs - c - 1  # ... or fills a block (BlockStored)
            if d2 < d:
                d = d2
        fin = r.max_tokens - r.num_output_tokens - k - 1  # ... or finishes by length
        d2 = self.max_len - r.num_tokens - k - 1
        if d2 < fin:
            fin = d2
        if fin < d:
            d = fin
        if d < 0:
            d = 0
        out = r.output_token_ids
        p = r.num_output_tokens  # out[p:]: drawn ahead, the k steps not synced first
        eos = self.eos
        stops = eos is not None and not r.ignore_eos
        ahead = len(out) - p
        if ahead <= k + d:
            # Draw ahead: a block (EOS is looked for among the tokens drawn), or, when no EOS can stop it,
            # every token it can still make — one draw per request (the stream is the same either way).
            n = k + d + 1 - ahead + bs
            if not stops:
                n = max(n, fin + k + 1 - ahead)
            out.extend(r.token_stream.take(n))
        if stops:
            try:
                j = out.index(eos, p) - p - k  # the first EOS not produced yet
            except ValueError:
                j = d
            if j < d:
                d = j
        if d == 0 and handled:
            return False
        r.due_at = L + d
        due = self.due.get(L + d)
        if due is None:
            self.due[L + d] = [r]
        else:
            due.append(r)
        return True

    def sync(self, r: Request, L: int, win: "Window | None") -> None:
        """Bring a lazy request's counters and tokens up to step L (it decoded once per step since lazy_at)."""
        k = L - r.lazy_at
        if k <= 0:
            return
        n = r.num_output_tokens
        r.num_tokens += k
        r.num_computed_tokens += k
        r.num_output_tokens = n + k  # the next k drawn-ahead tokens are produced: only counters move
        if win is not None:
            win.record(r, n, k, r.lazy_at)
        r.lazy_at = L

    def lazify(self) -> None:
        """Make the running requests after the lazy prefix lazy, as long as they are plain decodes. Not under
        the priority policy: lazy decodes are preempted from the running tail, its victims are chosen by key."""
        if self.eng.scheduler.policy != "fcfs":
            return
        running = self.eng.scheduler.running
        n = self.n
        limit = min(len(running), self.eng.config.max_num_batched_tokens)
        L = self.L
        ctx = self.ctx
        while n < limit:
            r = running[n]
            if r.prefill_only or r.num_output_tokens <= 0 or r.num_tokens - r.num_computed_tokens != 1:
                break
            r.lazy_at = L
            ctx += r.num_computed_tokens
            self.event_step(r, L)
            n += 1
        self.n = n
        self.ctx = ctx

    def carry_window(self) -> "Window":
        """Where tokens synced outside fast_forward go until the next step()/fast_forward result."""
        if self.carry is None:
            self.carry = Window(self.ends, self.ends_base, 0.0)
        return self.carry

    def delazify(self, win: "Window | None") -> None:
        L = self.L
        for r in self.eng.scheduler.running[: self.n]:
            self.sync(r, L, win)
            r.lazy_at = -1
        self.due.clear()
        self.n = 0
        self.ctx = 0
