"""llm-d's concurrency-detector and priority-holdback-policy: the pure formulas, the config that names them
(flowControl.saturationDetector.pluginRef, usageLimitPolicyPluginRef), the filter, and admission holding
lower bands short of full so a critical request finds a free seat."""

from __future__ import annotations

import asyncio

import pytest

from router_lite.admission import Admission, Rejected
from router_lite.config import ConfigError, load_config
from router_lite.plugins import PluginContext
from router_lite.prefix import PrefixIndexes
from router_lite.registry import lookup
from router_lite.saturation import ConcurrencyConfig, ConcurrencyDetector, UsageLimit
from router_lite.types import Endpoint, LLMRequest


def _pool(n: int) -> list[Endpoint]:
    return [Endpoint("127.0.0.1", 9000 + i) for i in range(n)]


def test_holdback_ceilings_by_rank_and_by_value():
    hb = UsageLimit(min_ceiling=0.5, max_ceiling=1.0)
    assert hb.ceilings([1, 0, -1]) == {-1: 0.5, 0: 0.75, 1: 1.0}
    assert UsageLimit(0.4, 1.0, "value").ceilings([-10, 0, 100]) == pytest.approx(
        {-10: 0.4, 0: 0.4 + 0.6 / 11, 100: 1.0}
    )
    assert hb.ceiling(7, [1, 0, -1]) == 1.0 and hb.ceiling(-5, [1, 0, -1]) == 0.5  # outside the bands
    assert UsageLimit().ceilings([1, 0, -1]) == {-1: 1.0, 0: 1.0, 1: 1.0}  # static default: full for all


def test_concurrency_saturation_counts_healthy_endpoints():
    det = ConcurrencyDetector(ConcurrencyConfig(max_concurrency=4))
    pool = _pool(2)
    assert det.saturation(pool, 6) == 0.75
    pool[1].healthy = False
    assert det.saturation(pool, 6) == 1.5 and det.saturation([], 0) == 1.0


CONFIG = {
    "plugins": [
        {"type": "concurrency-detector", "parameters": {"maxConcurrency": 4, "headroom": 0.25}},
        {"type": "priority-holdback-policy", "name": "holdback", "parameters": {"minCeiling": 0.5}},
        {"type": "queue-scorer"},
    ],
    "flowControl": {
        "saturationDetector": {"pluginRef": "concurrency-detector"},
        "usageLimitPolicyPluginRef": "holdback",
    },
}


