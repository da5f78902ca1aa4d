"""The router's own in-flight load and the plugins on it: exact accounting, formulas, the online predictor."""

from __future__ import annotations

import random

import pytest

from router_lite.config import load_config
from router_lite.inflight import InFlightTracker
from router_lite.latency_predictor import OnlineRegression
from router_lite.plugins import PluginContext
from router_lite.prefix import PrefixIndexes
from router_lite.scheduler import Scheduler
from router_lite.types import SHED, Endpoint, LLMRequest
from tests.router.test_scorers import Clock, ep, make, req


def test_tracker_counts_each_phase_exactly_and_is_idempotent():
    clock = Clock()
    t = InFlightTracker(clock=clock)
    t.dispatch("r1", "a", 1000)
    t.dispatch("r1", "a", 1000)  # a re-sent hook never double-counts
    t.dispatch("r2", "a", 300)
    assert t.load("a").to_dict() == {"requests": 2, "tokens": 1300, "decoding": 0}
    clock.t = 0.5
    obs = t.first_token("r1", "a")
    assert obs.ttft_s == 0.5 and obs.tokens_ahead == 0 and obs.uncached == 1000
    assert t.first_token("r1", "a") is None
    assert t.load("a").to_dict() == {"requests": 2, "tokens": 300, "decoding": 1}
    assert t.prefill_rate("a") == pytest.approx(2000.0)  # 1000 tokens in 0.5 s
    t.finish("r2", "a")  # aborted before its first token: its prefill tokens leave with it
    assert t.load("a").to_dict() == {"requests": 1, "tokens": 0, "decoding": 1}
    t.finish("r1", "a")
    t.finish("r1", "a")
    assert t.snapshot() == {} and t.in_flight() == 0


def test_tracker_retry_moves_the_load_and_pd_legs_are_separate():
    t = InFlightTracker(clock=Clock())
    t.dispatch("r", "a", 500)
    t.finish("r", "a")  # a failed before the first byte
    t.dispatch("r", "b", 500)  # the retry
    assert t.snapshot().keys() == {"b"}
    t.dispatch("pd", "prefill", 800)
    t.dispatch("pd", "decode", 0)  # the KV arrives from the prefill pod: nothing to prefill
    t.finish("pd", "prefill")
    assert t.load("prefill").requests == 0 and t.load("decode").to_dict() == {"requests": 1, "tokens": 0, "decoding": 0}


def _sched(config: dict, clock: Clock) -> Scheduler:
    return Scheduler(load_config(config), rng=random.Random(0), clock=clock)


APPROX = {
    "plugins": [
        {"type": "prefix-cache-scorer", "parameters": {"blockSizeTokens": 16, "autoTune": False}},
        {"type": "active-request-scorer"},
    ]
}


def test_scheduler_feeds_the_tracker_with_uncached_tokens_and_retries():
    clock = Clock()
    s = _sched(APPROX, clock)
    eps = [Endpoint("10.0.0.1", p) for p in (1, 2)]
    first = LLMRequest("r1", "m", prompt_token_ids=list(range(640)))
    res = s.schedule(first, eps)
    s.on_routed(first, res)
    assert s.inflight.load(res.target.key).tokens == 640  # nothing cached yet
    second = LLMRequest("r2", "m", prompt_token_ids=list(range(640)) + [7] * 64)
    res2 = s.schedule(second, [res.target])
    s.on_routed(second, res2)
    assert s.inflight.load(res.target.key).tokens == 640 + 64  # the 640-token prefix is expected cached
    other = next(e for e in eps if e.key != res.target.key)
    s.on_finished(second, res.target)
    s.on_routed(second, res2, target=other)  # retried elsewhere: the whole prompt there
    assert s.inflight.load(other.key).tokens == 704
    d = res2.to_decision_dict()
    assert d["candidates"][0]["inflight"] == {"requests": 1, "tokens": 640, "decoding": 0}
    s.on_finished(first, res.target)
    s.on_finished(second, other)
    assert s.inflight.snapshot() == {}


def test_active_request_scorer_idle_threshold_and_max_busy_score():
    ctx = PluginContext(indexes=PrefixIndexes())
    for i in range(4):
        ctx.inflight.dispatch(f"c{i}", "10.0.0.1:3", 0)
    for i in range(2):
        ctx.inflight.dispatch(f"b{i}", "10.0.0.1:2", 0)
    eps = [ep(1), ep(2), ep(3)]
    assert make("active-request-scorer", ctx=ctx).score(req(), eps) == {
        "10.0.0.1:1": 1.0,
        "10.0.0.1:2": 0.5,
        "10.0.0.1:3": 0.0,
    }
    tuned = make("active-request-scorer", {"idleThreshold": 2, "maxBusyScore": 0.5}, ctx=ctx)
    assert tuned.score(req(), eps) == {"10.0.0.1:1": 1.0, "10.0.0.1:2": 1.0, "10.0.0.1:3": 0.0}


