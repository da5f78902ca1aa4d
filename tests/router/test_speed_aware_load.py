"""Speed-aware token load (token-load-scorer `speedAware`): load divided by each endpoint's relative speed, told
by a label or learned from first tokens; on equal pods exactly the speed-blind score and decisions."""

from __future__ import annotations

import collections
import dataclasses
import random

import pytest

from llmdctl.bench.load import Stage
from llmdctl.bench.workloads import WorkloadSpec
from llmdctl.k8s.render import upstream_epp_config
from llmdctl.plan.run import workload_and_arrivals
from llmdctl.plan.sim import PlanConfig, PoolPlan, simulate
from router_lite.config import load_config
from router_lite.inflight import InFlightTracker
from router_lite.plugins import PluginContext
from router_lite.prefix import PrefixIndexes
from router_lite.registry import ConfigError
from router_lite.speeds import SPEED_LABEL, relative_speeds
from router_lite.types import Endpoint
from tests.helpers_configs import token_load_router
from tests.router.test_scorers import Clock, make, req


def _ep(port: int, pool: str, speed: str | None = None) -> Endpoint:
    labels = {"llm-d.ai/pool": pool, **({SPEED_LABEL: speed} if speed is not None else {})}
    return Endpoint("10.0.0.1", port, labels=labels)


def _teach(t: InFlightTracker, clock: Clock, key: str, seconds_per_ktoken: float, n: int = 48) -> None:
    """`n` first tokens on `key`: 5 ms per step plus `seconds_per_ktoken` per 1000 tokens of work."""
    for i in range(n):
        work = (500, 1000, 2000, 4000)[i % 4]
        t.dispatch(f"{key}-{i}", key, work)
        clock.t += 0.005 + seconds_per_ktoken * work / 1000
        t.first_token(f"{key}-{i}", key)
        t.finish(f"{key}-{i}", key)


def _scorers(ctx: PluginContext, **params):
    blind = make("token-load-scorer", {"queueThresholdTokens": 10_000}, ctx, name="blind")
    aware = make("token-load-scorer", {"queueThresholdTokens": 10_000, "speedAware": True, **params}, ctx, "aware")
    for s in (blind, aware):
        s.bind()
    return blind, aware


def test_told_speeds_divide_the_load_and_equal_speeds_give_the_blind_score_exactly():
    ctx = PluginContext(indexes=PrefixIndexes(), rng=random.Random(0))
    blind, aware = _scorers(ctx)
    fast, slow = _ep(1, "x", "2"), _ep(2, "y", "1")
    ctx.inflight.dispatch("q1", fast.key, 3000)
    ctx.inflight.dispatch("q2", slow.key, 1000)
    r = req("r", tokens=list(range(1000)))
    # fast: (3000 + 1000) / 1.0; slow: (1000 + 1000) / 0.5 -> equal; blind prefers slow (2000 < 4000 tokens)
    assert aware.score(r, [fast, slow]) == {fast.key: pytest.approx(0.6), slow.key: pytest.approx(0.6)}
    assert blind.score(r, [fast, slow]) == {fast.key: pytest.approx(0.6), slow.key: pytest.approx(0.8)}
    same = [_ep(1, "x", "3"), _ep(2, "y", "3"), _ep(3, "z")]  # z untold: learned, nothing measured -> equal
    assert aware.score(r, same) == blind.score(r, same)
    assert aware.speeds(same, {e.key: 0 for e in same}) == dict.fromkeys((e.key for e in same), 1.0)


