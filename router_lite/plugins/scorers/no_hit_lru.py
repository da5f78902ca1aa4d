"""no-hit-lru-scorer (llm-d): spread cold requests (no prefix hit anywhere) over least-recently-cold endpoints.

Reads the prefix scorer named `prefixPluginName`, or llm-d's current `prefixMatchInfoProducerName` (a prefix
producer such as precise-prefix-cache-producer). With a hit somewhere every endpoint scores 0.5
(neutral). Cold: endpoints never given a cold request rank first, then by how long ago they last got one;
rank r of n scores 1 - r/(n-1). Routing a cold request moves its endpoint(s) to most recent.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from router_lite.cycle_state import StateKey
from router_lite.plugins import Scorer
from router_lite.registry import ConfigError, register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class NoHitLRUParams:
    prefix_plugin_name: str = "prefix-cache-scorer"
    prefix_match_info_producer_name: str = ""
    prefill_profile: str = "prefill"
    lru_size: int = 1024

    def validate(self) -> str | None:
        return None if self.lru_size > 0 else f"lruSize: expected a positive integer, got {self.lru_size}"


@register
class NoHitLRUScorer(Scorer):
    type_name = "no-hit-lru-scorer"
    Params = NoHitLRUParams

    def __init__(self, name, params: NoHitLRUParams, ctx) -> None:
        super().__init__(name, params, ctx)
        self.lru: OrderedDict[str, None] = OrderedDict()  # oldest first
        self._cold_key: StateKey[bool] = StateKey(f"no-hit-lru:{name}:cold", per_cycle=True)

    def bind(self) -> None:
        """Resolve the prefix scorer: the named one, else (name left default) the first prefix scorer."""
        producer = self.params.prefix_match_info_producer_name
        if producer:
            p = self.ctx.plugins.get(producer)
            if p is None or p.kind != "producer" or not getattr(p, "reports_prefix", False):
                what = "names no plugin" if p is None else f"is a {p.type_name}, expected a prefix producer"
                raise ConfigError(
                    f"plugin {self.name!r} (no-hit-lru-scorer): prefixMatchInfoProducerName {producer!r} {what}"
                )
            self._prefix_scorer = p
            return
        name = self.params.prefix_plugin_name
        p = self.ctx.plugins.get(name)
        if p is None and name == NoHitLRUParams.prefix_plugin_name:
            p = next((q for q in self.ctx.plugins.values() if isinstance(q, Scorer) and q.reports_prefix), None)
        elif p is None:
            raise ConfigError(f"plugin {self.name!r} (no-hit-lru-scorer): prefixPluginName {name!r} names no plugin")
        elif not (isinstance(p, Scorer) and p.reports_prefix):
            raise ConfigError(
                f"plugin {self.name!r} (no-hit-lru-scorer): prefixPluginName {name!r} is not a prefix scorer"
            )
        self._prefix_scorer = p

    def _prefix(self) -> Scorer | None:
        return getattr(self, "_prefix_scorer", None)

    def is_cold(self, request: LLMRequest) -> bool:
        prefix = self._prefix()
        if prefix is None:
            return True
        pm = prefix.prefix_match(request)
        return not pm or not any(v > 0 for v in pm[0].values())

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        cold = self.is_cold(request)
        request.state.set(self._cold_key, cold)
        if not cold:
            return {e.key: 0.5 for e in endpoints}
        n = len(endpoints)
        if n == 1:
            return {endpoints[0].key: 1.0}
        pos = {k: i for i, k in enumerate(self.lru)}
        never = [e for e in endpoints if e.key not in pos]
        used = [e for e in endpoints if e.key in pos]
        out = {}
        for i, e in enumerate(never):
            out[e.key] = 1.0 - i / (n - 1)
        for e in used:
            out[e.key] = max(0.0, 1.0 - (len(never) + pos[e.key]) / (n - 1))
        return out

    def on_routed(self, request: LLMRequest, endpoint: Endpoint, profile: str) -> None:
        if not request.state.get(self._cold_key):
            return
        self.lru.pop(endpoint.key, None)
        self.lru[endpoint.key] = None
        while len(self.lru) > self.params.lru_size:
            self.lru.popitem(last=False)