def test_token_load_scorer_counts_queued_and_own_uncached_tokens():
    ctx = PluginContext(indexes=PrefixIndexes(), rng=random.Random(0))
    prefix = make("prefix-cache-scorer", {"blockSizeTokens": 16, "autoTune": False}, ctx)
    scorer = make("token-load-scorer", {"queueThresholdTokens": 1000}, ctx)
    scorer.bind()
    a, b = ep(1), ep(2)
    warm = req("w", tokens=list(range(320)))
    prefix.on_routed(warm, a, "default")  # a holds the 320-token prefix
    ctx.inflight.dispatch("q", a.key, 500)
    r = req("r", tokens=list(range(320)) + [1] * 80)
    # a: 1 - (500 queued + 80 uncached) / 1000; b: 1 - 400 / 1000
    assert scorer.score(r, [a, b]) == {a.key: pytest.approx(0.42), b.key: pytest.approx(0.6)}


def _affinity(ctx, penalty_ms=0.0, source="measured"):
    prefix = make("prefix-cache-scorer", {"blockSizeTokens": 16, "autoTune": False}, ctx)
    flt = make(
        "prefix-cache-affinity-filter",
        {"maxTTFTPenaltyMs": penalty_ms, "ttftSource": source, "peakPrefillThroughput": 1000.0},
        ctx,
    )
    flt.bind()
    return prefix, flt


def test_affinity_filter_sticks_until_a_cold_prefill_is_faster():
    ctx = PluginContext(indexes=PrefixIndexes(), rng=random.Random(0))
    prefix, flt = _affinity(ctx)
    a, b = ep(1), ep(2)
    prefix.on_routed(req("w", tokens=list(range(960))), a, "default")
    r = req("r", tokens=list(range(960)) + [3] * 64)  # 64 uncached on a, 1024 on b
    assert flt.filter(r, [a, b]) == [a]
    ctx.inflight.dispatch("q1", a.key, 900)  # a: (900 + 64) < b: 1024 -> still sticky
    assert flt.filter(r, [a, b]) == [a]
    ctx.inflight.dispatch("q2", a.key, 100)  # a: 1064 > 1024 -> a cold prefill on b is faster
    assert flt.filter(r, [a, b]) == [a, b]
    _, lenient = _affinity(
        PluginContext(indexes=ctx.indexes, rng=random.Random(0), inflight=ctx.inflight), penalty_ms=100.0
    )
    assert lenient.filter(r, [a, b]) == [a]  # 40 ms worse is within a 100 ms penalty (at 1000 tokens/s)


def test_estimated_ttft_scorer_uses_measured_rates():
    clock = Clock()
    ctx = PluginContext(indexes=PrefixIndexes(), clock=clock)
    scorer = make("estimated-ttft-scorer", {"peakPrefillThroughput": 1000.0}, ctx)
    scorer.bind()
    a, b = ep(1), ep(2)
    ctx.inflight.dispatch("x", a.key, 2000)
    clock.t = 0.5
    ctx.inflight.first_token("x", a.key)  # a prefills 4000 tokens/s
    ctx.inflight.dispatch("y", b.key, 1000)
    r = req("r", tokens=list(range(1000)))
    est = scorer.estimates(r, [a, b])
    # b has no measurement yet: the pool's (a's) rate stands in
    assert est == {a.key: pytest.approx(0.25), b.key: pytest.approx(0.5)}
    assert scorer.score(r, [a, b]) == {a.key: 1.0, b.key: pytest.approx(0.5)}


