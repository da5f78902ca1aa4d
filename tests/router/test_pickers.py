"""Picker behaviour: max-score with random tie-break, random, weighted-random, round-robin."""

from __future__ import annotations

import random
from collections import Counter

from router_lite.plugins import PluginContext
from router_lite.prefix import PrefixIndexes
from router_lite.registry import lookup, parse_dataclass
from router_lite.types import Endpoint, LLMRequest

R = LLMRequest("r", "m")


def make(type_name: str, params: dict | None = None, seed: int = 0):
    pt = lookup(type_name)
    return pt.cls.create(
        type_name,
        parse_dataclass(pt.cls.Params, params or {}, type_name),
        PluginContext(indexes=PrefixIndexes(), rng=random.Random(seed)),
    )


EPS = [Endpoint("h", 8000 + i) for i in range(4)]
KEYS = [e.key for e in EPS]


def test_max_score_picks_the_best():
    p = make("max-score-picker")
    totals = dict(zip(KEYS, [0.1, 0.9, 0.5, 0.2]))
    assert all(p.pick(R, EPS, totals) == [EPS[1]] for _ in range(20))


def test_max_score_breaks_ties_at_random():
    p = make("max-score-picker")
    totals = dict(zip(KEYS, [1.0, 1.0, 1.0, 0.0]))
    counts = Counter(p.pick(R, EPS, totals)[0].key for _ in range(600))
    assert set(counts) == set(KEYS[:3])
    assert min(counts.values()) > 120  # roughly uniform over the tied three


def test_max_score_many_endpoints_best_first():
    p = make("max-score-picker", {"maxNumOfEndpoints": 3})
    totals = dict(zip(KEYS, [0.3, 0.9, 0.5, 0.1]))
    assert p.pick(R, EPS, totals) == [EPS[1], EPS[2], EPS[0]]
    p10 = make("max-score-picker", {"maxNumOfEndpoints": 10})
    assert len(p10.pick(R, EPS, totals)) == 4


def test_random_picker_is_uniform_and_ignores_scores():
    p = make("random-picker")
    totals = dict(zip(KEYS, [100.0, 0.0, 0.0, 0.0]))
    counts = Counter(p.pick(R, EPS, totals)[0].key for _ in range(800))
    assert set(counts) == set(KEYS) and min(counts.values()) > 140
    two = make("random-picker", {"maxNumOfEndpoints": 2}).pick(R, EPS, totals)
    assert len(two) == 2 and two[0] is not two[1]


def test_weighted_random_follows_weights():
    p = make("weighted-random-picker")
    totals = dict(zip(KEYS, [3.0, 1.0, 0.0, 0.0]))
    counts = Counter(p.pick(R, EPS, totals)[0].key for _ in range(2000))
    assert set(counts) == {KEYS[0], KEYS[1]}  # zero weight never chosen while others have weight
    assert 0.68 < counts[KEYS[0]] / 2000 < 0.82  # expected 0.75
    zeros = dict.fromkeys(KEYS, 0.0)
    assert p.pick(R, EPS, zeros)[0] in EPS


def test_round_robin_cycles_in_stable_order():
    p = make("round-robin-picker")
    totals = dict(zip(KEYS, [9.0, 0.0, 0.0, 0.0]))
    picks = [p.pick(R, list(reversed(EPS)), totals)[0].key for _ in range(8)]
    assert picks == sorted(KEYS) * 2


def test_empty_candidates_pick_nothing():
    for t in ("max-score-picker", "random-picker", "weighted-random-picker", "round-robin-picker"):
        assert make(t).pick(R, [], {}) == []
