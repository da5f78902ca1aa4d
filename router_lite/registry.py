"""Plugin registry by llm-d type name, and typed parameter parsing with clear errors.

Each plugin module declares a class with `type_name`, a `kind`, a `Params` dataclass (snake_case fields;
config keys are llm-d's camelCase of them, or explicit `metadata={"key": ...}`), and `create(name, params,
ctx)`. `register` files it under its type name (and deprecated aliases). `parse_params` turns a config
entry's `parameters` mapping into the Params object or raises `ConfigError` naming plugin, key and what
was expected.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

PLUGIN_KINDS: tuple[str, ...] = (
    "filter",
    "scorer",
    "picker",
    "profile_handler",
    "decider",
    "pre_request",
    # llm-d's request-control and data-layer plugins: they run around scheduling, not inside a profile.
    "producer",
    "data_source",
    "extractor",
    "parser",
    "admitter",
    "saturation_detector",
    "usage_limit_policy",
)

# Upstream plugin types router_lite knows of but does not implement: a config naming one fails with this
# reason instead of a generic "unknown type" (never silently ignored).
NOT_IMPLEMENTED: dict[str, str] = {
    "always-encode-decider": "llm-d's older E/PD decider; use always-disagg-multimodal-decider (deciders.encode)",
    "encoder-header-handler": "llm-d's older E/PD header handler; disagg-headers-handler sets x-encoder-hosts-ports",
    "ed-profile-handler": "llm-d's older E/PD profile handler; use disagg-profile-handler with deciders.encode",
    "pd-slo-pair-optimizer": "llm-d's experimental SLO pair optimizer (needs latency predictor services)",
    "pd-slo-profile-handler": "llm-d's experimental SLO profile handler (needs latency predictor services)",
    "anthropic-parser": "a request parser for the Anthropic API; router_lite serves the OpenAI API (openai-parser)",
    "vllmgrpc-parser": "a request parser for vLLM's gRPC API; router_lite serves the OpenAI API (openai-parser)",
}


class ConfigError(ValueError):
    """A user mistake in an EndpointPickerConfig: one line naming the plugin/key and what was expected."""


@dataclass(frozen=True)
class PluginType:
    type_name: str
    kind: str
    cls: type
    deprecated_alias_of: str | None = None


_REGISTRY: dict[str, PluginType] = {}
_loaded = False


def register(cls: type) -> type:
    """Class decorator: file a plugin under `cls.type_name`, `cls.synonyms` and `cls.aliases` (deprecated)."""
    kind = getattr(cls, "kind", None)
    if kind not in PLUGIN_KINDS:
        raise TypeError(f"{cls.__name__}.kind must be one of {PLUGIN_KINDS}, got {kind!r}")
    entries = [PluginType(cls.type_name, kind, cls)]
    entries += [
        PluginType(alias, kind, cls, deprecated_alias_of=cls.type_name) for alias in getattr(cls, "aliases", ())
    ]
    entries += [PluginType(synonym, kind, cls) for synonym in getattr(cls, "synonyms", ())]
    for entry in entries:  # a second plugin under a taken name would silently replace the first
        taken = _REGISTRY.get(entry.type_name)
        if taken is not None and taken.cls is not cls and _qualname(taken.cls) != _qualname(cls):
            raise TypeError(
                f"plugin type {entry.type_name!r} of {_qualname(cls)} is already registered by {_qualname(taken.cls)}"
            )
    for entry in entries:
        _REGISTRY[entry.type_name] = entry
    return cls


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_all() -> None:
    """Import every module under router_lite.plugins so their @register runs (once)."""
    global _loaded
    if _loaded:
        return
    import router_lite.plugins as pkg

    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
    _loaded = True


def load_plugins() -> None:
    """Import every plugin module now rather than at the first lookup: a one-time cost per process that a caller
    timing its own work (the planner's CPU seconds) keeps out of the measurement."""
    _load_all()


def lookup(type_name: str) -> PluginType:
    _load_all()
    try:
        return _REGISTRY[type_name]
    except KeyError:
        if type_name in NOT_IMPLEMENTED:
            raise ConfigError(
                f"plugin type {type_name!r} is not implemented by router_lite: {NOT_IMPLEMENTED[type_name]}"
            ) from None
        known = ", ".join(sorted(t for t, p in _REGISTRY.items() if p.deprecated_alias_of is None))
        raise ConfigError(f"unknown plugin type {type_name!r}; known types: {known}") from None


def plugin_types() -> dict[str, PluginType]:
    _load_all()
    return dict(_REGISTRY)


# ---- parameters ---------------------------------------------------------------------------------------


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def param_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or camel(f.name)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (a,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(a)}"
    if origin is dict:
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against a type hint; raise ConfigError naming `where` on mismatch."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return parse_dataclass(tp, value, where)
    else:  # pragma: no cover - plugin authoring error
        raise TypeError(f"unsupported parameter type {tp!r} at {where}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def parse_dataclass(cls: type, raw: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass `cls` from camelCase `raw`; unknown keys and wrong types are ConfigErrors."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of parameters, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {param_key(f): f for f in dataclasses.fields(cls) if f.init}
    aliases = getattr(cls, "ALIASES", {})  # accepted older key -> current key
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        target = aliases.get(key, key)
        f = fields.get(target)
        if f is None:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"{where}: unknown parameter {key!r}; accepted: {known}")
        kwargs[f.name] = _coerce(value, hints[f.name], f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            raise ConfigError(f"{where}.{problem}")
    return obj


@dataclass
class NoParams:
    """For plugins that take no parameters: any key is an error."""


ParamsFactory = Callable[[dict[str, Any] | None, str], Any]
