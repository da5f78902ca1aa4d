"""The pure admission parts: llm-d's saturation detector and the bounded priority-band queue."""

from __future__ import annotations

import pytest

from router_lite.flow_control import FlowQueue
from router_lite.saturation import SaturationConfig, SaturationDetector, should_shed
from router_lite.types import Endpoint, EndpointMetrics


class Clock:
    def __init__(self) -> None:
        self.t = 10.0

    def __call__(self) -> float:
        return self.t


def ep(waiting=0, kv=0.0, updated_at=10.0, healthy=True) -> Endpoint:
    e = Endpoint(
        "h", 1, metrics=EndpointMetrics(waiting_queue_size=waiting, kv_cache_usage_percent=kv, updated_at=updated_at)
    )
    e.healthy = healthy
    return e


def test_saturation_thresholds_as_llmd():
    clock = Clock()
    det = SaturationDetector(clock=clock)
    assert det.config == SaturationConfig(5, 0.8, 0.2)
    assert not det.is_saturated([ep(waiting=4, kv=0.79)])
    assert det.is_saturated([ep(waiting=5)])  # queue at threshold: no capacity
    assert det.is_saturated([ep(kv=0.8)])
    assert not det.is_saturated([ep(waiting=9), ep(waiting=0)])  # one pod with room is enough
    assert det.is_saturated([ep(updated_at=9.7)])  # metrics 300 ms old: stale
    assert not det.is_saturated([ep(updated_at=9.85)])
    assert det.is_saturated([ep(healthy=False)])
    assert det.is_saturated([])


def test_saturation_config_from_llmd_keys():
    cfg = SaturationConfig.from_dict(
        {"queueDepthThreshold": 10, "kvCacheUtilThreshold": 0.9, "metricsStalenessThreshold": "500ms"}
    )
    assert cfg == SaturationConfig(10, 0.9, 0.5)
    with pytest.raises(ValueError, match="unknown key 'queueDepth'"):
        SaturationConfig.from_dict({"queueDepth": 1})
    with pytest.raises(ValueError, match="kvCacheUtilThreshold: expected a number in"):
        SaturationConfig.from_dict({"kvCacheUtilThreshold": 2})


def test_only_sheddable_requests_are_shed_when_saturated():
    assert should_shed(-1, True) and not should_shed(0, True) and not should_shed(-1, False)


def test_queue_dispatches_by_band_then_fifo():
    q: FlowQueue[str] = FlowQueue(max_requests=10, ttl_s=5, clock=Clock())
    for item, prio in [("low1", -1), ("mid1", 0), ("high1", 2), ("mid2", 0), ("low2", -1)]:
        assert q.enqueue(item, prio).accepted
    assert q.band_sizes() == {2: 1, 0: 2, -1: 2}
    assert [q.dequeue().item for _ in range(5)] == ["high1", "mid1", "mid2", "low1", "low2"]
    assert q.dequeue() is None and len(q) == 0


def test_full_queue_displaces_lower_band_else_rejects():
    q: FlowQueue[str] = FlowQueue(max_requests=2, ttl_s=5, clock=Clock())
    q.enqueue("a", 0)
    q.enqueue("b", -1)
    res = q.enqueue("c", 1)
    assert res.accepted and [d.item for d in res.displaced] == ["b"]
    res = q.enqueue("d", 0)  # no band below 0 left: rejected
    assert not res.accepted and "queue full" in res.reason
    assert q.stats["displaced"] == 1 and q.stats["rejected"] == 1 and len(q) == 2


def test_ttl_expiry():
    clock = Clock()
    q: FlowQueue[str] = FlowQueue(max_requests=10, ttl_s=1.0, clock=clock)
    q.enqueue("old", 5)
    clock.t += 0.6
    q.enqueue("new", 0)
    clock.t += 0.5  # "old" is 1.1 s old
    assert q.dequeue().item == "new"
    assert [e.item for e in q.take_expired()] == ["old"] and q.take_expired() == []
    q.enqueue("x", 0)
    clock.t += 2
    assert [e.item for e in q.expire()] == ["x"] and len(q) == 0
    assert q.stats["expired"] == 2


def test_remove_waiting_item():
    q: FlowQueue[object] = FlowQueue(clock=Clock())
    a, b = object(), object()
    q.enqueue(a)
    q.enqueue(b)
    assert q.remove(a) and not q.remove(a)
    assert q.dequeue().item is b
