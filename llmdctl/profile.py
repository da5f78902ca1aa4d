"""Profiles: what a stack is made of (model server pools, router config, KV tiers), loaded and validated.

A profile is YAML. Validation is strict — an unknown key, a wrong type or a missing field is a one-line
`ProfileError` naming the file, the key path and what was expected. `--set KEY=VALUE` overrides are applied
to the raw document before validation, so they are checked the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from llmdctl.paths import profiles_dir

Role = Literal["both", "prefill", "decode", "encode"]  # encode: E/P/D multimodal encoder pods
Engine = Literal["sim", "vllm"]


class ProfileError(ValueError):
    """A profile that cannot be used; the message is one line naming file, key and expectation."""


class PoolSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One pool of identical model servers (a Deployment in Kubernetes, a set of local processes here)."""

    name: str
    role: Role = "both"
    replicas: int = 1
    engine: Engine | None = None  # None: the profile's engine
    hardware: str = "H100"  # simulator hardware profile
    model_profile: str = "Llama-3.1-8B"  # simulator model profile (architecture for the latency model)
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    block_size: int = 16
    num_gpu_blocks: int | None = None  # KV capacity in blocks; None: GPU memory minus weights
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 32768
    # vLLM's --scheduling-policy. priority: the pod serves a request's `priority` field (lower first; the router
    # sets it from the request's objective), so a critical request overtakes the pod's own queue too.
    scheduling_policy: Literal["fcfs", "priority"] = "priority"
    hash_algo: Literal["sha256", "sha256_cbor"] = "sha256"
    kv_events: bool = True
    time_scale: float = 1.0  # simulator: simulated seconds per wall second
    labels: dict[str, str] = {}
    args: list[str] = []  # extra engine arguments, passed through verbatim
    # extra engine environment (simulated and real vLLM pods, local and Kubernetes), e.g. VLLM_SERVER_DEV_MODE=1 for
    # /reset_prefix_cache; PYTHONHASHSEED is not allowed here: llmdctl sets it so router and pods hash alike
    env: dict[str, str] = {}


class FilesystemTierSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    path: str  # shared directory; relative paths are under the run directory
    capacity_mb: int = 1024
    bandwidth_gbps: float = 5.0  # storage read bandwidth for the latency model, GB/s


class KVTiersSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Tiers below the GPU: CPU memory and a shared filesystem; typed-block policies by block type."""

    cpu_blocks: int = 0
    pcie_gbps: float = 32.0  # host<->device bandwidth for the latency model, GB/s
    filesystem: FilesystemTierSpec | None = None
    policies: dict[str, dict[str, Any]] = {}


DEFAULT_OBJECTIVES = {"critical": 1, "standard": 0, "sheddable": -1}


class RouterSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The router: its EndpointPickerConfig (llm-d's shape) and gateway settings."""

    config: dict[str, Any]
    tokenizer: str | None = None  # local Hugging Face tokenizer dir; None: the engine's /tokenize or built-in
    request_timeout_s: float = 600.0
    header_timeout_s: float = 10.0  # a pod's headers for a streaming request (sent before it generates)
    idle_timeout_s: float = 60.0  # a pause between two chunks of a streamed answer
    # Flow control on by default: without a queue and objectives, priorities did nothing on a stack started
    # by `llmdctl up` (critical and standard saw the same TTFT at 5x load). Objectives name priorities that
    # clients select with `x-gateway-inference-objective` (or the model name), as llm-d's InferenceObjective.
    queue_size: int = 1024
    queue_ttl_s: float = 30.0
    # llm-d's priority-holdback-policy minCeiling, which `up` adds with its flow control (local/flow.py): while
    # several priorities are active the lowest band is dispatched only below this fraction of the pool's seats,
    # the highest up to all of them, the bands between on a line (critical/standard/sheddable: 1.0/0.6/0.2), so
    # a critical request finds a seat free. One priority alone gets every seat. 1.0: no holdback.
    holdback_min_ceiling: float = 0.2
    objectives: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))


