"""The planner driven by `SimEngine.fast_forward` gives the same per-request results as step-by-step driving."""

from __future__ import annotations

import dataclasses

import pytest

from llmdctl.bench.load import Stage
from llmdctl.bench.metrics import OK
from llmdctl.bench.workloads import WorkloadSpec
from llmdctl.plan.presets import SMALL, policy_configs
from llmdctl.plan.run import workload_and_arrivals
from llmdctl.plan.sim import PlanConfig, PoolPlan, simulate
from tests.helpers_configs import token_load_router

# Over-subscribed: 12 groups' 1 k-token prefixes do not fit in one pod, so prefix locality, queueing and KV
# pressure (preemptions) all show up in the timings.
POOL = PoolPlan(replicas=3, model="Llama-3.1-8B", block_size=16, num_gpu_blocks=400, max_num_seqs=32)
WORKLOAD = WorkloadSpec(
    kind="shared-prefix", num_groups=12, prompts_per_group=3, system_prompt_len=1024, question_len=64, output_len=40
)


def _both(policy: str, stages: list[Stage], seed: int = 3, pool: PoolPlan = POOL) -> tuple[dict, dict, tuple, tuple]:
    cfg = PlanConfig([pool], policy_configs(pool.block_size)[policy], name=policy, seed=seed)
    reqs, arr = workload_and_arrivals(WORKLOAD, stages, seed=seed)
    a = simulate(cfg, reqs, arr, drive="step")
    b = simulate(cfg, reqs, arr, drive="fast")
    ra = {
        r.request_id: (r.status, r.endpoint, r.sent, r.first_token, r.finished, r.output_tokens, r.cached_tokens)
        for r in a.records
    }
    rb = {
        r.request_id: (r.status, r.endpoint, r.sent, r.first_token, r.finished, r.output_tokens, r.cached_tokens)
        for r in b.records
    }
    return ra, rb, (a.sim_s, a.steps, a.hit_rate, a.preemptions), (b.sim_s, b.steps, b.hit_rate, b.preemptions)


@pytest.mark.parametrize("policy", ["precise", "random", "load", "approximate"])
def test_fast_forward_matches_step_driving(policy: str) -> None:
    ra, rb, sa, sb = _both(policy, [Stage(12.0, 4.0), Stage(30.0, 2.0)])
    assert len(ra) > 60 and ra.keys() == rb.keys()
    assert all(v[0] == OK for v in ra.values())
    # Same routing (endpoint per request), same TTFT and end-to-end: the routing-visible snapshots, KV events
    # and finishes happen at the same simulated times, so the numbers are identical, not just close.
    assert ra == rb
    assert sa == sb


def test_fast_forward_matches_under_kv_pressure() -> None:
    pool = dataclasses.replace(POOL, num_gpu_blocks=160, max_num_seqs=64)
    ra, rb, sa, sb = _both("precise", [Stage(40.0, 2.0)], seed=7, pool=pool)
    assert sa[3] > 0  # preemptions happened
    assert ra == rb and sa == sb


def test_auto_keeps_step_driving_where_finishes_create_work() -> None:
    # Sessions: a finish releases the next turn; "auto" must keep the step driver (results equal to "step").
    cfg = PlanConfig(SMALL.pools, policy_configs(16)["precise"], name="mt")
    reqs, arr = workload_and_arrivals(
        WorkloadSpec(kind="multi-turn", num_sessions=3, turns=3, system_prompt_len=200, question_len=20, output_len=10),
        [Stage(50.0, 1.0)],
    )
    a = simulate(cfg, reqs, arr, drive="step")
    b = simulate(cfg, reqs, arr)
    assert [(r.request_id, r.first_token, r.finished) for r in a.records] == [
        (r.request_id, r.first_token, r.finished) for r in b.records
    ]
    with pytest.raises(ValueError, match="drive"):
        simulate(cfg, reqs, arr, drive="fastest")


@pytest.mark.parametrize("speed_aware", [False, True])
def test_fast_forward_matches_step_driving_for_in_flight_load_scorers(speed_aware: bool) -> None:
    # The router's in-flight tracker learns from first tokens (tokens leave the load, TTFTs fit each pod's
    # speed): fast driving must tell it of each first token at the token's own time, as the step driver does.
    pools = [
        dataclasses.replace(POOL, name="h100", replicas=2),
        dataclasses.replace(POOL, name="a100", replicas=2, hardware="A100"),
    ]
    cfg = PlanConfig(pools, token_load_router(speed_aware), name="inflight", seed=5)
    reqs, arr = workload_and_arrivals(WORKLOAD, [Stage(20.0, 4.0)], seed=5)
    a, b = simulate(cfg, reqs, arr, drive="step"), simulate(cfg, reqs, arr, drive="fast")
    key = lambda r: (r.request_id, r.endpoint, r.first_token, r.finished)  # noqa: E731
    assert len(a.records) > 60 and [key(r) for r in a.records] == [key(r) for r in b.records]


def test_kv_events_stop_reaching_the_index_once_nothing_is_routed_any_more(monkeypatch) -> None:
    """Fast driving feeds the prefix index until the last request is routed, not while the engines drain (nobody
    reads it then); the step driver feeds it to the end. Results are the same (the tests above)."""
    from llmdctl.plan import sim as plan_sim
    from router_lite.prefix.precise import PrecisePrefixIndex

    log: list[tuple[str, float]] = []
    real_apply, real_send = PrecisePrefixIndex.apply, plan_sim._PlanRun.send

    def apply(self, key, seq, batch):
        log.append(("kv", batch.ts))
        return real_apply(self, key, seq, batch)

    def send(self, i, now):
        log.append(("send", now))
        return real_send(self, i, now)

    monkeypatch.setattr(PrecisePrefixIndex, "apply", apply)
    monkeypatch.setattr(plan_sim._PlanRun, "send", send)
    cfg = PlanConfig([POOL], policy_configs(POOL.block_size)["precise"], name="precise", seed=3)
    reqs, arr = workload_and_arrivals(WORKLOAD, [Stage(12.0, 4.0)], seed=3)
    after = {}
    for drive in ("step", "fast"):
        log.clear()
        res = simulate(cfg, reqs, arr, drive=drive)
        last_send = max(t for kind, t in log if kind == "send")
        after[drive] = sum(1 for kind, t in log if kind == "kv" and t > last_send)
        assert any(kind == "kv" for kind, _ in log) and all(r.status == OK for r in res.records)
    assert after["step"] > 0 and after["fast"] == 0
