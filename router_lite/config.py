"""Loading llm-d's EndpointPickerConfig: shape checks, plugin parameter validation, injected defaults.

Accepts the same documents users give llm-d's endpoint picker (apiVersion `llm-d.ai/v1alpha1`; the legacy
`inference.networking.x-k8s.io/v1alpha1` with a warning). Defaults are injected as llm-d does: with no
`schedulingProfiles`, one profile `default` referencing every filter, scorer and picker; a profile without a
picker gets `max-score-picker`; a single profile without a profile handler gets `single-profile-handler`.
Besides plugins and profiles it acts on `dataLayer` (older name `data`: sources and their extractors),
`parser.pluginRef`, `saturationDetector` (thresholds, or `pluginRef` to a saturation-detector plugin) and
`flowControl` (its `saturationDetector` and `usageLimitPolicyPluginRef`; its other keys are reported).
Every mistake is a `ConfigError` naming where it is and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from router_lite.registry import ConfigError, lookup, parse_dataclass

__all__ = [
    "ConfigError",
    "PluginSpec",
    "ProfilePluginRef",
    "ProfileSpec",
    "SchedulerConfig",
    "load_config",
    "load_config_file",
]

API_VERSION = "llm-d.ai/v1alpha1"
LEGACY_API_VERSIONS = ("inference.networking.x-k8s.io/v1alpha1",)
KIND = "EndpointPickerConfig"
# Top-level sections besides plugins/profiles that the router acts on (validated here).
_ACTED_SECTIONS = ("saturationDetector", "dataLayer", "data", "parser", "flowControl")
# Top-level sections llm-d's EPP knows that this router does not act on: accepted and reported, not errors.
_IGNORED_SECTIONS = ("featureGates",)
# flowControl keys llm-d knows that router_lite does not act on (its queue is sized by --queue-size/--queue-ttl).
_FLOW_CONTROL_REPORTED = (
    "maxBytes",
    "maxRequests",
    "defaultRequestTTL",
    "noEndpointRequestTTL",
    "defaultPriorityBand",
    "defaultNegativePriorityBand",
    "priorityBands",
    "bandSelectionPolicyPluginRef",
    "enableEviction",
)
# Plugin kinds a scheduling profile may list; producers are accepted there (llm-d lists its tokenizer) and
# run before the profiles, not inside them.
_PROFILE_KINDS = ("filter", "scorer", "picker", "producer")
_TOP_LEVEL = ("apiVersion", "kind", "plugins", "schedulingProfiles", *_ACTED_SECTIONS, *_IGNORED_SECTIONS)


@dataclass
class PluginSpec:
    """One `plugins[]` entry: instance name, registered type, parsed parameters."""

    name: str
    type: str
    kind: str
    params: Any
    raw_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProfilePluginRef:
    plugin_ref: str
    weight: float = 1.0


@dataclass
class ProfileSpec:
    name: str
    plugins: list[ProfilePluginRef]


@dataclass
class DataSourceSpec:
    """One `dataLayer.sources[]` entry: the source plugin's name and its extractors' names."""

    plugin_ref: str
    extractors: list[str]


@dataclass
class SchedulerConfig:
    """A validated EndpointPickerConfig with llm-d's defaults injected."""

    plugins: list[PluginSpec]
    profiles: list[ProfileSpec]
    api_version: str = API_VERSION
    warnings: list[str] = field(default_factory=list)
    extra_sections: dict[str, Any] = field(default_factory=dict)  # saturationDetector (thresholds), featureGates, ...
    data_layer: list[DataSourceSpec] = field(default_factory=list)
    parser: str = "openai-parser"

    def plugin(self, name: str) -> PluginSpec:
        for p in self.plugins:
            if p.name == name:
                return p
        raise KeyError(name)

    def plugins_of_type(self, *type_names: str) -> list[PluginSpec]:
        """Plugin specs whose registered type (or its current name, for aliases) is one of `type_names`."""
        return [p for p in self.plugins if lookup(p.type).cls.type_name in type_names or p.type in type_names]

    @property
    def profile_handler(self) -> PluginSpec:
        return next(p for p in self.plugins if p.kind == "profile_handler")

    def precise_specs(self) -> list[PluginSpec]:
        """The precise prefix-cache scorers and producers: they share one index and one hashing setup."""
        return self.plugins_of_type("precise-prefix-cache-scorer", "precise-prefix-cache-producer")

    def precise_prefix_settings(self) -> Any | None:
        """Params of the first precise scorer or producer (block size, hash seed...) the gateway hashes with."""
        specs = self.precise_specs()
        return specs[0].params if specs else None

    def uses_tokens(self) -> bool:
        """Whether some plugin needs the gateway to tokenize requests (precise prefix, token producer, P/D)."""
        return any(getattr(lookup(p.type).cls, "uses_tokens", False) for p in self.plugins)

    def to_dict(self) -> dict[str, Any]:
        """The effective config (defaults injected), as an EndpointPickerConfig document."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "plugins": [
                {"name": p.name, "type": p.type, **({"parameters": p.raw_parameters} if p.raw_parameters else {})}
                for p in self.plugins
            ],
            "schedulingProfiles": [
                {"name": s.name, "plugins": [{"pluginRef": r.plugin_ref, "weight": r.weight} for r in s.plugins]}
                for s in self.profiles
            ],
        }


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def load_config(source: dict[str, Any] | str | Path, origin: str = "config") -> SchedulerConfig:
    """Validate an EndpointPickerConfig given as a mapping, YAML text or a file path; inject llm-d's defaults."""
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json"))
    ):
        return load_config_file(source)
    if isinstance(source, str):
        try:
            doc = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{origin}: not valid YAML: {str(exc).splitlines()[0]}") from None
    else:
        doc = source
    _require(isinstance(doc, dict), f"{origin}: expected an EndpointPickerConfig mapping, got {type(doc).__name__}")
    warnings: list[str] = []
    for key in doc:
        _require(key in _TOP_LEVEL, f"{origin}: unknown top-level key {key!r}; accepted: {', '.join(_TOP_LEVEL)}")
    api = doc.get("apiVersion", API_VERSION)
    if api in LEGACY_API_VERSIONS:
        warnings.append(f"{origin}: apiVersion {api!r} is deprecated; use {API_VERSION!r}")
    else:
        _require(api == API_VERSION, f"{origin}: apiVersion: expected {API_VERSION!r}, got {api!r}")
    kind = doc.get("kind", KIND)
    _require(kind == KIND, f"{origin}: kind: expected {KIND!r}, got {kind!r}")
    extra = {k: doc[k] for k in ("saturationDetector", *_IGNORED_SECTIONS) if k in doc}
    for k in extra:
        if k in _IGNORED_SECTIONS:
            warnings.append(f"{origin}: section {k!r} is accepted but not acted on by router_lite")

    plugins = _load_plugins(doc.get("plugins"), origin, warnings)
    by_name = {p.name: p for p in plugins}
    _require(
        not ("dataLayer" in doc and "data" in doc), f"{origin}: give 'dataLayer' or its older name 'data', not both"
    )
    data_key = "dataLayer" if "dataLayer" in doc else "data"
    data_layer = _load_data_layer(doc.get(data_key), by_name, f"{origin}: {data_key}")
    parser = _load_parser(doc.get("parser"), by_name, origin) if "parser" in doc else "openai-parser"
    parsers = [p.name for p in plugins if p.kind == "parser"]
    _require(len(parsers) <= 1, f"{origin}: plugins: expected at most one parser, got {', '.join(parsers)}")
    flow = _load_flow_control(doc.get("flowControl"), by_name, origin, warnings) if "flowControl" in doc else {}
    _require(
        not ("saturationDetector" in doc and "saturationDetector" in flow),
        f"{origin}: give saturationDetector at the top level or under flowControl, not both",
    )
    if "usageLimit" in flow:
        extra["usageLimit"] = flow["usageLimit"]
    if "saturationDetector" in flow:
        extra["saturationDetector"] = flow["saturationDetector"]
    elif "saturationDetector" in doc:
        extra["saturationDetector"] = _load_saturation(doc["saturationDetector"], by_name, origin)
    else:
        detectors = [p for p in plugins if p.kind == "saturation_detector"]
        if detectors:  # a detector plugin with no section still configures the detector, as its only instance
            extra["saturationDetector"] = _load_saturation({"pluginRef": detectors[0].name}, by_name, origin)
    profiles = _load_profiles(doc.get("schedulingProfiles"), by_name, origin)

    # Defaults, as llm-d injects them.
    if not profiles:
        refs = [ProfilePluginRef(p.name) for p in plugins if p.kind in ("filter", "scorer", "picker")]
        profiles = [ProfileSpec("default", refs)]
    for prof in profiles:
        if not any(by_name[r.plugin_ref].kind == "picker" for r in prof.plugins):
            if "max-score-picker" not in by_name:
                spec = _make_spec({"type": "max-score-picker"}, origin, len(plugins), warnings)
                plugins.append(spec)
                by_name[spec.name] = spec
            prof.plugins.append(ProfilePluginRef(by_name["max-score-picker"].name))
    handlers = [p for p in plugins if p.kind == "profile_handler"]
    if not handlers:
        _require(
            len(profiles) == 1,
            f"{origin}: {len(profiles)} schedulingProfiles need a profile handler plugin "
            "(e.g. disagg-profile-handler); single-profile-handler is injected only for one profile",
        )
        spec = _make_spec({"type": "single-profile-handler"}, origin, len(plugins), warnings)
        plugins.append(spec)
    else:
        _require(
            len(handlers) == 1,
            f"{origin}: plugins: expected exactly one profile handler, got {', '.join(h.name for h in handlers)}",
        )
    for prof in profiles:
        prof.plugins = [r for r in prof.plugins if by_name[r.plugin_ref].kind != "producer"]  # they run before profiles
        pickers = [r.plugin_ref for r in prof.plugins if by_name[r.plugin_ref].kind == "picker"]
        _require(
            len(pickers) == 1,
            f"{origin}: schedulingProfiles[{prof.name}]: expected one picker, got {', '.join(pickers)}",
        )
    handler = next(p for p in plugins if p.kind == "profile_handler")
    if lookup(handler.type).cls.type_name == "disagg-profile-handler" and not any(
        p.kind == "pre_request" for p in plugins
    ):
        # The decode leg must name its prefill pod (x-prefiller-host-port), as llm-d's P/D guides configure it.
        plugins.append(_make_spec({"type": "disagg-headers-handler"}, origin, len(plugins), warnings))
    cls = lookup(handler.type).cls
    problem = cls.check_profiles(handler.params, [p.name for p in profiles], by_name)
    _require(problem is None, f"{origin}: plugin {handler.name!r} ({handler.type}): {problem}")
    return SchedulerConfig(
        plugins=plugins,
        profiles=profiles,
        api_version=API_VERSION,
        warnings=warnings,
        extra_sections=extra,
        data_layer=data_layer,
        parser=parser,
    )


