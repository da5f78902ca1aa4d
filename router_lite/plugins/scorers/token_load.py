"""token-load-scorer (llm-d): less prompt work queued on an endpoint scores higher.

    load  = uncached prompt tokens in flight there + this request's uncached tokens there
    score = 1 - min(load, queueThresholdTokens) / queueThresholdTokens

Both terms come from the in-flight load producer (router_lite.inflight and the configured prefix plugin), so
a pod that already holds the prompt's prefix is charged only for the tail it must still compute.

router_lite extensions (dropped when rendering for llm-d's own EPP), for fleets whose pods differ:
- `speedAware`: load is divided by the endpoint's speed relative to the fastest candidate (router_lite.speeds:
  told by the `speedLabel` label, else learned from each pool's fitted TTFT line), so a pod twice as fast
  absorbs twice the tokens for the same score, and on equal pods the score is exactly the speed-blind one.
  `speedTolerance` (0.5): speeds within 1.5x of the fastest count as the fastest (router_lite.speeds says why).
- `maxNumSeqs`: the pods' seat limit (vLLM's --max-num-seqs); an endpoint with that many requests in flight
  scores 0: a request sent there waits for a running one to finish, which the token count cannot see.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import Scorer, find_plugin, find_prefix_plugin, uncached_tokens
from router_lite.plugins.producers.inflight_load import InFlightLoadProducer
from router_lite.registry import ConfigError, register
from router_lite.speeds import GROUP_LABEL, SPEED_LABEL, relative_speeds
from router_lite.types import Endpoint, LLMRequest

DEFAULT_QUEUE_THRESHOLD_TOKENS = 4_194_304  # llm-d's default: 128 requests of 32k tokens


@dataclass
class TokenLoadParams:
    queue_threshold_tokens: int = DEFAULT_QUEUE_THRESHOLD_TOKENS
    in_flight_load_producer_name: str = ""
    speed_aware: bool = False
    speed_label: str = SPEED_LABEL
    speed_group_label: str = GROUP_LABEL
    speed_tolerance: float = 0.5  # speeds within a factor 1.5 of the fastest count as the fastest
    max_num_seqs: int = 0  # 0: no seat limit

    def validate(self) -> str | None:
        if self.queue_threshold_tokens <= 0:
            return f"queueThresholdTokens: expected a positive integer, got {self.queue_threshold_tokens}"
        if not 0 <= self.speed_tolerance < float("inf"):
            return f"speedTolerance: expected >= 0 (0.5: within 1.5x of the fastest), got {self.speed_tolerance}"
        if self.max_num_seqs < 0:
            return f"maxNumSeqs: expected a non-negative integer (0: no seat limit), got {self.max_num_seqs}"
        return None


EXTENSIONS = ("speedAware", "speedLabel", "speedGroupLabel", "speedTolerance", "maxNumSeqs")


@register
class TokenLoadScorer(Scorer):
    type_name = "token-load-scorer"
    Params = TokenLoadParams

    @classmethod
    def upstream_form(cls, parameters: dict) -> dict:
        return {k: v for k, v in parameters.items() if k not in EXTENSIONS}

    def bind(self) -> None:
        name = self.params.in_flight_load_producer_name
        self.producer = find_plugin(self.ctx, InFlightLoadProducer, name)
        if name and self.producer is None:
            raise ConfigError(f"{self.name}: inFlightLoadProducerName {name!r} names no inflight-load-producer")
        self.prefix = None if self.producer is not None else find_prefix_plugin(self.ctx)

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        mine = (
            self.producer.uncached(request, endpoints)
            if self.producer
            else uncached_tokens(self.ctx, request, endpoints, self.prefix)
        )
        cap = float(self.params.queue_threshold_tokens)
        load = self.ctx.inflight.load
        speed = self.speeds(endpoints, mine)  # all 1.0 unless speedAware: x / 1.0 == x, the llm-d score exactly
        scores = {e.key: 1.0 - min((load(e.key).tokens + mine[e.key]) / speed[e.key], cap) / cap for e in endpoints}
        return self._seats(endpoints, scores)

    def speeds(self, endpoints: list[Endpoint], mine: dict[str, int]) -> dict[str, float]:
        """Each candidate's speed relative to the fastest (all 1.0 unless `speedAware`), learned ones for a
        request meeting the candidates' mean in-flight tokens plus this request's least uncached work."""
        if not self.params.speed_aware:
            return {e.key: 1.0 for e in endpoints}
        p, load = self.params, self.ctx.inflight.load
        work = sum(load(e.key).tokens for e in endpoints) // max(1, len(endpoints)) + min(mine.values(), default=0)
        return relative_speeds(
            endpoints, self.ctx.inflight, work, p.speed_label, p.speed_group_label, p.speed_tolerance
        )

    def _seats(self, endpoints: list[Endpoint], scores: dict[str, float]) -> dict[str, float]:
        seats = self.params.max_num_seqs
        if seats:
            load = self.ctx.inflight.load
            for e in endpoints:
                if load(e.key).requests >= seats:
                    scores[e.key] = 0.0
        return scores