def test_flow_control_section_names_the_detector_and_the_usage_limit():
    cfg = load_config(CONFIG)
    assert cfg.extra_sections["saturationDetector"] == {
        "detector": "concurrency",
        "maxConcurrency": 4,
        "headroom": 0.25,
    }
    assert cfg.extra_sections["usageLimit"] == {"min_ceiling": 0.5, "max_ceiling": 1.0, "domain": "rank"}
    adm = Admission.from_config(cfg, 16, 30.0)
    assert adm.counting and adm.usage_limit.ceiling(0, [1, 0, -1]) == 0.75
    assert not any("not acted on" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flowControl": {"usageLimitPolicyPluginRef": "queue-scorer"}}, "is a queue-scorer, expected a usage limit"),
        ({"flowControl": {"usageLimitPolicyPluginRef": "nope"}}, "'nope' names no plugin"),
        ({"flowControl": {"queueing": 1}}, "flowControl: unknown key 'queueing'"),
        ({"saturationDetector": {"pluginRef": "concurrency-detector"}}, "not both"),
    ],
)
def test_flow_control_mistakes_are_one_line(change: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config({**CONFIG, **change})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"maxConcurrency": 0}, "maxConcurrency: expected a positive integer"),
        ({"concurrencyMode": "tokens"}, "counts requests only"),
        ({"headroom": -1}, "headroom: expected a number >= 0"),
    ],
)
def test_concurrency_detector_parameters_are_checked(params: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config({"plugins": [{"type": "concurrency-detector", "parameters": params}]})


def test_holdback_needs_min_ceiling_below_max():
    for params, message in (({}, "minCeiling: required"), ({"minCeiling": 0.9, "maxCeiling": 0.8}, "must be below")):
        with pytest.raises(ConfigError, match=message):
            load_config(
                {"plugins": [{"type": "priority-holdback-policy", "parameters": params}, {"type": "queue-scorer"}]}
            )


def test_the_filter_drops_endpoints_at_their_limit_unless_all_are():
    ctx = PluginContext(indexes=PrefixIndexes())
    cls = lookup("concurrency-detector").cls
    f = cls("cd", cls.Params(max_concurrency=2, headroom=0.5), ctx)
    a, b = _pool(2)
    for i in range(3):
        ctx.inflight.dispatch(f"r{i}", a.key, 0)
    req = LLMRequest("x", "m")
    assert f.filter(req, [a, b]) == [b]  # a holds 3 >= 2 x 1.5
    assert f.filter(req, [a]) == [a]  # every endpoint at its limit: the gate holds requests, not the filter


def test_lower_bands_stop_short_and_critical_takes_the_held_seats():
    async def run() -> None:
        adm = Admission(
            ConcurrencyDetector(ConcurrencyConfig(max_concurrency=4)),
            queue_size=8,
            queue_ttl_s=5,
            usage_limit=UsageLimit(min_ceiling=0.5, max_ceiling=1.0),
            priorities=[1, 0, -1],
        )
        pool = _pool(1)
        for prio in (1, 0, -1):  # all three bands active
            (await adm.admit(LLMRequest(f"warm{prio}", "m", priority=prio), lambda: pool)).release()
        assert adm.bands() == [-1, 0, 1] and adm.active == 0
        tickets = [await adm.admit(LLMRequest(f"s{i}", "m", priority=0), lambda: pool) for i in range(3)]
        assert adm.active == 3  # standard's ceiling 0.75 of 4: the fourth waits
        waiting = asyncio.create_task(adm.admit(LLMRequest("s3", "m", priority=0), lambda: pool))
        await asyncio.sleep(0.03)
        assert not waiting.done() and adm.queue_size == 1
        crit = await asyncio.wait_for(adm.admit(LLMRequest("c0", "m", priority=1), lambda: pool), 0.5)
        assert crit is not None and adm.active == 4  # straight into the seat standard may not take
        with pytest.raises(Rejected, match="sheddable"):
            await adm.admit(LLMRequest("x", "m", priority=-1), lambda: pool)  # full: shed
        later_crit = asyncio.create_task(adm.admit(LLMRequest("c1", "m", priority=1), lambda: pool))
        await asyncio.sleep(0.03)
        tickets[0].release()  # one seat frees: the critical request waiting goes first
        t = await asyncio.wait_for(later_crit, 0.5)
        assert not waiting.done() and adm.active == 4
        for held in (crit, t, *tickets[1:]):
            held.release()
        await asyncio.wait_for(waiting, 0.5)
        assert adm.active == 1

    asyncio.run(run())


def test_one_band_alone_gets_the_whole_pool_and_idle_bands_expire():
    async def run() -> None:
        now = [100.0]
        adm = Admission(
            ConcurrencyDetector(ConcurrencyConfig(max_concurrency=4)),
            queue_size=8,
            usage_limit=UsageLimit(min_ceiling=0.5, max_ceiling=1.0),
            priorities=[1, 0, -1],
            band_idle_s=10.0,
            clock=lambda: now[0],
        )
        pool = _pool(1)
        held = [await adm.admit(LLMRequest(f"s{i}", "m", priority=0), lambda: pool) for i in range(4)]
        assert adm.active == 4 and adm.bands() == [0]  # standard alone: no holdback
        for t in held:
            t.release()
        (await adm.admit(LLMRequest("x", "m", priority=-1), lambda: pool)).release()
        assert adm.bands() == [-1, 0] and adm.ceiling(0) == 1.0  # nobody above standard: it may fill the pool
        assert adm.ceiling(-1) == 0.5
        (await adm.admit(LLMRequest("c", "m", priority=1), lambda: pool)).release()
        assert adm.bands() == [-1, 0, 1] and adm.ceiling(0) == 0.75  # critical seen: standard is held back
        now[0] += 11.0
        assert adm.bands() == [] and adm.ceiling(0) == 1.0  # all idle for longer than band_idle_s

    asyncio.run(run())
