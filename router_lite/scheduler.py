"""The scheduler: profile handler -> (filters -> weighted scorers -> picker) per profile -> result.

Pure and synchronous: given a request and the current endpoints (with their scraped metrics) it returns a
`SchedulingResult`; `on_routed` / `on_finished` feed back what the gateway did so stateful plugins
(approximate prefix index, speculative precise entries, in-flight request counts) stay current.
Total per endpoint = sum over the profile's scorers of clamp(score, 0, 1) x weight.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

from router_lite.config import SchedulerConfig
from router_lite.inflight import InFlightTracker
from router_lite.plugins import Filter, IndexSettings, Needs, Picker, Plugin, PluginContext, ProfileHandler, Scorer
from router_lite.prefix import PrecisePrefixIndex, PrefixIndexes
from router_lite.registry import ConfigError, lookup
from router_lite.types import PREDICTIONS, Endpoint, LLMRequest, ProfileRunResult, SchedulingResult

__all__ = ["Scheduler", "SchedulingProfile"]


@dataclass
class SchedulingProfile:
    """One configured profile, resolved to plugin instances."""

    name: str
    filters: list[Filter]
    scorers: list[tuple[Scorer, float]]
    picker: Picker

    @property
    def plugins(self) -> list[Plugin]:
        return [*self.filters, *(s for s, _ in self.scorers), self.picker]


class Scheduler:
    """Runs llm-d's scheduling cycle over plugin instances built from a SchedulerConfig."""

    def __init__(
        self,
        config: SchedulerConfig,
        index: PrefixIndexes | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        inflight: InFlightTracker | None = None,
    ) -> None:
        self.config = config
        self.indexes = index if index is not None else PrefixIndexes(precise=PrecisePrefixIndex(clock=clock))
        # The in-flight load outlives a config switch (requests in flight stay in flight): the owner passes it.
        self.inflight = inflight if inflight is not None else InFlightTracker(clock=clock)
        self.ctx = PluginContext(indexes=self.indexes, rng=rng or random.Random(), clock=clock, inflight=self.inflight)
        self.plugins: dict[str, Plugin] = {}
        for spec in config.plugins:
            cls = lookup(spec.type).cls
            self.plugins[spec.name] = cls.create(spec.name, spec.params, self.ctx)
        self.ctx.plugins = self.plugins
        for p in self.plugins.values():
            p.bind()
        raw = {spec.name: spec.raw_parameters or {} for spec in config.plugins}
        self.needs = Needs.merge([p.needs(raw[name]) for name, p in self.plugins.items()])
        self.profiles: dict[str, SchedulingProfile] = {}
        for prof in config.profiles:
            filters, scorers, picker = [], [], None
            for ref in prof.plugins:
                p = self.plugins[ref.plugin_ref]
                if isinstance(p, Filter):
                    filters.append(p)
                elif isinstance(p, Scorer):
                    scorers.append((p, ref.weight))
                elif isinstance(p, Picker):
                    picker = p
            if picker is None:  # load_config injects one; a hand-built config might not
                raise ConfigError(f"schedulingProfiles[{prof.name}]: no picker")
            self.profiles[prof.name] = SchedulingProfile(prof.name, filters, scorers, picker)
        handlers = [p for p in self.plugins.values() if isinstance(p, ProfileHandler)]
        if len(handlers) != 1:
            raise ConfigError(f"expected exactly one profile handler plugin, got {len(handlers)}")
        self.handler: ProfileHandler = handlers[0]
        self._profile_names = list(self.profiles)
        self._all_plugins = list(self.plugins.values())
        in_profiles = {id(p) for prof in self.profiles.values() for p in prof.plugins}
        self._producers = [p for p in self._all_plugins if p.kind == "producer" and id(p) not in in_profiles]
        self._pre_request = [p for p in self._all_plugins if type(p).pre_request is not Plugin.pre_request]
        index = self.needs.index or IndexSettings()
        self.indexes.precise.configure(index.tier_weights, index.speculative_ttl_s, index.shared_media)

    # ---- one cycle -----------------------------------------------------------------------------------
    def run_profile(self, name: str, request: LLMRequest, endpoints: list[Endpoint]) -> ProfileRunResult:
        prof = self.profiles[name]
        eps = endpoints
        timings: list[tuple[str, str, str, float]] = []
        clock = time.perf_counter
        for f in prof.filters:
            t = clock()
            eps = f.filter(request, eps)
            timings.append(("Filter", f.type_name, f.name, clock() - t))
            if not eps:
                break
        raw_scores: dict[str, dict[str, float]] = {}
        weights: dict[str, float] = {}
        totals: dict[str, float] = dict.fromkeys([e.key for e in eps], 0.0)
        prefix_blocks: dict[str, int] = {}
        prefix_bs: int | None = None
        prefix_tiers = None
        prefix_total = 0
        chosen: list[Endpoint] = []
        if eps:
            for scorer, weight in prof.scorers:
                t = clock()
                scores = scorer.score(request, eps)
                timings.append(("Scorer", scorer.type_name, scorer.name, clock() - t))
                raw_scores[scorer.name] = scores
                weights[scorer.name] = weight
                if weight:
                    for k, v in scores.items():
                        if k in totals:
                            totals[k] += (0.0 if v < 0.0 else 1.0 if v > 1.0 else v) * weight
                if scorer.reports_prefix and prefix_bs is None:
                    pm = scorer.prefix_match(request, eps)
                    if pm is not None:
                        prefix_blocks, prefix_bs = pm
                        total_of = getattr(scorer, "prompt_blocks", None)
                        prefix_total = total_of(request) if total_of is not None else 0
                        tiers_of = getattr(scorer, "prefix_tiers", None)
                        if tiers_of is not None:  # None unless events name tiers below the GPU
                            prefix_tiers = tiers_of(request, [e.key for e in eps])
            t = clock()
            chosen = prof.picker.pick(request, eps, totals)
            timings.append(("Picker", prof.picker.type_name, prof.picker.name, clock() - t))
        return ProfileRunResult(
            profile=name,
            endpoints=eps,
            raw_scores=raw_scores,
            weights=weights,
            totals=totals,
            chosen=chosen,
            prefix_blocks=prefix_blocks,
            prefix_block_size=prefix_bs,
            prefix_tiers=prefix_tiers,
            filtered_out=len(endpoints) - len(eps),
            prefix_total_blocks=prefix_total,
            plugin_durations=timings,
        )

    def schedule(self, request: LLMRequest, endpoints: list[Endpoint]) -> SchedulingResult:
        """Pick the endpoint(s) for `request` among the healthy `endpoints`."""
        t0 = time.perf_counter()
        request.state.new_cycle()  # a re-schedule must see the indexes as they are now
        candidates = [e for e in endpoints if e.healthy]
        results: dict[str, ProfileRunResult] = {}
        if candidates:
            for _ in range(len(self._profile_names) + 1):
                names = self.handler.pick_profiles(request, self._profile_names, results)
                if not names:
                    break
                for n in names:
                    results[n] = self.run_profile(n, request, candidates)
            outcome = self.handler.process_results(request, results)
            target, prefill, primary, reason = outcome.target, outcome.prefill, outcome.primary, outcome.reason
            no_prefill = outcome.prefill_unavailable
            encode = outcome.encode
        else:
            target, prefill, primary, no_prefill, encode = None, None, "", False, None
            reason = "no healthy endpoints" if endpoints else "no endpoints"
        load = self.inflight.load
        return SchedulingResult(
            request=request,
            target=target,
            prefill=prefill,
            encode=encode,
            profile_results=results,
            primary_profile=primary,
            reason=reason,
            scheduling_time_s=time.perf_counter() - t0,
            prefill_unavailable=no_prefill,
            load={e.key: load(e.key).to_dict() for e in candidates},
            predictions=request.state.get(PREDICTIONS) or {},
        )

    # ---- feedback ------------------------------------------------------------------------------------
    def on_routed(self, request: LLMRequest, result: SchedulingResult, target: Endpoint | None = None) -> None:
        """The gateway sent `request` per `result` (to `target` instead of result.target on a retry).

        Each profile's plugins learn the endpoint that profile's choice ended up on: the approximate index
        credits it with the request's blocks, the precise scorer adds speculative entries, active-request
        counts go up.
        """
        decode = target or result.target
        for name, pr in result.profile_results.items():
            prof = self.profiles.get(name)
            if prof is None:
                continue
            if name == result.primary_profile:
                ep = decode
            elif result.prefill is not None and pr.target is not None and pr.target.key == result.prefill.key:
                ep = result.prefill
            else:
                continue
            if ep is None:
                continue
            self.inflight.dispatch(request.request_id, ep.key, self._uncached_tokens(request, result, pr, ep))
            for p in prof.plugins:
                p.on_routed(request, ep, name)
            for p in self._producers:  # request-control plugins learn every routed leg (llm-d's PreRequest)
                p.on_routed(request, ep, name)

    @staticmethod
    def _uncached_tokens(request: LLMRequest, result: SchedulingResult, pr: ProfileRunResult, ep: Endpoint) -> int:
        """Prompt tokens `ep` must prefill: none on a P/D decode leg (the KV arrives), else the prompt minus
        the prefix the profile's prefix scorer expects `ep` to hold."""
        if result.prefill is not None and ep is not result.prefill and ep.key != result.prefill.key:
            return 0
        return max(0, request.prompt_tokens - pr.cached_tokens(ep))

    def pre_request(self, request: LLMRequest, target: Endpoint, prefill: Endpoint | None) -> dict[str, str]:
        """The headers PreRequest plugins add for the pod serving `request` on `target` (llm-d's PreRequest)."""
        headers: dict[str, str] = {}
        for p in self._pre_request:
            p.pre_request(request, target, prefill, headers)
        return headers

    def on_first_token(self, request: LLMRequest, endpoint: Endpoint) -> None:
        """The first token of `request` came back from `endpoint`: its prefill there is over."""
        self.inflight.first_token(request.request_id, endpoint.key)

    def close(self) -> None:
        """This scheduler was replaced by a config swap: its plugins let go of shared state."""
        for p in self._all_plugins:
            p.close()

    def on_finished(self, request: LLMRequest, endpoint: Endpoint, output_tokens: int | None = None) -> None:
        """The request ended on `endpoint` (success or failure), having streamed `output_tokens` when known."""
        self.inflight.finish(request.request_id, endpoint.key, output_tokens)
        for p in self._all_plugins:
            p.on_finished(request, endpoint)
