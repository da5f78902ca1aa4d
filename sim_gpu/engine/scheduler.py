"""Forms each step's batch the way vLLM v1's scheduler does.

Running requests first (decodes and unfinished prefill chunks, in arrival order) take from the token budget
(`max_num_batched_tokens`); when the pool runs dry the most recently started running request is preempted
(its blocks freed, to be recomputed later). Then, if nobody was preempted, waiting requests are admitted in
order while seats (`max_num_seqs`), budget and blocks last, each starting after its longest cached prefix and
chunked to the remaining budget (chunked prefill). P/D decode-side requests first wait for their remote KV.
The order of the waiting queue and the choice of victim are the scheduling policy's (policy.py).

With LoRA (`self.lora`, engine/lora.py) a waiting request whose adapter would take the batch past `max_loras`
is skipped and waits, as vLLM's scheduler does; the step pays for bringing new adapters in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sim_gpu.engine.kv_cache_manager import KVCacheManager
from sim_gpu.engine.lora import LoraSlots
from sim_gpu.engine.policy import PriorityWaiting, make_waiting, victim_index
from sim_gpu.engine.request import PREEMPTED, RUNNING, WAITING, WAITING_FOR_REMOTE_KVS, Request
from sim_gpu.latency import BatchShape


@dataclass
class ScheduledBatch:
    """One step's plan: (request, tokens to compute) pairs, the batch shape for the latency model."""

    entries: list[tuple[Request, int]] = field(default_factory=list)
    shape: BatchShape = field(default_factory=BatchShape)
    num_scheduled_tokens: int = 0
    preempted: list[Request] = field(default_factory=list)
    new_hits: list[tuple[Request, int, int]] = field(default_factory=list)  # (request, local hit tokens, remote tokens)
    lora_load_s: float = 0.0  # seconds this step spends bringing LoRA adapters into GPU slots


