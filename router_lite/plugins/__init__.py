"""Scheduling plugins: base classes here, one plugin per module in the sub-packages.

Plugin kinds follow llm-d's framework: filters narrow the candidates, scorers return a score in [0, 1] per
endpoint, a picker chooses from the weighted totals, a profile handler decides which scheduling profiles run
and combines their results, and P/D deciders tell the disaggregation handler when to run prefill.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, TypeVar

from router_lite.registry import NoParams
from router_lite.types import Endpoint, LLMRequest, ProfileRunResult

if TYPE_CHECKING:
    from router_lite.inflight import InFlightTracker
    from router_lite.prefix import PrefixIndexes


@dataclass
class PluginContext:
    """What a plugin may use besides its parameters: the shared prefix indexes, randomness and a clock."""

    indexes: "PrefixIndexes"
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    plugins: dict[str, "Plugin"] = field(default_factory=dict)  # every configured plugin by name
    inflight: "InFlightTracker" = None  # type: ignore[assignment]  # the router's own in-flight load

    def __post_init__(self) -> None:
        if self.inflight is None:  # a context built without an owner's tracker (tests, tools) gets its own
            from router_lite.inflight import InFlightTracker

            self.inflight = InFlightTracker(clock=self.clock)


@dataclass(frozen=True)
class IndexSettings:
    """How the shared precise index weighs and shares what it holds; applied (and reset) with a config."""

    tier_weights: dict[str, float] = field(default_factory=dict)
    speculative_ttl_s: float | None = None  # None: the index's default
    shared_media: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Needs:
    """What a plugin needs from the router around it, so the router never reads another plugin's parameters.

    `block_size`/`hash_algo`/`hash_seed` are the hashing settings the config states explicitly (None: left to
    flags and the engines); `kv_events` the KV-event source settings (kvEventsConfig); `index` the settings of
    the shared precise index.
    """

    tokens: bool = False
    block_hashes: bool = False  # the engines' block hashes of the prompt (the precise index matches on them)
    block_size: int | None = None
    hash_algo: str | None = None
    hash_seed: str | None = None
    kv_events: Any = None
    index: IndexSettings | None = None

    @staticmethod
    def merge(needs: list["Needs"]) -> "Needs":
        """One config's needs: tokens if any plugin tokenizes; the rest from the first plugin that states it
        (the precise scorers and producers of one config share one index and one hashing setup)."""

        def first(attr: str) -> Any:
            return next((getattr(n, attr) for n in needs if getattr(n, attr) is not None), None)

        return Needs(
            tokens=any(n.tokens for n in needs),
            block_hashes=any(n.block_hashes for n in needs),
            block_size=first("block_size"),
            hash_algo=first("hash_algo"),
            hash_seed=first("hash_seed"),
            kv_events=first("kv_events"),
            index=first("index"),
        )


class Plugin:
    """A configured plugin instance: `name` is the config name (defaults to the type name)."""

    type_name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()  # deprecated names: accepted with a warning
    synonyms: ClassVar[tuple[str, ...]] = ()  # other current names (e.g. llm-d's and GIE's spelling)
    Params: ClassVar[type] = NoParams
    uses_tokens: ClassVar[bool] = False  # the gateway must tokenize requests (tokens in, tokens out)
    endpoint_extractor: ClassVar[bool] = False  # may sit under endpoint-notification-source in dataLayer

    def __init__(self, name: str, params: Any, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        self.ctx = ctx

    @classmethod
    def create(cls, name: str, params: Any, ctx: PluginContext) -> "Plugin":
        """Factory from a parsed config entry."""
        return cls(name, params, ctx)

    def bind(self) -> None:
        """Called once every configured plugin exists (ctx.plugins): resolve references, raise ConfigError."""

    def needs(self, raw_parameters: dict[str, Any]) -> Needs:
        """What this plugin needs from the router (`raw_parameters`: its config entry as written)."""
        return Needs(tokens=self.uses_tokens)

    # Lifecycle hooks (llm-d's PreRequest / ResponseComplete); no-ops unless a plugin keeps state.
    def on_routed(self, request: LLMRequest, endpoint: Endpoint, profile: str) -> None:
        """The request was sent to `endpoint` as the chosen target of `profile`."""

    def on_finished(self, request: LLMRequest, endpoint: Endpoint) -> None:
        """The request finished (or failed) on `endpoint`."""

    def pre_request(
        self, request: LLMRequest, target: Endpoint, prefill: Endpoint | None, headers: dict[str, str]
    ) -> None:
        """llm-d's PreRequest: add what the pod serving `request` on `target` must be told (headers)."""

    def close(self) -> None:
        """A config swap retired this plugin: drop hooks it placed on state that outlives it."""

    @classmethod
    def upstream_form(cls, parameters: dict[str, Any]) -> dict[str, Any] | None:
        """This plugin's entry as llm-d's own EPP reads it: the parameters without router_lite extensions,
        or None when the plugin exists only in router_lite (rendering for the upstream EPP drops it)."""
        return parameters

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Filter(Plugin):
    kind = "filter"

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        raise NotImplementedError


