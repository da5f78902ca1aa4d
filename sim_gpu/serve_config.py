"""`sim serve`'s settings and what they build: the latency model every pod shares and one engine per pod/rank.

Names follow the CLI flags (vLLM's where vLLM has the flag); `validate` gives one-line errors naming the
flag before anything binds a port.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from kvtiers.hashing import seed_from_env
from sim_gpu import pd
from sim_gpu.engine import EngineConfig, SimEngine
from sim_gpu.engine.policy import POLICIES
from sim_gpu.kv_publisher import validate_endpoint
from sim_gpu.latency import LatencyModel
from sim_gpu.lora import LoraConfig, parse_lora_module
from sim_gpu.tiers import parse_spec as parse_tiers
from sim_gpu.tools import ToolSettings


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
    scheduling_policy: str = "fcfs"
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
    tool_call_parser: str | None = None  # vLLM's flag: emulate this parser's tool calls (sim_gpu.tools)
    enable_auto_tool_choice: bool = False  # vLLM's flag: tool_choice "auto" may call tools (needs the parser)
    kv_tiers: str | None = None  # --kv-tiers: a profile's kv_tiers section as JSON, or a file holding it
    enable_lora: bool = False  # vLLM's LoRA flags (sim_gpu/lora.py)
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    lora_modules: list[str] = field(default_factory=list)  # name=path or vLLM's JSON form

    def tool_settings(self) -> ToolSettings:
        return ToolSettings(self.tool_call_parser, self.enable_auto_tool_choice)

    def validate(self) -> None:
        """One-line errors naming the flag, before anything binds."""
        self.tool_settings()  # raises ValueError naming the flag, as vLLM's start-up check
        checks = [
            (self.pods >= 1, f"--pods: expected >= 1, got {self.pods}"),
            (self.data_parallel_size >= 1, f"--data-parallel-size: expected >= 1, got {self.data_parallel_size}"),
            (
                1 <= self.port and self.port + self.pods * self.data_parallel_size - 1 <= 65535,
                f"--port: {self.port} + pods x ranks does not fit below 65536",
            ),
            (self.tp >= 1, f"--tp: expected >= 1, got {self.tp}"),
            (self.block_size >= 1, f"--block-size: expected >= 1, got {self.block_size}"),
            (self.max_num_seqs >= 1, f"--max-num-seqs: expected >= 1, got {self.max_num_seqs}"),
            (
                self.max_num_batched_tokens >= 1,
                f"--max-num-batched-tokens: expected >= 1, got {self.max_num_batched_tokens}",
            ),
            (
                self.num_gpu_blocks is None or self.num_gpu_blocks >= 1,
                f"--num-gpu-blocks: expected >= 1, got {self.num_gpu_blocks}",
            ),
            (
                self.max_model_len is None or self.max_model_len >= 2,
                f"--max-model-len: expected >= 2, got {self.max_model_len}",
            ),
            (
                self.scheduling_policy in POLICIES,
                f"--scheduling-policy: expected one of {', '.join(POLICIES)}, got {self.scheduling_policy!r}",
            ),
            (self.role in pd.ROLES, f"--role: expected one of {', '.join(pd.ROLES)}, got {self.role!r}"),
            (
                self.kv_events_form in ("map", "positional"),
                f"--kv-events-form: expected map or positional, got {self.kv_events_form!r}",
            ),
            (
                self.output_mode in ("random", "echo"),
                f"--output-mode: expected random or echo, got {self.output_mode!r}",
            ),
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
        if self.lora_modules and not self.enable_lora:
            raise ValueError("--lora-modules: serving LoRA adapters needs --enable-lora")
        if self.enable_lora:
            self.lora_config().validate()

    def lora_config(self) -> LoraConfig:
        """The LoRA flags parsed (ValueError names the flag)."""
        return LoraConfig(
            max_loras=self.max_loras,
            max_lora_rank=self.max_lora_rank,
            max_cpu_loras=self.max_cpu_loras,
            modules=[parse_lora_module(m) for m in self.lora_modules],
        )


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


def build_engine(
    cfg: ServeConfig, rank: int, offset: int, tokenizer: Any, latency: LatencyModel | None = None
) -> SimEngine:
    """The engine of one pod/rank (seeded per pod so pods do not all emit identical text)."""
    latency = latency or build_latency(cfg)
    blocks = cfg.num_gpu_blocks or latency.num_gpu_blocks(
        cfg.block_size, cfg.gpu_memory_utilization, cfg.max_num_batched_tokens
    )
    max_len = cfg.max_model_len or latency.model.max_model_len
    capacity = blocks * cfg.block_size
    if max_len > capacity:
        # vLLM refuses to start here; the simulator serves with the longest context its cache holds, as vLLM's
        # error message suggests, so that a small --num-gpu-blocks never leaves a request waiting forever.
        if offset == 0:
            sys.stderr.write(
                f"sim_gpu: max model length {max_len} exceeds the KV cache ({blocks} blocks x "
                f"{cfg.block_size} = {capacity} tokens); serving with max model length {capacity}\n"
            )
        max_len = capacity
    return SimEngine(
        EngineConfig(
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
            role="both" if cfg.role == "encode" else cfg.role,  # an encode pod's engine stays idle
            data_parallel_rank=rank,
            enable_kv_events=bool(cfg.kv_events_endpoint) or bool(cfg.kv_tiers),  # tiers replicate on GPU events
            event_hash_int=cfg.kv_events_int_hashes,
            scheduling_policy=cfg.scheduling_policy,
        )
    )