def test_learned_speeds_come_from_each_pools_fitted_line_and_replicas_share_one():
    clock = Clock()
    t = InFlightTracker(clock=clock)
    a0, a1, b0 = _ep(1, "fast"), _ep(2, "fast"), _ep(3, "slow")
    _teach(t, clock, a0.key, 0.020)
    _teach(t, clock, a1.key, 0.024)  # a replica whose line differs by noise: the pool's median counts
    _teach(t, clock, b0.key, 0.060)
    speeds = relative_speeds([a0, a1, b0], t, work=2000)
    assert speeds[a0.key] == speeds[a1.key] == 1.0
    # TTFT of 2000 tokens: fast pool 0.005 + 0.044 (median of 0.040 and 0.048), slow 0.005 + 0.120
    assert speeds[b0.key] == pytest.approx(0.049 / 0.125, rel=0.05)
    # Within the tolerance of the fastest, a pool counts as the fastest; outside it keeps its figure.
    assert relative_speeds([a0, b0], t, 2000, tolerance=2.0) == {a0.key: 1.0, b0.key: 1.0}
    assert relative_speeds([a0, b0], t, 2000, tolerance=0.5)[b0.key] < 0.5


def test_learned_speeds_wait_for_a_warm_line_and_use_measured_rates_until_then():
    clock = Clock()
    t = InFlightTracker(clock=clock)
    a, b = _ep(1, "a"), _ep(2, "b")
    assert relative_speeds([a, b], t, 1000) == {a.key: 1.0, b.key: 1.0}  # nothing measured: equal
    _teach(t, clock, a.key, 0.020, n=8)
    _teach(t, clock, b.key, 0.080, n=8)  # too few for a line: tokens/TTFT rates stand in
    cold = relative_speeds([a, b], t, 1000)
    assert cold[a.key] == 1.0 and 0.2 < cold[b.key] < 0.45


def test_speed_parameters_are_checked_and_dropped_for_llm_ds_own_epp():
    with pytest.raises(ConfigError, match="speedTolerance"):
        load_config({"plugins": [{"type": "token-load-scorer", "parameters": {"speedTolerance": -1}}]})
    with pytest.raises(ConfigError, match="maxNumSeqs"):
        load_config({"plugins": [{"type": "token-load-scorer", "parameters": {"maxNumSeqs": -2}}]})
    params = {"queueThresholdTokens": 65536, "speedAware": True, "speedTolerance": 0.5, "maxNumSeqs": 256}
    upstream, dropped = upstream_epp_config({"plugins": [{"type": "token-load-scorer", "parameters": params}]})
    assert upstream["plugins"] == [{"type": "token-load-scorer", "parameters": {"queueThresholdTokens": 65536}}]
    assert dropped == []


def test_a_bad_speed_label_is_ignored_not_fatal(caplog):
    ctx = PluginContext(indexes=PrefixIndexes(), rng=random.Random(0))
    blind, aware = _scorers(ctx)
    eps = [_ep(11, "x", "fast"), _ep(12, "y", "2")]
    r = req("r", tokens=list(range(100)))
    assert aware.score(r, eps) == blind.score(r, eps)  # one untold (unreadable) endpoint: learned, equal
    assert "expected a positive number" in caplog.text and SPEED_LABEL in caplog.text


def test_seat_limit_scores_a_full_endpoint_zero():
    ctx = PluginContext(indexes=PrefixIndexes(), rng=random.Random(0))
    scorer = make("token-load-scorer", {"queueThresholdTokens": 10_000, "maxNumSeqs": 2}, ctx)
    scorer.bind()
    a, b = _ep(1, "x"), _ep(2, "x")
    for i in range(2):
        ctx.inflight.dispatch(f"s{i}", a.key, 0)
    assert scorer.score(req("r", tokens=list(range(100))), [a, b]) == {a.key: 0.0, b.key: pytest.approx(0.99)}


# ---- on the planner: real schedulers and simulated engines on a virtual clock ----------------------------------

POOL = PoolPlan(replicas=1, hardware="H100", max_model_len=4096)
COLD = WorkloadSpec(kind="random", input_len=2048, output_len=16, seed=1)  # no reuse: every request is work