class Scorer(Plugin):
    kind = "scorer"
    # Prefix scorers report matched blocks per endpoint for the decision record and P/D decider.
    reports_prefix: ClassVar[bool] = False

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        raise NotImplementedError

    def prefix_match(
        self, request: LLMRequest, endpoints: list[Endpoint] | None = None
    ) -> tuple[dict[str, int], int] | None:
        """(matched blocks per endpoint key, tokens per block) for this request; `endpoints` names the
        candidates when known (a shared tier's blocks count for each of them)."""
        return None


class Picker(Plugin):
    kind = "picker"

    def pick(self, request: LLMRequest, endpoints: list[Endpoint], totals: dict[str, float]) -> list[Endpoint]:
        raise NotImplementedError


class Decider(Plugin):
    kind = "decider"

    def disaggregate(self, request: LLMRequest, decode: ProfileRunResult) -> tuple[bool, str]:
        """Whether to run a separate prefill for `request`, given the decode profile's result, and why."""
        raise NotImplementedError


@dataclass
class ProfileOutcome:
    """What a profile handler concludes from the profiles that ran."""

    target: Endpoint | None
    prefill: Endpoint | None
    primary: str
    reason: str
    prefill_unavailable: bool = False  # the decider wanted a separate prefill but no prefill endpoint could take it
    encode: Endpoint | None = None  # E/P/D: where the multimodal items are encoded first (None: on the target)


class ProfileHandler(Plugin):
    kind = "profile_handler"

    @staticmethod
    def check_profiles(params: Any, profile_names: list[str], plugins: dict[str, Any]) -> str | None:
        """A problem with the configured profiles (ConfigError text), or None; run when the config loads,
        before any plugin exists (`plugins`: the config's plugin specs by name)."""
        return None

    def pick_profiles(
        self, request: LLMRequest, profile_names: list[str], results: dict[str, ProfileRunResult]
    ) -> list[str]:
        """Profiles to run next given results so far; [] ends the cycle (llm-d's Pick loop)."""
        raise NotImplementedError

    def process_results(self, request: LLMRequest, results: dict[str, ProfileRunResult]) -> ProfileOutcome:
        raise NotImplementedError


# ---- request-control and data-layer plugins (llm-d's PrepareData, Admission, DataLayer, Parser) -------------


class Producer(Plugin):
    """A data producer (llm-d's PrepareData plugin): computes per-request data before the profiles run,
    for scorers that name it (`prefixMatchInfoProducerName`). Listed in a profile it is accepted and skipped."""

    kind = "producer"


class DataSource(Plugin):
    """A `dataLayer.sources[]` entry: where endpoint data comes from; its extractors turn it into state."""

    kind = "data_source"

    @classmethod
    def accepts(cls, extractor: type) -> bool:
        raise NotImplementedError


class Extractor(Plugin):
    kind = "extractor"


class Parser(Plugin):
    """`parser.pluginRef`: how request and response bodies are read."""

    kind = "parser"


class Admitter(Plugin):
    """Decides before scheduling whether a request is admitted at all (llm-d's Admission plugins)."""

    kind = "admitter"

    def reject(self, request: LLMRequest, endpoints: list[Endpoint]) -> str | None:
        """Why `request` is not admitted, or None to admit it."""
        raise NotImplementedError


class SaturationDetectorPlugin(Plugin):
    """`saturationDetector.pluginRef`: its parameters are the saturation thresholds admission uses."""

    kind = "saturation_detector"


P = TypeVar("P", bound="Plugin")


def find_plugin(ctx: PluginContext, kind: type[P], name: str = "") -> P | None:
    """The configured plugin `name` when given (None unless it is a `kind`), else the first `kind` configured:
    how a consumer resolves the producer its parameters name (llm-d's `...ProducerName` keys)."""
    if name:
        plugin = ctx.plugins.get(name)
        return plugin if isinstance(plugin, kind) else None
    return next((p for p in ctx.plugins.values() if isinstance(p, kind)), None)


def find_prefix_plugin(ctx: PluginContext, name: str = "") -> "Scorer | None":
    """The plugin whose prefix match tells how much of a prompt each endpoint holds: `name` when given (a
    scorer or producer that reports prefixes), else the first configured prefix scorer."""
    if name:
        plugin = ctx.plugins.get(name)
        return plugin if getattr(plugin, "reports_prefix", False) else None  # type: ignore[return-value]
    return next((p for p in ctx.plugins.values() if getattr(p, "reports_prefix", False)), None)  # type: ignore[return-value]


def uncached_tokens(
    ctx: PluginContext, request: LLMRequest, endpoints: list[Endpoint], prefix: "Scorer | None"
) -> dict[str, int]:
    """Prompt tokens each endpoint would have to prefill for `request`: the prompt less its prefix hit there
    (the whole prompt when no prefix plugin is configured)."""
    total = request.prompt_tokens
    match = prefix.prefix_match(request, endpoints) if prefix is not None else None
    if not match:
        return {e.key: total for e in endpoints}
    blocks, block_size = match
    return {e.key: max(0, total - blocks.get(e.key, 0) * (block_size or 0)) for e in endpoints}