def _load_flow_control(raw: Any, by_name: dict[str, PluginSpec], origin: str, warnings: list[str]) -> dict[str, Any]:
    """flowControl: its saturation detector and usage-limit policy (what admission acts on); llm-d's queue
    and band settings are reported as not acted on. Returns {"saturationDetector": ..., "usageLimit": ...}."""
    where = f"{origin}: flowControl"
    _require(raw is None or isinstance(raw, dict), f"{where}: expected a mapping, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if key == "saturationDetector":
            out[key] = _load_saturation(value, by_name, where)
        elif key == "usageLimitPolicyPluginRef":
            _require(
                value in by_name, f"{where}.{key}: {value!r} names no plugin; defined: {', '.join(by_name) or 'none'}"
            )
            spec = by_name[value]
            _require(
                spec.kind == "usage_limit_policy",
                f"{where}.{key}: {value!r} is a {spec.type}, expected a usage limit policy such as "
                "priority-holdback-policy",
            )
            p = spec.params
            out["usageLimit"] = {"min_ceiling": p.min_ceiling, "max_ceiling": p.max_ceiling, "domain": p.domain}
        elif key in _FLOW_CONTROL_REPORTED:
            warnings.append(f"{where}.{key} is accepted but not acted on by router_lite (see --queue-size/--queue-ttl)")
        else:
            raise ConfigError(
                f"{where}: unknown key {key!r}; accepted: saturationDetector, usageLimitPolicyPluginRef, "
                + ", ".join(_FLOW_CONTROL_REPORTED)
            )
    return out


def _load_saturation(raw: Any, by_name: dict[str, PluginSpec], origin: str) -> dict[str, Any] | None:
    """saturationDetector drives admission (shedding, queueing): a mistake there is a load-time error.
    Returns the effective thresholds: the section's own, or those of the plugin its `pluginRef` names."""
    where = f"{origin}: saturationDetector"
    _require(raw is None or isinstance(raw, dict), f"{where}: expected a mapping, got {type(raw).__name__}")
    if raw and "pluginRef" in raw:
        others = sorted(k for k in raw if k != "pluginRef")
        _require(not others, f"{where}: with pluginRef, set thresholds on the plugin, not here ({', '.join(others)})")
        ref = raw["pluginRef"]
        _require(ref in by_name, f"{where}.pluginRef: {ref!r} names no plugin; defined: {', '.join(by_name) or 'none'}")
        spec = by_name[ref]
        _require(
            spec.kind == "saturation_detector" or getattr(lookup(spec.type).cls, "detects_saturation", False),
            f"{where}.pluginRef: {ref!r} is a {spec.type}, expected a saturation detector such as utilization-detector",
        )
        return lookup(spec.type).cls.thresholds(
            spec.raw_parameters, f"{origin}: plugin {ref!r} ({spec.type}) parameters"
        )
    from router_lite.saturation import SaturationConfig

    try:
        SaturationConfig.from_dict(raw, where=where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return raw


def _load_data_layer(raw: Any, by_name: dict[str, PluginSpec], where: str) -> list[DataSourceSpec]:
    """`dataLayer.sources[]`: each names a data-source plugin and the extractors it feeds."""
    if raw is None:
        return []
    _require(isinstance(raw, dict), f"{where}: expected a mapping with 'sources', got {type(raw).__name__}")
    for key in raw:
        _require(key == "sources", f"{where}: unknown key {key!r}; accepted: sources")
    sources = raw.get("sources") or []
    _require(isinstance(sources, list), f"{where}.sources: expected a list of {{pluginRef, extractors}}")
    out: list[DataSourceSpec] = []
    for i, src in enumerate(sources):
        w = f"{where}.sources[{i}]"
        _require(isinstance(src, dict), f"{w}: expected a mapping with pluginRef and extractors")
        for key in src:
            _require(key in ("pluginRef", "extractors"), f"{w}: unknown key {key!r}; accepted: pluginRef, extractors")
        ref = src.get("pluginRef")
        _require(
            isinstance(ref, str) and ref in by_name,
            f"{w}.pluginRef: {ref!r} names no plugin; defined: {', '.join(by_name) or 'none'}",
        )
        source_cls = lookup(by_name[ref].type).cls
        _require(
            by_name[ref].kind == "data_source",
            f"{w}.pluginRef: {ref!r} is a {by_name[ref].type}, expected a data source such as metrics-data-source",
        )
        names: list[str] = []
        exts = src.get("extractors") or []
        _require(isinstance(exts, list), f"{w}.extractors: expected a list of {{pluginRef}}")
        for j, ext in enumerate(exts):
            we = f"{w}.extractors[{j}]"
            _require(isinstance(ext, dict) and set(ext) <= {"pluginRef"}, f"{we}: expected a mapping with pluginRef")
            eref = ext.get("pluginRef")
            _require(
                isinstance(eref, str) and eref in by_name,
                f"{we}.pluginRef: {eref!r} names no plugin; defined: {', '.join(by_name) or 'none'}",
            )
            _require(
                source_cls.accepts(lookup(by_name[eref].type).cls),
                f"{we}.pluginRef: {eref!r} ({by_name[eref].type}) cannot extract from {ref!r} ({by_name[ref].type})",
            )
            names.append(eref)
        out.append(DataSourceSpec(ref, names))
    return out


def _load_parser(raw: Any, by_name: dict[str, PluginSpec], origin: str) -> str:
    where = f"{origin}: parser"
    _require(
        isinstance(raw, dict) and set(raw) == {"pluginRef"},
        f"{where}: expected a mapping with only pluginRef, got {raw!r}",
    )
    ref = raw["pluginRef"]
    _require(
        isinstance(ref, str) and ref in by_name,
        f"{where}.pluginRef: {ref!r} names no plugin; defined: {', '.join(by_name) or 'none'}",
    )
    _require(
        by_name[ref].kind == "parser",
        f"{where}.pluginRef: {ref!r} is a {by_name[ref].type}, expected a parser such as openai-parser",
    )
    return ref


def _make_spec(entry: Any, origin: str, i: int, warnings: list[str]) -> PluginSpec:
    where = f"{origin}: plugins[{i}]"
    _require(isinstance(entry, dict), f"{where}: expected a mapping with 'type', got {entry!r}")
    for key in entry:
        _require(
            key in ("name", "type", "parameters"), f"{where}: unknown key {key!r}; accepted: name, type, parameters"
        )
    type_name = entry.get("type")
    _require(
        isinstance(type_name, str) and type_name,
        f"{where}: 'type' is required (a plugin type name such as queue-scorer)",
    )
    name = entry.get("name") or type_name
    _require(isinstance(name, str), f"{where}: name: expected a string, got {name!r}")
    try:
        pt = lookup(type_name)
    except ConfigError as exc:
        raise ConfigError(f"{where} ({name}): {exc}") from None
    if pt.deprecated_alias_of:
        warnings.append(f"{origin}: plugin type {type_name!r} is deprecated; use {pt.deprecated_alias_of!r}")
    raw = entry.get("parameters") or {}
    upgrade = getattr(pt.cls, "upgrade", None)
    new = upgrade(raw) if upgrade is not None and isinstance(raw, dict) else None
    if new is not None:  # an older upstream shape of this type that meant another plugin: load it as that
        new_type, raw = new
        warnings.append(
            f"{origin}: plugin {name!r}: {type_name} with these parameters is llm-d's older shape of {new_type}; "
            f"loaded as {new_type}"
        )
        type_name, pt = new_type, lookup(new_type)
    params = parse_dataclass(pt.cls.Params, raw, f"{origin}: plugin {name!r} ({type_name}) parameters")
    return PluginSpec(name=name, type=type_name, kind=pt.kind, params=params, raw_parameters=dict(raw))


def _load_plugins(entries: Any, origin: str, warnings: list[str]) -> list[PluginSpec]:
    _require(entries is not None, f"{origin}: 'plugins' is required (a list of {{name?, type, parameters?}})")
    _require(isinstance(entries, list), f"{origin}: plugins: expected a list, got {type(entries).__name__}")
    specs: list[PluginSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        spec = _make_spec(entry, origin, i, warnings)
        _require(spec.name not in seen, f"{origin}: plugins[{i}]: duplicate plugin name {spec.name!r}")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def _load_profiles(entries: Any, by_name: dict[str, PluginSpec], origin: str) -> list[ProfileSpec]:
    if entries is None:
        return []
    _require(isinstance(entries, list), f"{origin}: schedulingProfiles: expected a list, got {type(entries).__name__}")
    profiles: list[ProfileSpec] = []
    for i, entry in enumerate(entries):
        where = f"{origin}: schedulingProfiles[{i}]"
        _require(isinstance(entry, dict), f"{where}: expected a mapping with name and plugins")
        for key in entry:
            _require(key in ("name", "plugins"), f"{where}: unknown key {key!r}; accepted: name, plugins")
        name = entry.get("name")
        _require(isinstance(name, str) and name, f"{where}: 'name' is required")
        _require(name not in {p.name for p in profiles}, f"{where}: duplicate profile name {name!r}")
        refs_raw = entry.get("plugins") or []
        _require(isinstance(refs_raw, list), f"{where} ({name}): plugins: expected a list of {{pluginRef, weight?}}")
        refs: list[ProfilePluginRef] = []
        for j, r in enumerate(refs_raw):
            w = f"{where} ({name}).plugins[{j}]"
            _require(isinstance(r, dict), f"{w}: expected a mapping with pluginRef")
            for key in r:
                _require(key in ("pluginRef", "weight"), f"{w}: unknown key {key!r}; accepted: pluginRef, weight")
            ref = r.get("pluginRef")
            _require(isinstance(ref, str) and ref, f"{w}: 'pluginRef' is required")
            _require(ref in by_name, f"{w}: pluginRef {ref!r} names no plugin; defined: {', '.join(by_name) or 'none'}")
            kind = by_name[ref].kind
            _require(
                kind in _PROFILE_KINDS,
                f"{w}: {ref!r} is a {kind.replace('_', ' ')}; profiles reference filters, scorers, pickers (and "
                "producers)",
            )
            weight = r.get("weight", 1)
            _require(
                isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0,
                f"{w}: weight: expected a non-negative number, got {weight!r}",
            )
            refs.append(ProfilePluginRef(ref, float(weight)))
        profiles.append(ProfileSpec(name, refs))
    return profiles


def load_config_file(path: str | Path) -> SchedulerConfig:
    """Load an EndpointPickerConfig YAML file; a missing/unreadable file is a ConfigError naming it."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    return load_config(text, origin=str(p))
