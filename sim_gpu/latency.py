"""Roofline latency model: how long one engine step takes on given hardware, model and parallelism.

In the style of BLIS: a step's time is the larger of its compute time (FLOPs over peak x MFU) and its memory
time (bytes over HBM bandwidth x efficiency), plus a fixed per-step overhead and communication that is not
hidden (tensor-parallel all-reduce, expert-parallel all-to-all). FLOPs are 2 x active parameters per token
plus attention over each token's context; bytes are the weights read once per step plus the KV cache read by
every sequence in the batch. Prefill (many tokens per sequence) therefore lands compute-bound and decode
(one token per sequence) memory-bound, which is the fact routing, P/D and offload policies play against.

Correction coefficients (`Coefficients`) scale each term and add per-token/per-sequence costs; `sim calibrate`
fits them from measurements. Optional jitter draws from a caller-provided seeded RNG so runs replay exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields

from sim_gpu.hw_profiles import (
    GIB,
    HardwareProfile,
    ModelProfile,
    NetworkProfile,
    load_hardware,
    load_model,
    load_network,
)

DEFAULT_NETWORK = "rdma-200g"
GPUS_PER_NODE = 8


@dataclass
class Coefficients:
    """Correction factors: step = overhead_s + per_token_s*tokens + per_seq_s*seqs
    + max(compute*t_compute, memory*t_memory) + comm*t_comm. `overhead_s` None keeps the hardware's."""

    compute: float = 1.0
    memory: float = 1.0
    comm: float = 1.0
    overhead_s: float | None = None
    per_token_s: float = 0.0
    per_seq_s: float = 0.0
    # Serving costs outside the engine's steps (vLLM's API server): a request reaches the engine
    # `request_in_s` after the client sent it (HTTP, parsing, input processing); a token reaches the client
    # `token_out_s` after the step that produced it (output processing, detokenization, streaming).
    request_in_s: float = 0.0
    token_out_s: float = 0.0
    router_s: float = 0.0  # added to request_in_s when a router proxies the request

    @classmethod
    def from_dict(cls, data: dict[str, float] | None) -> "Coefficients":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"latency coefficients: unknown key {unknown[0]!r} (expected one of {', '.join(sorted(known))})"
            )
        return cls(**{k: (None if v is None else float(v)) for k, v in data.items()})


@dataclass
class BatchShape:
    """What a step computes, in the aggregate the roofline needs (built incrementally by the scheduler)."""

    prefill_tokens: int = 0  # new tokens computed for prompt (or recompute) chunks
    prefill_attn: float = 0.0  # sum over those tokens of the context each attends to
    prefill_ctx_attn: float = 0.0  # the part of prefill_attn over context already in the KV cache (n x cached)
    prefill_kv_read: int = 0  # KV tokens read by the chunks (cached context + chunk)
    num_prefill_seqs: int = 0
    decode_seqs: int = 0
    decode_context_tokens: int = 0  # sum of decode sequences' context lengths

    def add_prefill(self, num_new_tokens: int, context_tokens: int = 0) -> None:
        """A chunk of `num_new_tokens` starting after `context_tokens` already in the KV cache."""
        n, c = num_new_tokens, context_tokens
        self.prefill_tokens += n
        self.prefill_attn += n * c + n * (n + 1) / 2
        self.prefill_ctx_attn += n * c
        self.prefill_kv_read += c + n
        self.num_prefill_seqs += 1

    def add_decode(self, context_tokens: int, count: int = 1) -> None:
        """`count` sequences generating one token each over a total of `context_tokens` context."""
        self.decode_seqs += count
        self.decode_context_tokens += context_tokens

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs

    @property
    def num_seqs(self) -> int:
        return self.num_prefill_seqs + self.decode_seqs