def test_replicas_are_compared_at_the_pool_rate_unless_per_endpoint_rates_are_asked():
    clock = Clock()
    ctx = PluginContext(indexes=PrefixIndexes(), clock=clock)
    pool = make("estimated-ttft-scorer", {}, ctx)
    own = make("estimated-ttft-scorer", {"perEndpointRates": True}, ctx)
    for s in (pool, own):
        s.bind()
    a, b = ep(1), ep(2)
    for i, work in enumerate((500, 1000, 2000) * 5):  # a measured 4000 tokens/s, b 2000
        for key, rate in ((a.key, 4000), (b.key, 2000)):
            ctx.inflight.dispatch(f"m-{key}-{i}", key, work)
            clock.t += work / rate
            ctx.inflight.first_token(f"m-{key}-{i}", key)
            ctx.inflight.finish(f"m-{key}-{i}", key)
    ctx.inflight.dispatch("q", a.key, 300)  # a has more prefill queued than b
    r = req("r", tokens=list(range(1000)))
    # at one (median) rate the pod with less queued work wins; at their own (fitted) speeds the faster one
    assert pool.score(r, [a, b])[b.key] == 1.0 and pool.score(r, [a, b])[a.key] < 1.0
    assert own.score(r, [a, b])[a.key] == 1.0 and own.score(r, [a, b])[b.key] < 1.0


def test_online_regression_predicts_held_out_points():
    rng = random.Random(1)
    model = OnlineRegression(3, warmup=5)

    def truth(x1, x2):
        return 0.02 + 0.3 * x1 + 0.05 * x2

    for _ in range(300):
        x1, x2 = rng.uniform(0, 4), rng.uniform(0, 10)
        model.update([1.0, x1, x2], truth(x1, x2) * rng.uniform(0.95, 1.05))
    errs = []
    for _ in range(100):  # points never fitted on
        x1, x2 = rng.uniform(0, 4), rng.uniform(0, 10)
        errs.append(abs(model.predict([1.0, x1, x2]) - truth(x1, x2)) / truth(x1, x2))
    assert sorted(errs)[50] < 0.03 and sorted(errs)[90] < 0.06
    assert OnlineRegression(3, warmup=5).predict([1, 1, 1]) is None


PREDICTED = {
    "plugins": [
        {"type": "prefix-cache-scorer", "parameters": {"blockSizeTokens": 16, "autoTune": False}},
        {"type": "inflight-load-producer"},
        {"type": "predicted-latency-producer", "parameters": {"warmupSamples": 5}},
        {"type": "latency-scorer", "parameters": {"epsilonExploreSticky": 0, "epsilonExploreNeg": 0}},
    ],
    "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "latency-scorer"}]}],
}


def _train(s: Scheduler, clock: Clock, eps: list[Endpoint], n: int = 40) -> None:
    """Requests whose TTFT is 10 ms + 1 ms per 100 uncached tokens queued ahead and in the request."""
    rng = random.Random(3)
    for i in range(n):
        r = LLMRequest(f"t{i}", "m", prompt_token_ids=[i] * 16 + list(range(1000, 1000 + 100 * (i % 7 + 1))))
        res = s.schedule(r, eps)
        ahead = rng.choice([0, 0, 1000, 3000, 8000])
        if ahead:
            s.inflight.dispatch(f"bg{i}", res.target.key, ahead)  # work queued before it
        s.on_routed(r, res)
        clock.t += 0.010 + s.inflight.load(res.target.key).tokens / 100_000
        s.on_first_token(r, res.target)
        s.on_finished(r, res.target)
        s.inflight.finish(f"bg{i}", res.target.key)


def test_latency_scorer_learns_then_routes_on_predictions_and_sheds():
    clock = Clock()
    s = _sched(PREDICTED, clock)
    eps = [Endpoint("10.0.0.1", p) for p in (1, 2)]
    _train(s, clock, eps)
    busy, idle = eps
    s.inflight.dispatch("q", busy.key, 20_000)  # 200 ms of prefill queued on `busy`
    r = LLMRequest("r", "m", prompt_token_ids=list(range(5000, 5500)))
    res = s.schedule(r, eps)
    assert res.target.key == idle.key
    pred = res.predictions
    assert pred[busy.key]["ttft_ms"] > pred[idle.key]["ttft_ms"] + 100
    assert pred[idle.key]["ttft_ms"] == pytest.approx(15.0, rel=0.3)  # 10 ms + 500 tokens
    sheddable = LLMRequest(
        "s", "m", prompt_token_ids=list(range(5000, 5500)), priority=-1, headers={"x-slo-ttft-ms": "1"}
    )
    s.schedule(sheddable, eps)
    assert "predicted to meet the SLO" in sheddable.state.get(SHED)
    critical = LLMRequest("c", "m", prompt_token_ids=list(range(5000, 5500)), headers={"x-slo-ttft-ms": "1"})
    assert s.schedule(critical, eps).target is not None and SHED not in critical.state
    stats = s.plugins["predicted-latency-producer"].stats()
    assert stats["ttft_samples"] == 40


