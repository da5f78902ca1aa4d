"""The engine's public value types: what goes in (EngineRequest), what comes out of a step (StepResult,
RequestOutput) and the counters a server exports as vLLM metrics (EngineStats).

They are plain dataclasses with no behaviour so that the HTTP shell, the offline planner and tests can build
and read them without knowing how the engine works. `Request` is the engine's private, mutable state of one
request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["length", "stop", "abort"]


@dataclass
class RemotePrefill:
    """Decode side of P/D: the first `num_tokens` prompt tokens' KV arrive from a remote prefill pod.

    The engine allocates their blocks without computing them and holds the request for `transfer_time_s`
    (None: the engine's latency model prices the transfer over its network profile).
    """

    num_tokens: int
    transfer_time_s: float | None = None
    remote_block_hashes: list[Any] | None = None  # informational (from kv_transfer_params)
    remote_tp: int | None = (
        None  # the prefill pod's TP size (kv_transfer_params tp_size): fewer GPUs, more bytes per NIC
    )


@dataclass
class EngineRequest:
    """One generation request in token ids (tokenization happens before the engine)."""

    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    ignore_eos: bool = False
    cache_salt: str | None = None
    arrival_time: float = 0.0
    priority: int = 0
    remote_prefill: RemotePrefill | None = None
    prefill_only: bool = False  # P/D prefill side: compute the prompt's KV, emit one token, keep blocks cached
    output_token_ids: list[int] | None = None  # replay: emit these tokens first (e.g. a recorded trace)
    seed: int | None = None  # the request's sampling seed (None: the engine's; the prompt alone decides)
    # Digests of the prompt's full blocks that the caller already took with this engine's hash setting (the
    # planner's router hashed the prompt to route it): trusted, so the engine does not hash them again.
    prompt_block_hashes: list[bytes] | None = None
    lora_name: str | None = None  # the LoRA adapter serving it (registered with SimEngine.enable_lora); None: base
    # Multimodal items as (identifier, offset, placeholder count) in prompt order: their blocks hash with
    # vLLM's mm extra keys; with `mm_encode` the engine runs their encoder when it first schedules the request
    # (False: the embeddings came from an encode pod, E/P/D).
    mm_items: list[tuple[str, int, int]] | None = None
    mm_encode: bool = True


@dataclass(slots=True)
class RequestOutput:
    """What one request produced in one step (the engine builds it with `of`)."""

    request_id: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None
    num_prompt_tokens: int
    num_cached_tokens: int  # prefix-cache hit tokens (local + remote) counted when first scheduled
    first_token: bool  # these are the request's first output tokens (TTFT ends now)
    num_output_tokens: int = 0  # output tokens so far, including these
    block_hashes: list[Any] | None = None  # prefill_only requests, when finished: event hashes of its full blocks
    block_ids: list[int] | None = None  # prefill_only requests, when finished: the blocks holding its KV
    num_remote_tokens: int = 0  # tokens whose KV came from a remote prefill (P/D decode side)
    token_times: list[float] | None = None  # fast_forward only: simulated time each new token was produced
    scheduled_at: float = -1.0  # engine time the request was first scheduled (-1: not yet)
    num_preemptions: int = 0  # times the request was preempted so far (vllm:request_num_preemptions)

    @classmethod
    def of(
        cls,
        req: Request,
        new_token_ids: list[int],
        finish_reason: FinishReason | None = None,
        first_token: bool = False,
    ) -> RequestOutput:
        """The output of `req` as its counters stand now (they already include `new_token_ids`)."""
        return cls(
            request_id=req.request_id,
            new_token_ids=new_token_ids,
            finished=finish_reason is not None,
            finish_reason=finish_reason,
            num_prompt_tokens=req.prompt_len,
            num_cached_tokens=req.num_cached_tokens if req.num_cached_tokens > 0 else 0,
            first_token=first_token,
            num_output_tokens=req.num_output_tokens,
            num_remote_tokens=req.num_remote_tokens,
            scheduled_at=req.scheduled_at,
            num_preemptions=req.num_preemptions,
        )


@dataclass
class StepResult:
    """One engine step: how long it takes in simulated seconds, what it produced, which KV events fired."""

    duration_s: float
    outputs: list[RequestOutput] = field(default_factory=list)
    kv_events: list[Any] = field(default_factory=list)  # kvtiers.kvevents BlockStored/BlockRemoved/AllBlocksCleared
    num_scheduled_tokens: int = 0
    num_prefill_tokens: int = 0
    num_decode_seqs: int = 0
    num_preempted: int = 0
    idle: bool = False  # nothing was scheduled (e.g. empty, or waiting on KV transfers); duration_s is 0


@dataclass
class FastForwardResult:
    """What `SimEngine.fast_forward(now, until)` did: the steps of a step-by-step loop, merged per request.

    `outputs` holds one RequestOutput per request with tokens to report (in no particular order):
    `new_token_ids` in order, `token_times` the simulated time each was produced (the end of its step),
    `first_token`/`finished`/`finish_reason`/`block_*` as the last step left them. Plain decode tokens may be
    reported a call late (see SimEngine.fast_forward); firsts and finishes never are.
    `kv_events` are every step's events in order, `kv_event_times` the end of the step that fired each.
    """

    start_s: float
    end_s: float  # when the engine's next step would start (== start_s + sum(step_durations))
    num_steps: int = 0
    outputs: list[RequestOutput] = field(default_factory=list)
    kv_events: list[Any] = field(default_factory=list)
    kv_event_times: list[float] = field(default_factory=list)
    step_durations: list[float] = field(default_factory=list)  # one per step (idle steps included)
    num_generated_tokens: int = 0
    num_prefill_tokens: int = 0
    num_scheduled_tokens: int = 0
    num_preempted: int = 0
    stalled: bool = False  # stopped on an idle 0 s step: nothing can run until a request arrives


@dataclass
class EngineStats:
    """Gauges and cumulative counters, named after the vLLM metrics they feed."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float  # vllm:kv_cache_usage_perc (0..1)
    prefix_cache_queries_tokens: int  # vllm:prefix_cache_queries_total
    prefix_cache_hits_tokens: int  # vllm:prefix_cache_hits_total
    num_preemptions: int  # vllm:num_preemptions_total
    prompt_tokens_total: int  # vllm:prompt_tokens_total
    generation_tokens_total: int  # vllm:generation_tokens_total
    num_gpu_blocks: int
    block_size: int
    num_requests_finished: int = 0
    num_waiting_for_remote_kv: int = 0


# ---- engine-private state --------------------------------------------------------------------------------

WAITING = 0
WAITING_FOR_REMOTE_KVS = 1
RUNNING = 2
PREEMPTED = 3
FINISHED = 4


class Request:
    """Mutable state of one request inside the engine (vLLM's `Request`): tokens, progress, hashes."""

    __slots__ = (
        "request_id",
        "prompt_len",
        "prompt_token_ids",
        "output_token_ids",
        "max_tokens",
        "ignore_eos",
        "cache_salt",
        "arrival_time",
        "priority",
        "remote_prefill",
        "prefill_only",
        "status",
        "num_computed_tokens",
        "num_output_tokens",
        "num_cached_tokens",
        "num_remote_tokens",
        "block_hashes",
        "num_preemptions",
        "remote_ready_at",
        "token_stream",
        "scheduled_once",
        "num_tokens",
        "blocks",
        "num_cached_blocks",
        "run_seq",
        "lazy_at",
        "hit_memo",
        "due_at",
        "scheduled_at",
        "lora_name",
        "mm_items",
        "mm_encode",
    )

    def __init__(self, req: EngineRequest, token_stream: Any) -> None:
        self.request_id = req.request_id
        self.prompt_len = len(req.prompt_token_ids)
        self.max_tokens = 1 if req.prefill_only else req.max_tokens
        # The tokens so far are prompt_token_ids + output_token_ids[:num_output_tokens] (vLLM's all_token_ids),
        # kept apart: the prompt is the caller's list, never changed here (copying a many-KB prompt per request
        # was ~4% of a planned run's CPU; `tokens` slices across the two). Output tokens past
        # num_output_tokens are drawn ahead of time (fast-forward), not produced yet: they are taken in order.
        prompt = req.prompt_token_ids
        self.prompt_token_ids: list[int] = prompt if type(prompt) is list else list(prompt)
        self.output_token_ids: list[int] = []
        self.ignore_eos = req.ignore_eos
        self.cache_salt = req.cache_salt
        self.arrival_time = req.arrival_time
        self.priority = req.priority
        self.remote_prefill = req.remote_prefill
        self.prefill_only = req.prefill_only
        self.status = WAITING
        self.num_computed_tokens = 0
        self.num_output_tokens = 0
        self.num_cached_tokens = -1
        self.num_remote_tokens = 0
        self.block_hashes: list[bytes] = list(req.prompt_block_hashes) if req.prompt_block_hashes else []
        self.num_preemptions = 0
        self.remote_ready_at = 0.0
        self.token_stream = token_stream
        self.scheduled_once = False
        self.num_tokens = self.prompt_len  # len(all_token_ids), kept as a field: read on every step
        self.blocks: list[Any] = []  # KV blocks held, in token order (KVCacheManager's)
        self.num_cached_blocks = 0  # how many of them are registered in the prefix cache
        self.run_seq = 0  # admission order into the running list (set by the scheduler)
        # Lazy decode (SimEngine.fast_forward): the counters above are as of engine step `lazy_at` (-1: not
        # lazy, they are current); the tokens of the steps since then are the next drawn-ahead outputs.
        self.lazy_at = -1
        self.due_at = -1  # lazy: the engine step at which it next needs the scheduler's attention
        self.hit_memo: Any = None  # KVCacheManager.get_computed_blocks' last answer, re-validated on reuse
        self.scheduled_at = -1.0  # engine time it was first scheduled (vLLM's queue time ends there)
        self.lora_name = req.lora_name
        self.mm_items = req.mm_items or ()
        self.mm_encode = req.mm_encode

    @property
    def all_token_ids(self) -> list[int]:
        """Prompt and output tokens, joined (a copy: for inspection; the engine slices with `tokens`)."""
        return self.prompt_token_ids + self.output_token_ids[: self.num_output_tokens]

    def tokens(self, start: int, end: int) -> list[int]:
        """`all_token_ids[start:end]` (0 <= start <= end <= num_tokens) without joining the two lists."""
        p = self.prompt_len
        if end <= p:
            return self.prompt_token_ids[start:end]
        if start >= p:
            return self.output_token_ids[start - p : end - p]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - p]

    def append_token(self, token: int) -> None:
        del self.output_token_ids[self.num_output_tokens :]  # (tokens drawn ahead give way)
        self.output_token_ids.append(token)
        self.num_tokens += 1
        self.num_output_tokens += 1
