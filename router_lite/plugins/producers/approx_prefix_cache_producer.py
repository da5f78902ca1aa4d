"""approx-prefix-cache-producer (llm-d): the approximate prefix index (what was routed where) as a producer.

Same parameters and index as prefix-cache-scorer; it is the producer a prefix-cache-scorer reads when it
names none.
"""

from __future__ import annotations

from router_lite.plugins.producers.prefix_producer import PrefixMatchProducer
from router_lite.plugins.scorers.prefix_cache import PrefixCacheParams, PrefixCacheScorer
from router_lite.registry import register


@register
class ApproxPrefixCacheProducer(PrefixMatchProducer):
    type_name = "approx-prefix-cache-producer"
    Params = PrefixCacheParams
    Engine = PrefixCacheScorer
