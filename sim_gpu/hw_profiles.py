"""Hardware, model and network profiles: the spec sheets the latency model computes from.

Profiles are YAML files shipped under `sim_gpu/data/{hardware,models,networks}/`; users may also pass a path
to their own file. Names match case-insensitively on the file stem, the `name` key or an `aliases` entry.
Every number is a published spec (peak dense bf16 TFLOP/s, HBM bandwidth, memory) or a model's config.json
value, plus efficiency factors that `sim calibrate` may later fit. Bad files give one-line errors naming the
file and key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).resolve().parent / "data"
GIB = 1024**3


@dataclass(frozen=True)
class HardwareProfile:
    """One accelerator. Throughputs are per device; a pod of `tp` devices multiplies them."""

    name: str
    memory_gib: float  # device memory
    peak_tflops: float  # dense bf16/fp16 TFLOP/s
    hbm_tbps: float  # memory bandwidth, TB/s (1e12 bytes/s)
    mfu: float = 0.55  # fraction of peak reached by large GEMMs (prefill)
    mfu_decode: float = 0.35  # fraction of peak reached by skinny decode GEMMs
    hbm_efficiency: float = 0.8  # fraction of peak bandwidth reached by streaming reads (KV cache)
    # Fitted on a real GPU (bench/gpu_layer_timing.py + `sim fit-gpu`): set, attention is its own roofline
    # at this fraction of peak, and weights stream at `hbm_efficiency_weights` (skinny GEMMs read slower).
    mfu_attention: float | None = None
    # Attention over context already in the KV cache (a prefix hit's prompt tail, decode) when its kernel runs
    # at another efficiency than attention within a fresh chunk (vLLM CPU: paged vs. varlen); None: the same.
    mfu_attention_context: float | None = None
    hbm_efficiency_weights: float | None = None
    layer_overhead_us: float = 0.0  # per decoder layer per step (kernel boundaries): grows with model depth
    interconnect_gbps: float = 450.0  # intra-node link (NVLink etc.), GB/s per direction, for TP all-reduce
    interconnect_latency_us: float = 5.0
    step_overhead_ms: float = 1.0  # scheduler + launch overhead per engine step
    description: str = ""
    aliases: tuple[str, ...] = ()
    coefficients: dict[str, float] = field(default_factory=dict)  # fitted corrections, see latency.Coefficients

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB


@dataclass(frozen=True)
class MoEConfig:
    """Mixture of experts: routed experts per MoE layer and how many each token uses."""

    num_experts: int
    experts_per_token: int
    num_moe_layers: int
    expert_params_b: float  # parameters of one routed expert (billions)
    num_shared_experts: int = 0


@dataclass(frozen=True)
class MLAConfig:
    """Multi-head latent attention (DeepSeek): the KV cache holds one compressed latent per token per layer."""

    kv_lora_rank: int
    qk_rope_head_dim: int


@dataclass(frozen=True)
class ModelProfile:
    """One model's shape, from its config.json."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    params_b: float  # total parameters (billions)
    active_params_b: float  # parameters touched per token (== params_b for dense models)
    dtype_bytes: int = 2
    kv_dtype_bytes: int = 2
    max_model_len: int = 32768
    moe: MoEConfig | None = None
    mla: MLAConfig | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def is_moe(self) -> bool:
        return self.moe is not None


@dataclass(frozen=True)
class NetworkProfile:
    """A link between pods (P/D KV transfer, expert all-to-all): bandwidth per GPU and one-way latency."""

    name: str
    bandwidth_gbps: float  # Gb/s (bits)
    latency_us: float
    efficiency: float = 0.85  # achievable fraction of line rate
    description: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def bytes_per_s(self) -> float:
        return self.bandwidth_gbps * 1e9 / 8 * self.efficiency


class ProfileError(ValueError):
    """A profile that cannot be found or read; the message names the file and key."""


def _kind_dir(kind: str) -> Path:
    return DATA_DIR / kind


def _list(kind: str) -> list[str]:
    return sorted(str(_read(p)["name"]) for p in _kind_dir(kind).glob("*.yaml"))


def list_hardware() -> list[str]:
    """Names of the shipped hardware profiles."""
    return _list("hardware")


def list_models() -> list[str]:
    """Names of the shipped model profiles."""
    return _list("models")


def list_networks() -> list[str]:
    """Names of the shipped network profiles."""
    return _list("networks")


def _find(kind: str, name: str) -> tuple[Path, dict[str, Any]]:
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path, _read(path)
    want = name.strip().lower()
    for p in sorted(_kind_dir(kind).glob("*.yaml")):
        data = _read(p)
        names = {p.stem.lower(), str(data.get("name", "")).lower()}
        names.update(str(a).lower() for a in data.get("aliases", []) or [])
        if want in names:
            return p, data
    raise ProfileError(
        f"unknown {kind.rstrip('s')} profile {name!r}: expected one of {', '.join(_list(kind))} or a .yaml path"
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from None
    return dict(_read_cached(str(path), mtime))


@functools.lru_cache(maxsize=256)
def _read_cached(path_str: str, mtime: int) -> dict[str, Any]:
    path = Path(path_str)
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10x faster
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict) or "name" not in data:
        raise ProfileError(f"{path}: expected a mapping with a 'name' key")
    return data


def _build(cls: type, data: dict[str, Any], path: Path, prefix: str = "") -> Any:
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ProfileError(f"{path}: unknown key {prefix}{key!r} (expected one of {', '.join(known)})")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        ftype = str(known[key].type)
        if value is None:
            kwargs[key] = None
        elif key == "moe":
            kwargs[key] = _build(MoEConfig, value, path, "moe.")
        elif key == "mla":
            kwargs[key] = _build(MLAConfig, value, path, "mla.")
        elif key == "aliases":
            kwargs[key] = tuple(str(a) for a in value)
        elif key == "coefficients":
            if not isinstance(value, dict):
                raise ProfileError(f"{path}: {prefix}coefficients: expected a mapping")
            kwargs[key] = {str(k): float(v) for k, v in value.items()}
        elif ftype.startswith("int"):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ProfileError(f"{path}: {prefix}{key}: expected a positive integer, got {value!r}")
            kwargs[key] = value
        elif ftype.startswith("float"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ProfileError(f"{path}: {prefix}{key}: expected a non-negative number, got {value!r}")
            kwargs[key] = float(value)
        else:
            kwargs[key] = str(value)
    missing = [f.name for f in fields(cls) if f.name not in kwargs and _required(f)]
    if missing:
        raise ProfileError(f"{path}: missing key {prefix}{missing[0]!r}")
    return cls(**kwargs)


def _required(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


def load_hardware(name: str) -> HardwareProfile:
    """A hardware profile by name (H100, H200, A100, L40S, MI300X, Gaudi3, cpu) or .yaml path."""
    path, data = _find("hardware", name)
    return _build(HardwareProfile, data, path)


def load_model(name: str) -> ModelProfile:
    """A model profile by name (Llama-3.1-8B, Llama-3.1-70B, Qwen3-32B, DeepSeek-R1, tinyllama) or .yaml path."""
    path, data = _find("models", name)
    return _build(ModelProfile, data, path)


def load_network(name: str) -> NetworkProfile:
    """A network profile by name (rdma-100g, rdma-200g, rdma-400g, tcp-25g) or .yaml path."""
    path, data = _find("networks", name)
    return _build(NetworkProfile, data, path)