def test_latency_scorer_needs_its_producer():
    from router_lite.registry import ConfigError

    with pytest.raises(ConfigError, match="latency-scorer: needs a predicted-latency-producer"):
        Scheduler(load_config({"plugins": [{"type": "latency-scorer"}]}))


def test_predictor_reports_ttft_and_tpot_error_after_warmup_and_recent_outcomes():
    clock = Clock()
    s = _sched(PREDICTED, clock)
    eps = [Endpoint("10.0.0.1", p) for p in (1, 2)]
    rng = random.Random(5)
    for i in range(80):  # TTFT: 10 ms + 1 ms per 100 uncached tokens; TPOT: 4 ms + 2 ms per decoding request
        r = LLMRequest(f"t{i}", "m", prompt_token_ids=[i] * 16 + list(range(1000, 1000 + 100 * (i % 7 + 1))))
        bg = rng.randint(0, 3)
        for j in range(bg):  # other requests decoding on both pods meanwhile (their own TTFTs follow the same law)
            for e in eps:
                s.inflight.dispatch(f"bg{i}-{j}", e.key, 0)
                clock.t += 0.010
                s.inflight.first_token(f"bg{i}-{j}", e.key)
        res = s.schedule(r, eps)
        s.on_routed(r, res)
        clock.t += 0.010 + s.inflight.load(res.target.key).tokens / 100_000
        s.on_first_token(r, res.target)
        clock.t += 9 * (0.004 + 0.002 * s.inflight.load(res.target.key).decoding)
        s.on_finished(r, res.target, output_tokens=10)
        for j in range(bg):
            for e in eps:
                s.inflight.finish(f"bg{i}-{j}", e.key)
    stats = s.plugins["predicted-latency-producer"].stats()
    for key in ("ttft_error_after_warmup", "tpot_error_after_warmup"):
        err = stats[key]
        assert err["n"] >= 40 and err["median"] < 0.05 and err["p90"] < 0.15, (key, err)
    last = stats["recent"][-1]
    assert last["request_id"] == "t79" and last["endpoint"] in {e.key for e in eps}
    assert last["ttft_ms"] == pytest.approx(last["predicted_ttft_ms"], rel=0.15)
    assert last["tpot_ms"] == pytest.approx(last["predicted_tpot_ms"], rel=0.15)


def _feed(t: InFlightTracker, clock: Clock, key: str, work: int, ttft_s: float, n: int) -> None:
    """`n` requests on `key`, each meeting `work` uncached tokens (its own included), answered after `ttft_s`."""
    for i in range(n):
        t.dispatch(f"{key}-{work}-{i}", key, work)
        clock.t += ttft_s
        t.first_token(f"{key}-{work}-{i}", key)
        t.finish(f"{key}-{work}-{i}", key)


def test_per_endpoint_fit_reads_batching_as_load_not_speed():
    # Two pods of one speed: 15 ms per step plus 1000 tokens per 30 ms. The busy one meets 8000 tokens at a
    # time, the quiet one 500, so tokens/TTFT makes the busy one look ~2x faster (the herding bias).
    clock = Clock()
    t = InFlightTracker(clock=clock)
    rng = random.Random(0)
    for _ in range(40):
        for key, work in (("busy", rng.choice((6000, 8000, 10000))), ("quiet", rng.choice((300, 500, 800)))):
            _feed(t, clock, key, work, 0.015 + 0.03 * work / 1000, 1)
    assert t.prefill_rate("busy") > 1.5 * t.prefill_rate("quiet")
    busy, quiet = (t.ttft_estimate_s(k, 2000, 1.0, per_endpoint=True) for k in ("busy", "quiet"))
    assert busy == pytest.approx(0.075, rel=0.05) and quiet == pytest.approx(0.075, rel=0.05)


def test_per_endpoint_fit_ranks_really_faster_pods_first_and_falls_back_until_warm():
    clock = Clock()
    t = InFlightTracker(clock=clock)
    for work in (500, 1000, 2000, 4000) * 5:
        _feed(t, clock, "fast", work, 0.002 + work / 40_000, 1)
        _feed(t, clock, "slow", work, 0.004 + work / 20_000, 1)
    fast, slow = (t.ttft_estimate_s(k, 3000, 1.0, per_endpoint=True) for k in ("fast", "slow"))
    assert fast == pytest.approx(0.077, rel=0.05) and slow == pytest.approx(0.154, rel=0.05)
    _feed(t, clock, "new", 1000, 0.05, 3)  # three samples: not warm, the pool's median rate stands in
    assert t.ttft_estimate_s("new", 3000, 1.0, per_endpoint=True) == pytest.approx(3000 / t.pool_prefill_rate())