class Profile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    description: str
    model: str = "sim-model"  # served model name clients send
    engine: Engine = "sim"
    pools: list[PoolSpec]
    router: RouterSpec
    kv_tiers: KVTiersSpec | None = None
    network: str = "rdma-200g"  # network profile for KV transfer (P/D) and all-to-all (wide EP)
    # The model's Hugging Face tokenizer directory (tokenizer.json): simulated pods count tokens with it and the
    # router hashes with it, so a client tokenizing with the same directory (`vllm bench serve --tokenizer DIR`)
    # sees the server count what it sent. None: the model directory's own tokenizer, else the simulated model's
    # (llmdctl.simtokenizer, built once); "builtin": the simulator's word tokenizer. `llmdctl up --tokenizer DIR`.
    tokenizer: str | None = None

    def engine_of(self, pool: PoolSpec) -> str:
        return pool.engine or self.engine


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(doc: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply `KEY=VALUE` overrides with dotted keys (`pools.0.replicas=4`, `engine=vllm`) to a raw document."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProfileError(f"--set {item!r}: expected KEY=VALUE, e.g. pools.0.replicas=4")
        parts = key.split(".")
        node: Any = doc
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ProfileError(
                        f"--set {key}: {'.'.join(parts[:i]) or '$'} is a list of {len(node)}; expected an index below "
                        f"{len(node)}, got {part!r}"
                    )
                if last:
                    node[int(part)] = _parse_scalar(value)
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = _parse_scalar(value)
                else:
                    node = node.setdefault(part, {})
            else:
                raise ProfileError(
                    f"--set {key}: {'.'.join(parts[:i])} is a {type(node).__name__}, not a mapping or list"
                )
    return doc


_STRUCT_AT = {"": Profile, "router": RouterSpec, "kv_tiers": KVTiersSpec, "kv_tiers.filesystem": FilesystemTierSpec}


def _fields_at(path: str) -> list[str]:
    """Known keys of the object at a key path (`pools[0]` -> PoolSpec's fields), for 'did you mean' help."""
    generic = re.sub(r"\[\d+\]", "", path)
    cls = PoolSpec if generic == "pools" else _STRUCT_AT.get(generic)
    return list(cls.__struct_fields__) if cls else []


def _explain(message: str, doc: Any) -> str:
    """msgspec's message as `key.path: what was expected` (the key first: it is what users look for)."""
    m = re.match(r"(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", message)
    what, path = (m.group("what"), (m.group("path") or "").lstrip(".")) if m else (message, "")
    unknown = re.match(r"Object contains unknown field `(?P<key>[^`]+)`", what)
    if unknown:
        key = unknown.group("key")
        known = ", ".join(_fields_at(path))
        return f"{path + '.' if path else ''}{key}: unknown key" + (f"; expected one of {known}" if known else "")
    missing = re.match(r"Object missing required field `(?P<key>[^`]+)`", what)
    if missing:
        return f"{path + '.' if path else ''}{missing.group('key')}: missing required key"
    expected = re.match(r"Expected `(?P<exp>[^`]+)`, got `(?P<got>[^`]+)`", what)
    if expected:
        return f"{path or '$'}: expected {expected.group('exp')}, got {expected.group('got')}"
    enum = re.match(r"Invalid enum value (?P<got>.+)", what)
    if enum:
        choices = _literal_choices(path)
        if choices:
            return f"{path}: expected one of {', '.join(choices)}, got {enum.group('got')}"
    return f"{path}: {what}" if path else what


def _literal_choices(path: str) -> list[str]:
    """The allowed values of a Literal-typed key (`pools[0].role` -> both, prefill, decode)."""
    import typing

    parent, _, key = path.rpartition(".")
    generic = re.sub(r"\[\d+\]", "", parent)
    cls = PoolSpec if generic == "pools" else _STRUCT_AT.get(generic)
    if cls is None:
        return []
    hint = typing.get_type_hints(cls).get(key)
    values: list[str] = []
    for arg in typing.get_args(hint) or ():
        values += (
            [str(v) for v in typing.get_args(arg)]
            if typing.get_origin(arg) is Literal
            else ([str(arg)] if isinstance(arg, str) else [])
        )
    if typing.get_origin(hint) is Literal:
        values = [str(v) for v in typing.get_args(hint)]
    return values


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_value(value: Any) -> Any:
    """Environment values are strings; YAML and --set turn `1`/`true` into numbers and booleans."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value) if isinstance(value, (int, float)) else value


def _validate(doc: Any, source: str) -> Profile:
    if not isinstance(doc, dict):
        raise ProfileError(f"{source}: expected a YAML mapping at the top level, got {type(doc).__name__}")
    for pool_doc in doc.get("pools") or []:
        if isinstance(pool_doc, dict) and isinstance(pool_doc.get("env"), dict):
            pool_doc["env"] = {k: _env_value(v) for k, v in pool_doc["env"].items()}
    try:
        profile = msgspec.convert(doc, Profile, strict=True)
    except msgspec.ValidationError as exc:
        raise ProfileError(f"{source}: {_explain(str(exc), doc)}") from None
    for i, pool in enumerate(profile.pools):
        for field in (
            "replicas",
            "tensor_parallel_size",
            "data_parallel_size",
            "block_size",
            "max_num_seqs",
            "max_num_batched_tokens",
            "max_model_len",
        ):
            value = getattr(pool, field)
            if value < (0 if field == "replicas" else 1):
                raise ProfileError(
                    f"{source}: pools[{i}].{field}: expected {'>= 0' if field == 'replicas' else '>= 1'}, got {value}"
                )
        if pool.time_scale <= 0:
            raise ProfileError(f"{source}: pools[{i}].time_scale: expected > 0, got {pool.time_scale}")
        for key in pool.env:
            if not _ENV_NAME.fullmatch(key):
                raise ProfileError(f"{source}: pools[{i}].env: {key!r} is not an environment variable name")
            if key == "PYTHONHASHSEED":
                raise ProfileError(
                    f"{source}: pools[{i}].env: PYTHONHASHSEED is set by llmdctl (router and pods must hash alike); "
                    "set it in the shell that runs `llmdctl up` instead"
                )
    if not profile.pools:
        raise ProfileError(f"{source}: pools: expected at least one pool")
    names = [p.name for p in profile.pools]
    if len(set(names)) != len(names):
        raise ProfileError(f"{source}: pools: pool names must be unique, got {names}")
    _validate_sim_names(profile, source)
    if profile.tokenizer is not None:
        profile.tokenizer = _tokenizer_dir(profile.tokenizer, source)
    if profile.kv_tiers is not None:
        tiers = profile.kv_tiers
        for key, value in (("cpu_blocks", tiers.cpu_blocks), ("pcie_gbps", tiers.pcie_gbps)):
            if value < 0 or (key == "pcie_gbps" and value == 0):
                raise ProfileError(
                    f"{source}: kv_tiers.{key}: expected {'> 0' if key == 'pcie_gbps' else '>= 0'}, got {value}"
                )
        if tiers.filesystem is not None and (tiers.filesystem.capacity_mb <= 0 or tiers.filesystem.bandwidth_gbps <= 0):
            raise ProfileError(f"{source}: kv_tiers.filesystem: capacity_mb and bandwidth_gbps must be > 0")
    ceiling = profile.router.holdback_min_ceiling
    if not 0.0 < ceiling <= 1.0:
        raise ProfileError(f"{source}: router.holdback_min_ceiling: expected a number in (0, 1], got {ceiling}")
    _validate_router_config(profile.router.config, source)
    return profile


def _tokenizer_dir(value: str, source: str) -> str:
    """An absolute tokenizer directory holding tokenizer.json (pods and router run from other directories)."""
    if value == "builtin":
        return value
    path = Path(value).expanduser().resolve()
    if not (path / "tokenizer.json").is_file():
        raise ProfileError(
            f"{source}: tokenizer: expected a directory with tokenizer.json (e.g. from `llmdctl model "
            f"make-tiny DIR --tokenizer-only`) or builtin, got {value!r}"
        )
    return str(path)


def _validate_sim_names(profile: Profile, source: str) -> None:
    """Simulated hardware, model and network names must exist now, not when a pod fails to start."""
    from sim_gpu.hw_profiles import load_hardware, load_model, load_network

    try:
        load_network(profile.network)
    except Exception as exc:  # sim_gpu's ProfileError: one line naming the choices
        raise ProfileError(f"{source}: network: {exc}") from None
    for i, pool in enumerate(profile.pools):
        if profile.engine_of(pool) != "sim":
            continue
        for key, loader in (("hardware", load_hardware), ("model_profile", load_model)):
            try:
                loader(getattr(pool, key))
            except Exception as exc:
                raise ProfileError(f"{source}: pools[{i}].{key}: {exc}") from None


def _validate_router_config(config: dict[str, Any], source: str) -> None:
    """Check router.config with the router's own loader, so a bad plugin is a one-line error at load time."""
    try:
        from router_lite.config import load_config
        from router_lite.registry import plugin_types
    except ImportError:  # router not installed in this build: it validates again at start-up
        return
    if not plugin_types():  # a router build without plugins cannot judge; it validates again at start-up
        return
    try:
        load_config(config, origin=f"{source}: router.config")
    except ValueError as exc:  # router_lite's ConfigError is a ValueError with a one-line message
        raise ProfileError(str(exc).splitlines()[0] if str(exc) else f"{source}: router.config: invalid") from None


def list_profiles() -> list[Path]:
    return sorted(profiles_dir().glob("*.yaml"))


def resolve_profile_path(name_or_path: str) -> Path:
    """A profile by shipped name (`inference-scheduling`) or by file path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ProfileError(f"{name_or_path}: no such profile file")
        return candidate
    path = profiles_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in list_profiles())
        raise ProfileError(f"unknown profile {name_or_path!r}: expected one of {known} or a path to a YAML file")
    return path


_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def load_shipped_profile(name: str) -> Profile:
    """A shipped profile by name, never a path: what a remote caller (the router's admin API) may name."""
    if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name) or ".." in name:
        raise ProfileError(
            f"profile: expected the name of a shipped profile (a-z, 0-9, '-', '.', '_'), got {str(name)[:80]!r}"
        )
    path = profiles_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ProfileError(f"profile: no shipped profile named {name!r}")
    return load_profile(str(path))


def shipped_router_configs() -> dict[str, dict[str, Any]]:
    """Each shipped profile's router EndpointPickerConfig, by profile name (read once per process).

    Read straight from the YAML (tens of ms for all of them, where validating every profile costs a second
    of `up`): the router validates a config when it is switched to, and the shipped profiles are validated
    by the test suite. A profile without an explicit router config goes through load_profile."""
    global _ROUTER_CONFIGS
    if _ROUTER_CONFIGS is None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        out: dict[str, dict[str, Any]] = {}
        for path in list_profiles():
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
            config = ((doc or {}).get("router") or {}).get("config") if isinstance(doc, dict) else None
            out[path.stem] = config if isinstance(config, dict) else load_profile(str(path)).router.config
        _ROUTER_CONFIGS = out
    return _ROUTER_CONFIGS


_ROUTER_CONFIGS: dict[str, dict[str, Any]] | None = None


def load_profile(name_or_path: str, overrides: list[str] | None = None) -> Profile:
    """Load, override and validate a profile; every failure is a one-line ProfileError."""
    path = resolve_profile_path(name_or_path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise ProfileError(
            f"{path}:{where} invalid YAML: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not UTF-8 text (byte {exc.start}); expected a YAML profile") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    source = str(path)
    if overrides:
        if not isinstance(doc, dict):
            raise ProfileError(f"{path}: expected a YAML mapping at the top level")
        doc = apply_overrides(doc, overrides, source)
        source = f"{path} with --set {' '.join(overrides)}"  # a bad value may come from the flag, not the file
    return _validate(doc, source)


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    return msgspec.to_builtins(profile)