class Scheduler:
    """Waiting queue + running list over a KVCacheManager."""

    def __init__(
        self,
        kv: KVCacheManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        policy: str = "fcfs",
    ) -> None:
        self.kv = kv
        self.policy = policy
        self.waiting: deque[Request] | PriorityWaiting = make_waiting(policy)
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.running: list[Request] = []
        self._run_seq = 0  # admission order stamp (Request.run_seq): the running list is sorted by it
        # ids of waiting requests that hold blocks (only the remote / tier-load path allocates to a request
        # that stays waiting): empty means no waiting request holds blocks, so blocked admission need not scan
        self._holders: set[int] = set()
        self.lora: LoraSlots | None = None  # LoRA residency and max_loras (None: LoRA disabled)

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def schedule(
        self,
        now: float,
        transfer_time,
        skip: int = 0,
        skip_ctx: int = 0,
        advance_tiers: bool = True,
        no_admit: bool = False,
    ) -> ScheduledBatch:
        """Plan one step at simulated time `now`. `transfer_time(req, num_tokens)` prices remote KV loads.

        `skip`/`skip_ctx`: the first `skip` running requests are decodes the engine advances itself (its lazy
        fast-forward path, see engine.py) over `skip_ctx` tokens of context; they take one token of budget
        each and count in the batch shape, but are not listed in `entries` nor touched here. `no_admit`:
        the engine already preempted for them this step (so, as after any preemption, nobody is admitted).
        """
        out = ScheduledBatch()
        shape = out.shape
        entries = out.entries
        budget = self.max_num_batched_tokens - skip
        kv = self.kv
        bs = kv.block_size
        max_len = self.max_model_len
        tiers = kv.pool.tiers  # lower KV tiers (kvtiers), or None
        if tiers is not None and advance_tiers:
            tiers.advance(now)

        # 1. Running requests (decodes, continuing prefill chunks).
        running = self.running
        append = entries.append
        dec_n, dec_ctx = skip, skip_ctx  # decodes are summed here, not one method call each (hot loop)
        i = skip
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            n = req.num_tokens - computed
            if n == 1 and budget >= 1 and computed < max_len - 1:
                end = computed + 1
                # Fast path: a decode whose slot exists and which fills no block: nothing to allocate or cache.
                if not (end <= len(req.blocks) * bs and end // bs <= req.num_cached_blocks):
                    if not self._allocate_or_preempt(req, 1, out.preempted, i):
                        break
                append((req, 1))
                budget -= 1
                if req.num_output_tokens > 0:
                    dec_n += 1
                    dec_ctx += computed
                else:
                    shape.add_prefill(1, computed)
                i += 1
                continue
            n = min(n, budget, max_len - 1 - computed)
            if n <= 0:
                i += 1
                continue
            # Fast path: the slots already exist and no block fills -> nothing to allocate or cache.
            if not (computed + n <= len(req.blocks) * bs and (computed + n) // bs <= req.num_cached_blocks):
                if not self._allocate_or_preempt(req, n, out.preempted, i):
                    break
            append((req, n))
            budget -= n
            shape.add_prefill(n, computed)
            i += 1
        if dec_n:
            shape.add_decode(dec_ctx, dec_n)

        lora = self.lora
        active = None if lora is None else {r.lora_name for r in running if r.lora_name is not None}

        # 2. Waiting requests, only when nothing was preempted this step.
        if not out.preempted and not no_admit:
            skipped: list[Request] = []
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < self.max_num_seqs:
                req = waiting[0]
                lname = req.lora_name
                if lname is not None and lora is not None and active is not None and not lora.admits(lname, active):
                    skipped.append(waiting.popleft())  # its adapter would exceed max_loras in this batch
                    continue
                tier_digests = None
                if req.status == WAITING_FOR_REMOTE_KVS:
                    if now < req.remote_ready_at:
                        skipped.append(waiting.popleft())
                        continue
                    self._finish_remote_load(req)
                    hits, local = [], 0
                    num_computed = req.num_computed_tokens
                    external = 0
                elif req.num_computed_tokens == 0:
                    hits, local = kv.get_computed_blocks(req)
                    external = 0
                    rp = req.remote_prefill
                    if rp is not None and not req.scheduled_once:
                        external = max(0, min(rp.num_tokens, req.prompt_len) - local)
                    elif tiers is not None and not req.scheduled_once:
                        # GPU prefix miss: the next blocks may sit in CPU / disk; they load like remote KV.
                        tier_digests = req.block_hashes[local // bs : (req.num_tokens - 1) // bs]
                        external = tiers.lookup_prefix(tier_digests) * bs
                    num_computed = local + external
                else:
                    hits, local, external = [], 0, 0
                    num_computed = req.num_computed_tokens
                if external > 0:
                    # P/D decode side: hold blocks for the incoming KV, wait for the transfer, compute nothing.
                    # A tier load reserves the whole prompt (+1 token) now: a request holding loaded KV in
                    # the waiting queue cannot be preempted, so it must not need more blocks to start.
                    n_alloc = external if tier_digests is None else req.num_tokens + 1 - local
                    if kv.allocate_slots(req, n_alloc, local, hits, delay_cache_blocks=True) is None:
                        break
                    waiting.popleft()
                    self._holders.add(id(req))
                    wait_s = None
                    if tier_digests is not None:  # read (verified) now that the slots exist
                        n_tier, wait_s = tiers.load_prefix(tier_digests[: external // bs])
                        external = n_tier * bs
                    req.num_computed_tokens = local
                    req.num_remote_tokens = external
                    req.num_cached_tokens = local + external
                    req.status = WAITING_FOR_REMOTE_KVS
                    req.remote_ready_at = now + (transfer_time(req, external) if wait_s is None else wait_s)
                    out.new_hits.append((req, local, external))
                    req.scheduled_once = True
                    req.scheduled_at = now
                    skipped.append(req)
                    continue
                n = min(req.num_tokens - num_computed, budget)
                if kv.allocate_slots(req, n, local, hits) is None:
                    # A request holding no blocks must not stall those behind it that hold loaded KV
                    # (tier loads / remote KV): they could never free what it waits for.
                    if not req.blocks and self._holders and any(r.blocks for r in waiting):
                        skipped.append(waiting.popleft())
                        continue
                    break
                waiting.popleft()
                if self._holders:
                    self._holders.discard(id(req))
                if req.num_cached_tokens < 0:
                    req.num_cached_tokens = num_computed
                if not req.scheduled_once:
                    out.new_hits.append((req, local, 0))
                    req.scheduled_once = True
                    req.scheduled_at = now
                req.num_computed_tokens = num_computed
                req.status = RUNNING
                req.run_seq = self._run_seq
                self._run_seq += 1
                running.append(req)
                if active is not None and req.lora_name is not None:
                    active.add(req.lora_name)
                entries.append((req, n))
                budget -= n
                shape.add_prefill(n, num_computed)
            if skipped:
                waiting.extendleft(reversed(skipped))
        if active and lora is not None:
            out.lora_load_s = lora.activate(active)
        out.num_scheduled_tokens = self.max_num_batched_tokens - budget
        for req, n in entries:
            req.num_computed_tokens += n
        return out

    def admission_blocked(self, skip: int) -> tuple[bool, bytes | None]:
        """Whether `schedule(skip=len(running))` — every running request a decode the engine advances itself —
        would admit nobody because the waiting head cannot start (seats, token budget or blocks), and the one
        digest whose caching could change that while seats, budget and free blocks do not grow: the head's
        first prompt block not cached (None if there is none). (False, None) where this is not worked out:
        LoRA, lower tiers, remote KV, waiting requests holding blocks, a head with computed tokens."""
        waiting = self.waiting
        if not waiting or self.lora is not None or self._holders or self.kv.pool.tiers is not None:
            return False, None
        if len(self.running) >= self.max_num_seqs:
            return True, None
        budget = self.max_num_batched_tokens - skip
        if budget <= 0:
            return True, None
        req = waiting[0]
        if req.status == WAITING_FOR_REMOTE_KVS or req.remote_prefill is not None or req.num_computed_tokens:
            return False, None
        kv = self.kv
        bs = kv.block_size
        if not req.blocks and req.num_tokens <= self.max_model_len:
            # Even with every full prompt block a hit, its first chunk needs more blocks than are free: blocked,
            # and no cached block can change that (only freed blocks can), without looking the hits up.
            most = (req.num_tokens - 1) // bs * bs if kv.enable_caching else 0
            if -(-min(req.num_tokens - most, budget) // bs) > kv.pool.num_free_blocks:
                return True, None
        hits, local = kv.get_computed_blocks(req)
        if self.kv.can_allocate(req, min(req.num_tokens - local, budget), local, hits):
            return False, None
        k = len(hits)
        grows = self.kv.enable_caching and k < (req.num_tokens - 1) // self.kv.block_size
        return True, req.block_hashes[k] if grows else None

    def _allocate_or_preempt(self, req: Request, num_tokens: int, preempted: list[Request], i: int) -> bool:
        """Slots for `num_tokens` more tokens of `req` (= running[i]), preempting the policy's victims (fcfs: the
        most recently started first, as vLLM does) until they fit. False when `req` itself had to go."""
        running = self.running
        while self.kv.allocate_slots(req, num_tokens) is None:
            victim = running.pop(victim_index(self.policy, running, i))
            self._preempt(victim)
            preempted.append(victim)
            if victim is req:
                return False
        return True

    def _finish_remote_load(self, req: Request) -> None:
        """Remote KV arrived: it counts as computed (all but the last prompt token, which is recomputed)."""
        computed = req.num_computed_tokens + req.num_remote_tokens
        if computed >= req.num_tokens:
            computed = req.num_tokens - 1
        req.num_computed_tokens = computed
        self.kv.cache_blocks(req, computed)
        req.status = WAITING

    def _preempt(self, req: Request) -> None:
        self.kv.free(req)
        req.status = PREEMPTED
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.waiting.appendleft(req)

    def remove(self, req: Request) -> None:
        """Drop a request from whichever queue holds it (finish or abort); the caller frees its blocks."""
        self._holders.discard(id(req))
        if req.status in (RUNNING,) and req in self.running:
            self.running.remove(req)
        else:
            try:
                self.waiting.remove(req)
            except ValueError:
                if req in self.running:
                    self.running.remove(req)