@dataclass
class LatencyModel:
    """Step-time physics for one engine (one data-parallel rank of `tp` GPUs).

    `ep` is the expert-parallel group size in GPUs for MoE models (wide EP: ep = data-parallel ranks x tp);
    `network` prices inter-node traffic (expert all-to-all beyond one node, P/D KV transfers).
    """

    hardware: HardwareProfile
    model: ModelProfile
    tp: int = 1
    ep: int = 1
    network: NetworkProfile | None = None
    coefficients: Coefficients = field(default_factory=Coefficients)
    jitter: float = 0.0  # relative standard deviation of a step's time (0: deterministic)
    moe_imbalance: float = 1.15  # slowest expert rank's load over the mean (wide EP)
    comm_overlap: float = 0.5  # fraction of expert all-to-all hidden behind compute (dual micro-batch)

    def __post_init__(self) -> None:
        if self.tp < 1 or self.ep < 1:
            raise ValueError(f"parallelism: tp and ep must be >= 1, got tp={self.tp} ep={self.ep}")
        if self.jitter < 0:
            raise ValueError(f"latency jitter: expected >= 0, got {self.jitter}")
        if self.hardware.coefficients and self.coefficients == Coefficients():
            self.coefficients = Coefficients.from_dict(self.hardware.coefficients)
        self._precompute()

    @classmethod
    def from_names(
        cls,
        hardware: str = "H100",
        model: str = "Llama-3.1-8B",
        tp: int = 1,
        ep: int = 1,
        network: str | None = None,
        coefficients: Coefficients | dict[str, float] | None = None,
        jitter: float = 0.0,
        **kwargs: float,
    ) -> "LatencyModel":
        """Build from profile names (or YAML paths); see hw_profiles.list_hardware/list_models/list_networks."""
        coef = coefficients if isinstance(coefficients, Coefficients) else Coefficients.from_dict(coefficients)
        hw = load_hardware(hardware)
        if coefficients is None and hw.coefficients:
            coef = Coefficients.from_dict(hw.coefficients)
        return cls(
            hardware=hw,
            model=load_model(model),
            tp=tp,
            ep=ep,
            network=load_network(network) if network else None,
            coefficients=coef,
            jitter=jitter,
            **kwargs,
        )

    # ---- derived constants -------------------------------------------------------------------------------

    def _precompute(self) -> None:
        m, hw = self.model, self.hardware
        self._routed_total_b = m.moe.num_moe_layers * m.moe.num_experts * m.moe.expert_params_b if m.moe else 0.0
        self._routed_active_b = m.moe.num_moe_layers * m.moe.experts_per_token * m.moe.expert_params_b if m.moe else 0.0
        self._dense_b = max(0.0, m.params_b - self._routed_total_b) if m.moe else m.active_params_b
        self._expert_shard = max(self.ep, self.tp)
        # Attention FLOPs per (token, context token): QK^T and AV, 2 FLOPs per multiply-add, across all heads.
        self._attn_flops_per_ctx = 4.0 * m.num_layers * m.num_attention_heads * m.head_dim / self.tp
        self._peak = hw.peak_tflops * 1e12
        self._bw = hw.hbm_tbps * 1e12 * hw.hbm_efficiency
        self._bw_weights = hw.hbm_tbps * 1e12 * (hw.hbm_efficiency_weights or hw.hbm_efficiency)
        self._overhead = (
            self.coefficients.overhead_s if self.coefficients.overhead_s is not None else hw.step_overhead_ms / 1000.0
        ) + hw.layer_overhead_us * 1e-6 * m.num_layers
        self._kv_gpu = self.kv_bytes_per_token_per_gpu()
        self._dense_weight_bytes_gpu = self._dense_b * 1e9 * m.dtype_bytes / self.tp
        self._expert_bytes_gpu = self._routed_total_b * 1e9 * m.dtype_bytes / self._expert_shard
        self._net = self.network or load_network(DEFAULT_NETWORK)

    # ---- KV and capacity ---------------------------------------------------------------------------------

    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies across the whole model (all layers, all TP shards).

        2 (K and V) x layers x KV heads x head_dim x dtype bytes; MLA stores one latent
        (kv_lora_rank + rope dims) per layer instead.
        """
        m = self.model
        if m.mla:
            return m.num_layers * (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) * m.kv_dtype_bytes
        return 2 * m.num_layers * m.num_kv_heads * m.head_dim * m.kv_dtype_bytes

    def kv_bytes_per_token_per_gpu(self) -> float:
        """KV bytes per token on one GPU: KV heads shard over TP (replicated when fewer than tp); MLA replicates."""
        m = self.model
        if m.mla:
            return float(self.kv_bytes_per_token())
        heads = max(1.0, m.num_kv_heads / self.tp)
        return 2.0 * m.num_layers * heads * m.head_dim * m.kv_dtype_bytes

    def weight_bytes_per_gpu(self) -> float:
        """Weights resident on one GPU: dense part / tp, routed experts / max(ep, tp)."""
        return self._dense_weight_bytes_gpu + self._expert_bytes_gpu

    def activation_reserve_bytes(self, max_num_batched_tokens: int = 8192) -> float:
        """Memory kept for activations and the runtime, as vLLM's profiling run would measure (rough)."""
        m = self.model
        per_token = (2 * m.intermediate_size / self.tp + 4 * m.hidden_size) * 2
        return 0.5 * GIB + max_num_batched_tokens * per_token

    def num_gpu_blocks(
        self, block_size: int, gpu_memory_utilization: float = 0.9, max_num_batched_tokens: int = 8192
    ) -> int:
        """KV-cache capacity in blocks: (memory x utilization - weights - activations) / KV bytes per block."""
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization: expected a number in (0, 1], got {gpu_memory_utilization}")
        free = (
            self.hardware.memory_bytes * gpu_memory_utilization
            - self.weight_bytes_per_gpu()
            - self.activation_reserve_bytes(max_num_batched_tokens)
        )
        blocks = int(free // (self._kv_gpu * block_size))
        if blocks < 2:
            raise ValueError(
                f"model {self.model.name} does not fit on {self.hardware.name} with tp={self.tp}"
                f" (weights {self.weight_bytes_per_gpu() / GIB:.1f} GiB per GPU, memory"
                f" {self.hardware.memory_gib:g} GiB x {gpu_memory_utilization}): raise tp/ep or pick larger hardware"
            )
        return blocks

    # ---- step time ---------------------------------------------------------------------------------------

    def set_coefficients(self, coefficients: Coefficients | dict[str, float] | None) -> None:
        """Replace the correction coefficients (e.g. freshly fitted ones) and refresh derived constants."""
        self.coefficients = (
            coefficients if isinstance(coefficients, Coefficients) else Coefficients.from_dict(coefficients)
        )
        self._precompute()

    def step_parts(self, shape: BatchShape) -> tuple[float, float, float, float, float]:
        """Uncorrected seconds of a step as (linear compute, weight reads, attention compute, KV reads, comm).

        Profiles with `mfu_attention` (fitted on a real GPU) price linear layers and attention as two rooflines
        that run one after the other, as their kernels do: max(linear FLOPs, weight bytes) + max(attention
        FLOPs, KV bytes). Profiles without it keep one roofline over the whole step: the first pair carries the
        whole step's compute and memory and the attention pair is zero.
        """
        n = shape.num_tokens
        if n == 0:
            return 0.0, 0.0, 0.0, 0.0, 0.0
        m, hw = self.model, self.hardware
        tp = self.tp
        # Compute: linear layers over active params, attention over context; prefill at MFU, decode at mfu_decode.
        dense_flops = 2.0 * self._dense_b * 1e9 / tp
        moe_flops = 2.0 * self._routed_active_b * 1e9 / tp * (self.moe_imbalance if self.ep > 1 else 1.0)
        per_token = dense_flops + moe_flops
        # Memory: weights once per step (only the experts this step's tokens touch), KV read + written.
        weight_bytes = self._dense_weight_bytes_gpu
        if m.moe:
            groups = max(1.0, self.ep / tp)  # data-parallel ranks sharing the experts, each with a similar batch
            per_expert = n * groups * m.moe.experts_per_token / m.moe.num_experts
            touched = 1.0 - math.exp(-per_expert)
            imbalance = self.moe_imbalance if self.ep > 1 else 1.0
            weight_bytes += self._expert_bytes_gpu * min(1.0, touched * imbalance)
        kv_bytes = self._kv_gpu * (shape.decode_context_tokens + shape.prefill_kv_read + n)
        comm = self._tp_allreduce_time(n) + self._ep_all_to_all_time(n)
        attn_prefill = self._attn_flops_per_ctx * shape.prefill_attn
        attn_decode = self._attn_flops_per_ctx * shape.decode_context_tokens
        if hw.mfu_attention is None:
            fl_prefill = per_token * shape.prefill_tokens + attn_prefill
            fl_decode = per_token * shape.decode_seqs + attn_decode
            t_compute = fl_prefill / (self._peak * hw.mfu) + fl_decode / (self._peak * hw.mfu_decode)
            return t_compute, (weight_bytes + kv_bytes) / self._bw, 0.0, 0.0, comm
        t_linear = per_token * (
            shape.prefill_tokens / (self._peak * hw.mfu) + shape.decode_seqs / (self._peak * hw.mfu_decode)
        )
        if hw.mfu_attention_context is None:
            t_attention = (attn_prefill + attn_decode) / (self._peak * hw.mfu_attention)
        else:  # attention over cached (paged) context runs at its own efficiency: within-chunk vs over the cache
            attn_context = self._attn_flops_per_ctx * shape.prefill_ctx_attn + attn_decode
            t_attention = (attn_prefill + attn_decode - attn_context) / (self._peak * hw.mfu_attention) + (
                attn_context / (self._peak * hw.mfu_attention_context)
            )
        return t_linear, weight_bytes / self._bw_weights, t_attention, kv_bytes / self._bw, comm

    def step_terms(self, shape: BatchShape) -> tuple[float, float, float]:
        """Uncorrected (t_compute, t_memory, t_comm) seconds of a step: what `sim calibrate` regresses on."""
        lin, weights, attn, kv, comm = self.step_parts(shape)
        return lin + attn, weights + kv, comm

    def step_time(self, shape: BatchShape, rng: random.Random | None = None) -> float:
        """Seconds one engine step takes for the batch `shape` (jittered when `rng` is given and jitter > 0)."""
        n = shape.num_tokens
        if n == 0:
            return 0.0
        c = self.coefficients
        lin, weights, attn, kv, comm = self.step_parts(shape)
        t = self._overhead + c.per_token_s * n + c.per_seq_s * shape.num_seqs
        t += max(c.compute * lin, c.memory * weights) + c.comm * comm
        if attn or kv:
            t += max(c.compute * attn, c.memory * kv)
        if self.jitter > 0 and rng is not None:
            t *= max(0.5, rng.gauss(1.0, self.jitter))
        return t

    def _tp_allreduce_time(self, n: int) -> float:
        if self.tp <= 1:
            return 0.0
        hw, m = self.hardware, self.model
        msg = n * m.hidden_size * 2  # bf16 activations
        ring = 2.0 * (self.tp - 1) / self.tp * msg / (hw.interconnect_gbps * 1e9)
        return 2 * m.num_layers * (ring + hw.interconnect_latency_us * 1e-6)

    def _ep_all_to_all_time(self, n: int) -> float:
        m = self.model
        if not m.moe or self.ep <= 1:
            return 0.0
        # Dispatch in fp8 (1 byte) and combine in bf16 (2 bytes) of hidden per routed copy of each token.
        bytes_per_layer = n / self.tp * m.moe.experts_per_token * m.hidden_size * 3.0 * (self.ep - 1) / self.ep
        remote = max(0, self.ep - GPUS_PER_NODE) / self.ep
        t_layer = (
            bytes_per_layer * remote / self._net.bytes_per_s
            + bytes_per_layer * (1 - remote) / (self.hardware.interconnect_gbps * 1e9)
            + 2 * (self._net.latency_us if remote else self.hardware.interconnect_latency_us) * 1e-6
        )
        return m.moe.num_moe_layers * t_layer * (1.0 - self.comm_overlap)

    def prefill_time(self, tokens: int, context: int = 0) -> float:
        """Seconds to prefill `tokens` new tokens after `context` cached ones, alone in a step."""
        shape = BatchShape()
        shape.add_prefill(tokens, context)
        return self.step_time(shape)

    def decode_step_time(self, batch_size: int, total_context: int) -> float:
        """Seconds of one decode step for `batch_size` sequences with `total_context` tokens of context in all."""
        shape = BatchShape()
        shape.add_decode(total_context, batch_size)
        return self.step_time(shape)

    def kv_transfer_time(
        self, num_tokens: int, network: NetworkProfile | str | None = None, remote_tp: int | None = None
    ) -> float:
        """Seconds to move `num_tokens` tokens' KV between pods (P/D): each GPU sends its shard over its own
        NIC, so bytes per GPU (tokens x KV bytes per token per GPU) / link bandwidth + one-way latency.
        With `remote_tp` (the other pod's TP size) the side with fewer GPUs carries the larger shards: a TP1
        prefill pod feeding a TP4 decode pod pushes the whole KV through one NIC (llm-d's xPyD layouts)."""
        if num_tokens <= 0:
            return 0.0
        net = load_network(network) if isinstance(network, str) else (network or self._net)
        per_gpu = self._kv_gpu
        if remote_tp is not None and 0 < remote_tp < self.tp and not self.model.mla:
            per_gpu = (
                2.0
                * self.model.num_layers
                * max(1.0, self.model.num_kv_heads / remote_tp)
                * self.model.head_dim
                * self.model.kv_dtype_bytes
            )
        return num_tokens * per_gpu / net.bytes_per_s + net.latency_us * 1e-6

    def describe(self) -> dict[str, float | str | int]:
        """Headline numbers for logs and `sim info`."""
        return {
            "hardware": self.hardware.name,
            "model": self.model.name,
            "tp": self.tp,
            "ep": self.ep,
            "weights_gib_per_gpu": round(self.weight_bytes_per_gpu() / GIB, 2),
            "kv_bytes_per_token": self.kv_bytes_per_token(),
            "decode_step_ms_bs1_ctx1k": round(self.decode_step_time(1, 1024) * 1e3, 3),
            "prefill_ms_1k": round(self.prefill_time(1024) * 1e3, 3),
        }