def _run(pools: list[PoolPlan], aware: bool, rate: float, workload: WorkloadSpec = COLD):
    reqs, arrivals = workload_and_arrivals(workload, [Stage(rate, 30.0)], seed=1)
    res = simulate(PlanConfig(pools, token_load_router(aware), seed=1), reqs, arrivals)
    shares = collections.Counter(r.endpoint.rsplit("-", 1)[0] for r in res.records)
    ttfts = [r.ttft for r in res.records if r.ttft is not None]
    return res, shares, sum(ttfts) / len(ttfts)


def test_planner_told_2x_faster_pod_gets_twice_the_work_near_saturation():
    # Two identical H100 pods, one labelled twice as fast: the router does as told (the pods are not really
    # different, so this isolates the label). 14 req/s of 2048-token prompts keep both busy.
    pools = [
        dataclasses.replace(POOL, name="two", labels={SPEED_LABEL: "2"}),
        dataclasses.replace(POOL, name="one", labels={SPEED_LABEL: "1"}),
    ]
    _, aware, _ = _run(pools, True, 14.0)
    _, blind, _ = _run(pools, False, 14.0)
    assert 1.7 < aware["two"] / aware["one"] < 2.4
    assert 0.85 < blind["two"] / blind["one"] < 1.15


def test_planner_learned_speeds_send_more_to_the_faster_pod_and_cut_ttft():
    # H100 next to A100 (~3x slower prefill on an 8B model), nothing told: the router learns it from first tokens.
    pools = [dataclasses.replace(POOL, name="h100"), dataclasses.replace(POOL, name="a100", hardware="A100")]
    _, aware, aware_ttft = _run(pools, True, 19.0)
    _, blind, blind_ttft = _run(pools, False, 19.0)
    assert aware["h100"] / aware["a100"] > 3.0 > blind["h100"] / blind["a100"]
    assert aware_ttft < 0.92 * blind_ttft


def test_planner_equal_pods_get_exactly_the_blind_decisions():
    shared = WorkloadSpec(kind="shared-prefix", num_groups=8, prompts_per_group=4, system_prompt_len=512,
                          question_len=256, output_len=32)  # fmt: skip
    pools = [dataclasses.replace(POOL, name="p", replicas=3)]
    aware, _, _ = _run(pools, True, 40.0, shared)
    blind, _, _ = _run(pools, False, 40.0, shared)
    key = [(r.request_id, r.endpoint, r.first_token) for r in aware.records]
    assert len(key) > 1000 and key == [(r.request_id, r.endpoint, r.first_token) for r in blind.records]


def test_a_line_predicting_almost_nothing_does_not_zero_every_other_pod():
    """A fitted line can extrapolate to ~0 s for little work (negative intercept): the fitted TTFT is floored
    at 1 ms and no speed falls below 0.01, so scores stay finite and other pods keep a share."""
    ctx = PluginContext(indexes=PrefixIndexes(), rng=random.Random(0))
    _, aware = _scorers(ctx)
    clock = Clock()
    t = ctx.inflight
    t.clock = clock
    a, b = _ep(1, "steep"), _ep(2, "flat")
    for i in range(48):  # steep: 0.2 s per 1000 tokens less 0.1999 s -> a 0.1 ms TTFT at 1000 tokens
        work = (1000, 2000, 4000)[i % 3]
        t.dispatch(f"s{i}", a.key, work)
        clock.t += 0.2 * work / 1000 - 0.1999
        t.first_token(f"s{i}", a.key)
        t.finish(f"s{i}", a.key)
    _teach(t, clock, b.key, 0.050)  # flat: 55 ms at 1000 tokens
    speeds = relative_speeds([a, b], t, work=1000)
    assert speeds[a.key] == 1.0 and speeds[b.key] == pytest.approx(0.001 / 0.055, rel=0.1)  # floored at 1 ms
    scores = aware.score(req("r", tokens=list(range(1000))), [a, b])
    assert all(0.0 <= v <= 1.0 for v in scores.values())
