"""The scheduler's data: endpoints with their scraped metrics, requests, and scheduling results.

Plain objects with no I/O: the data layer fills `Endpoint.metrics`, the gateway builds `LLMRequest`, the
scheduler returns `SchedulingResult`, whose `to_decision_dict()` is what `/debug/decisions` publishes.
Per-candidate score tables are built lazily so a decision nobody inspects costs nothing extra.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from router_lite.cycle_state import CycleState, StateKey

Role = Literal["prefill", "decode", "both", "encode"]
ROLE_LABEL = "llm-d.ai/role"
ROLES: tuple[str, ...] = ("prefill", "decode", "both", "encode")  # encode: E/P/D's multimodal encoder pods


@dataclass
class EndpointMetrics:
    """What the data layer scrapes from a pod's `/metrics` (vLLM names); `updated_at` is monotonic seconds."""

    waiting_queue_size: int = 0
    running_requests_size: int = 0
    kv_cache_usage_percent: float = 0.0  # 0..1, vLLM's kv_cache_usage_perc
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    active_models: set[str] = field(default_factory=set)  # LoRA adapters currently loaded (running_lora_adapters)
    waiting_models: set[str] = field(default_factory=set)  # LoRA adapters requests are waiting for
    max_active_models: int = 0  # max_lora; 0 = unknown / no LoRA
    base_models: set[str] = field(default_factory=set)  # the served base model (vLLM's `model_name` label)
    updated_at: float = 0.0


@dataclass(eq=False)
class Endpoint:
    """One schedulable target: a pod, or one data-parallel rank of a pod (its own port)."""

    address: str
    port: int
    labels: dict[str, str] = field(default_factory=dict)
    dp_rank: int | None = None
    healthy: bool = True
    metrics: EndpointMetrics = field(default_factory=EndpointMetrics)
    name: str | None = None  # pod name when known
    key: str = field(init=False)
    role: Role = field(init=False)

    def __post_init__(self) -> None:
        self.key = f"{self.address}:{self.port}"
        role = self.labels.get(ROLE_LABEL, "both")
        self.role = role if role in ROLES else "both"  # type: ignore[assignment]

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Endpoint({self.key}, role={self.role})"

    @classmethod
    def parse(cls, spec: str, role: str | None = None, **kw: Any) -> "Endpoint":
        """`host:port` (optionally `host:port@role`) -> Endpoint; raises ValueError with what was expected."""
        text, _, at_role = spec.partition("@")
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint {spec!r}: expected host:port, e.g. 127.0.0.1:8000")
        labels = dict(kw.pop("labels", {}) or {})
        role = at_role or role
        if role:
            if role not in ROLES:
                raise ValueError(f"endpoint {spec!r}: role expected one of {', '.join(ROLES)}, got {role!r}")
            labels[ROLE_LABEL] = role
        return cls(host, int(port), labels=labels, **kw)


# The block size (tokens per hash) the gateway hashed `block_hashes` at.
BLOCK_SIZE: StateKey[int] = StateKey("block_size")
# The full digests behind `block_hashes` and the (block size, algorithm, seed) they were taken at: an engine in
# the same process hashing with that setting can take them instead of hashing the prompt again (the planner).
BLOCK_DIGESTS: StateKey[tuple[tuple[int, str, str], list[bytes]]] = StateKey("block_digests")
# The latency predictor's per-endpoint predictions for this cycle (endpoint -> {ttft_ms, tpot_ms}).
PREDICTIONS: StateKey[dict[str, dict[str, float | None]]] = StateKey("predicted_latency", per_cycle=True)
# E/P/D: the encoder pod chosen for this request's multimodal items (disagg-headers-handler names it).
ENCODE_TARGET: StateKey["Endpoint"] = StateKey("disagg:encode-target")
# Why a sheddable request should be refused with 429 (set by a plugin during the cycle).
SHED: StateKey[str] = StateKey("shed", per_cycle=True)


@dataclass
class LLMRequest:
    """A request as the scheduler sees it. `block_hashes` are vLLM event hashes for the precise index."""

    request_id: str
    model: str
    target_model: str | None = None  # after model rewrite / LoRA resolution; None = model
    prompt_token_ids: list[int] | None = None
    block_hashes: list[int | bytes] | None = None
    prompt_text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    priority: int = 0
    session_id: str | None = None
    lora_name: str | None = None
    multimodal: int = 0  # image / video / audio parts in the chat messages (E/P/D's encode decider)
    # Those parts as placeholders in prompt_token_ids: (identifier, offset, count); their blocks hash with them.
    mm_items: list[tuple[str, int, int]] = field(default_factory=list)
    cache_salt: str | None = None
    client_request_id: str | None = None  # the client's x-request-id (forwarded to pods; never a key here)
    arrival: float = field(default_factory=time.monotonic)
    # What plugins derived for this request (block hashes once per block size, matches per cycle, ...).
    state: CycleState = field(default_factory=CycleState, repr=False)

    @property
    def prompt_tokens(self) -> int:
        """Token count when tokenized, else an estimate of 4 characters per token (as llm-d estimates)."""
        if self.prompt_token_ids is not None:
            return len(self.prompt_token_ids)
        return (len(self.prompt_text or "") + 3) // 4

    @property
    def effective_model(self) -> str:
        return self.target_model or self.model


@dataclass(eq=False)
class ProfileRunResult:
    """One profile's run: the candidates after filters, raw scores per scorer, weights, totals, chosen."""

    profile: str
    endpoints: list[Endpoint]
    raw_scores: dict[str, dict[str, float]]  # scorer name -> endpoint key -> raw score
    weights: dict[str, float]  # scorer name -> weight
    totals: dict[str, float]  # endpoint key -> weighted sum
    chosen: list[Endpoint]
    prefix_blocks: dict[str, int] = field(default_factory=dict)  # endpoint key -> matched prefix blocks
    prefix_block_size: int | None = None  # tokens per prefix block, for cached-token estimates
    filtered_out: int = 0
    # endpoint key -> {medium: prefix blocks}: which KV tier each hit comes from (precise scorer, tiered stacks)
    prefix_tiers: dict[str, dict[str, int]] | None = None
    prefix_total_blocks: int = 0  # the request's full prompt blocks, in the unit of prefix_blocks
    # (extension point, plugin type, plugin name, seconds) per plugin call: EPP's plugin_duration_seconds
    plugin_durations: list[tuple[str, str, str, float]] = field(default_factory=list)

    @property
    def candidates(self) -> list[dict[str, Any]]:
        """[{endpoint, role, scores: {scorer: {raw, weighted}}, total, prefix_blocks[, prefix_tiers]}] by total."""
        tiers = self.prefix_tiers
        out = []
        for ep in self.endpoints:
            k = ep.key
            scores = {}
            for name, raw in self.raw_scores.items():
                r = raw.get(k, 0.0)
                scores[name] = {"raw": round(r, 6), "weighted": round(_clamp(r) * self.weights[name], 6)}
            c = {
                "endpoint": k,
                "role": ep.role,
                "scores": scores,
                "total": round(self.totals.get(k, 0.0), 6),
                "prefix_blocks": self.prefix_blocks.get(k, 0),
            }
            if tiers is not None:
                c["prefix_tiers"] = tiers.get(k, {})
            if ep.dp_rank is not None:  # wide EP: say which data-parallel rank of which pod this endpoint is
                c["dp_rank"] = ep.dp_rank
                c["name"] = ep.name
            out.append(c)
        out.sort(key=lambda c: -c["total"])
        return out

    @property
    def target(self) -> Endpoint | None:
        return self.chosen[0] if self.chosen else None

    def cached_tokens(self, endpoint: Endpoint | None = None) -> int:
        """Prompt tokens the prefix scorer found cached on `endpoint` (default: the chosen one)."""
        ep = endpoint or self.target
        if ep is None or not self.prefix_block_size:
            return 0
        return self.prefix_blocks.get(ep.key, 0) * self.prefix_block_size


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


@dataclass(eq=False)
class SchedulingResult:
    """The outcome of one scheduling cycle: decode (main) target, optional prefill target, and why."""

    request: LLMRequest
    target: Endpoint | None
    prefill: Endpoint | None = None
    encode: Endpoint | None = None  # E/P/D: the encoder pod that runs the multimodal items first
    profile_results: dict[str, ProfileRunResult] = field(default_factory=dict)
    primary_profile: str = ""
    reason: str = ""
    scheduling_time_s: float = 0.0
    ts: float = field(default_factory=time.time)
    prefill_unavailable: bool = False  # P/D wanted but no prefill endpoint: served decode-only
    load: dict[str, dict[str, int]] = field(default_factory=dict)  # endpoint -> in-flight load when scheduled
    predictions: dict[str, dict[str, float]] = field(default_factory=dict)  # endpoint -> predicted ttft/tpot ms

    @property
    def ok(self) -> bool:
        return self.target is not None

    def ranked(self, profile: str | None = None) -> list[Endpoint]:
        """Candidates of a profile (default: primary) best first, chosen first — the retry order."""
        pr = self.profile_results.get(profile or self.primary_profile)
        if pr is None:
            return [self.target] if self.target else []
        chosen_keys = {e.key for e in pr.chosen}
        rest = sorted((e for e in pr.endpoints if e.key not in chosen_keys), key=lambda e: -pr.totals.get(e.key, 0.0))
        return list(pr.chosen) + rest

    def to_decision_dict(self) -> dict[str, Any]:
        """The JSON-able decision object published on `/debug/decisions`."""
        req = self.request
        candidates = []
        for name, pr in self.profile_results.items():
            for c in pr.candidates:
                c["profile"] = name
                c["prefix_match_blocks"] = c.pop("prefix_blocks")
                if c["endpoint"] in self.load:
                    c["inflight"] = self.load[c["endpoint"]]
                if c["endpoint"] in self.predictions:
                    c["predicted"] = self.predictions[c["endpoint"]]
                candidates.append(c)
        return {
            "request_id": req.request_id,
            "client_request_id": req.client_request_id,
            "ts": self.ts,
            "model": req.model,
            "target_model": req.effective_model,
            "lora": req.lora_name,
            "prompt_tokens": req.prompt_tokens,
            "priority": req.priority,
            "profiles_run": list(self.profile_results),
            "candidates": candidates,
            "chosen": {
                "decode": self.target.key if self.target else None,
                "prefill": self.prefill.key if self.prefill else None,
                **({"encode": self.encode.key} if self.encode else {}),  # E/P/D only
            },
            "reason": self.reason,
            "scheduling_ms": round(self.scheduling_time_s * 1000.0, 4),
            **self._ranks(),
        }

    def _ranks(self) -> dict[str, Any]:
        """`chosen_rank` {decode, prefill}: the data-parallel rank (and endpoint name) chosen, when ranks exist."""
        eps = {"decode": self.target, "prefill": self.prefill}
        if not any(e is not None and e.dp_rank is not None for e in eps.values()):
            return {}
        return {
            "chosen_rank": {
                k: (None if e is None or e.dp_rank is None else {"rank": e.dp_rank, "name": e.name})
                for k, e in eps.items()
            }
        }
