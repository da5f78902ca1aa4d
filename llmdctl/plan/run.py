"""Running plans: one scenario under several policies, and sweeps of deployments with their Pareto front.

`run_policies` drives the same workload and arrivals through each policy (each gets fresh engines and a fresh
router), summarises with the bench metrics, and puts llm-d's published figures next to ours only when the
run is set up like the published one (full ladder, the same client model, the published routers); otherwise
it says why not. `sweep` varies replicas / hardware / scorer weights / P/D split / CPU tiers and keeps the
configurations no other beats on both cost (GPUs x price per GPU-hour, or GPU count) and TTFT p90 or
throughput.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmdctl.bench import inference_perf
from llmdctl.bench.inference_perf import ClientModel
from llmdctl.bench.load import Stage, poisson_arrivals, scale_stages
from llmdctl.bench.metrics import SLO, summarize
from llmdctl.bench.workloads import WorkloadSpec, generate
from llmdctl.plan.presets import Scenario, as_published, comparability, policy_configs
from llmdctl.plan.sim import PlanConfig, PlanResult, PoolPlan, simulate

Progress = Callable[[str, float, int, int], None]  # (run name, sim seconds, finished, total)


@dataclass
class PlanRun:
    """One simulated configuration: its result and its summary (bench metrics, as a dict)."""

    name: str
    result: PlanResult
    summary: dict[str, Any]
    cost: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        s = self.summary
        return {
            "name": self.name,
            "ttft_p90_s": s["ttft_s"]["p90"],
            "ttft_mean_s": s["ttft_s"]["mean"],
            "tpot_mean_s": s["tpot_s"]["mean"],
            "output_tok_s": s["output_tok_s"],
            "goodput_req_s": s["goodput_req_s"],
            "hit_rate": self.result.hit_rate,
            "requests": s["requests"],
            "ok": s["ok"],
            "preemptions": self.result.preemptions,
            "gpus": self.result.gpus,
            "cost": self.cost,
            "sim_s": round(self.result.sim_s, 3),
            "wall_s": round(self.result.wall_s, 3),
            "sim_to_wall": round(self.result.speedup, 2),
            "cpu_s": round(self.result.cpu_s, 3),
            "sim_to_cpu": round(self.result.sim_s / self.result.cpu_s, 2) if self.result.cpu_s > 0 else None,
            "truncated": self.result.truncated,
            **({"params": self.params} if self.params else {}),
        }


def workload_and_arrivals(
    spec: WorkloadSpec,
    stages: list[Stage],
    seed: int = 0,
    max_requests: int = 100_000,
    client: ClientModel | None = None,
):
    """Requests and their (time, stage) arrivals. Open loop: one Poisson process over the ladder, absolute
    times. inference-perf: its stages' request counts and send offsets (from each stage's opening), prompts in
    its order (`llmdctl.bench.inference_perf`)."""
    if client is not None and client.kind == "inference-perf":
        counts = inference_perf.stage_request_counts(stages)
        if sum(counts) > max_requests:
            raise ValueError(f"the ladder sends {sum(counts)} requests, more than the {max_requests} allowed")
        reqs = inference_perf.staged_requests(dataclasses.replace(spec, seed=seed), counts)
        return reqs, inference_perf.staged_arrivals(stages, seed)
    arrivals = poisson_arrivals(stages, seed, max_requests)
    spec = dataclasses.replace(
        spec, seed=seed, num_requests=len(arrivals) if spec.kind in ("shared-prefix", "random") else spec.num_requests
    )
    reqs = generate(spec)
    if len(reqs) < len(arrivals):
        arrivals = arrivals[: len(reqs)]
    return reqs, arrivals


def run_one(
    cfg: PlanConfig,
    reqs,
    arrivals,
    stages: list[Stage],
    slo: SLO,
    *,
    max_wall_s: float = 900.0,
    max_sim_s: float = 7200.0,
    progress: Progress | None = None,
    price: dict[str, float] | None = None,
    client: ClientModel | None = None,
) -> PlanRun:
    client = client or ClientModel("open-loop")
    cb = (lambda now, done, total: progress(cfg.name, now, done, total)) if progress else None
    res = simulate(
        cfg,
        reqs,
        arrivals,
        max_wall_s=max_wall_s,
        max_sim_s=max_sim_s,
        progress=cb,
        max_in_flight=client.max_in_flight,
        stage_barrier_s=client.stage_barrier_s,
    )
    summ = summarize(res.records, slo, stage_rates=[s.rate for s in stages], pod_hit_rate=res.hit_rate).to_dict()
    return PlanRun(cfg.name, res, summ, cost=cost_of(cfg, price))


def cost_of(cfg: PlanConfig, price: dict[str, float] | None = None) -> float:
    """GPU-hours per hour: GPUs x price per GPU-hour when `price` names the hardware, else the GPU count."""
    total = 0.0
    for p in cfg.pools:
        total += p.gpus * ((price or {}).get(p.hardware.lower(), 1.0) if price else 1.0)
    return total


def run_policies(
    scenario: Scenario,
    policies: list[str],
    *,
    time_scale: float = 1.0,
    rate_scale: float = 1.0,
    seed: int = 0,
    slo: SLO | None = None,
    max_wall_s: float = 900.0,
    progress: Progress | None = None,
    routers: dict[str, dict[str, Any]] | None = None,
    max_in_flight: int | None | str = "scenario",
    client: str = "scenario",
    max_sim_s: float = 7200.0,
) -> dict[str, Any]:
    """The scenario under each policy; returns {scenario, client, runs: {policy: row}, summaries, published,
    not_comparable}. `client`: "inference-perf", "open-loop" or "scenario" (the scenario's); `max_in_flight`:
    the client's cap on open requests ("scenario": the scenario's; None: no cap). `published` holds the
    scenario's figures only when the run is comparable with them; `not_comparable` says why it is not."""
    cl = ClientModel(
        scenario.client.kind if client == "scenario" else client,
        scenario.client.max_in_flight if max_in_flight == "scenario" else max_in_flight,  # type: ignore[arg-type]
    )
    cl.check()
    stages = scale_stages(scenario.stages, time_scale, rate_scale)
    reqs, arrivals = workload_and_arrivals(scenario.workload, stages, seed, client=cl)
    slo = slo or SLO()
    known = policy_configs(scenario.pools[0].block_size)
    runs: dict[str, PlanRun] = {}
    for pol in policies:
        router = (routers or {}).get(pol) or known.get(pol)
        if router is None:
            raise ValueError(f"policy: expected one of {', '.join(known)}, got {pol!r}")
        cfg = scenario.plan_config(pol, router, seed)
        runs[pol] = run_one(
            cfg, reqs, arrivals, stages, slo, max_wall_s=max_wall_s, max_sim_s=max_sim_s, progress=progress, client=cl
        )
    rows = {k: v.row() for k, v in runs.items()}
    if scenario.published:
        for k, v in runs.items():
            rows[k]["as_published"] = as_published(v.summary, v.result.records, scenario.warmup_stages)
    custom = any(p in (routers or {}) for p in policies if p in scenario.published)
    why = comparability(scenario, time_scale=time_scale, rate_scale=rate_scale, client=cl, custom_routers=custom)
    truncated = [k for k, v in runs.items() if v.result.truncated]
    if why is None and truncated:
        why = f"{', '.join(truncated)} stopped early"
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "time_scale": time_scale,
        "rate_scale": rate_scale,
        "requests": len(arrivals),
        "client": cl.kind,
        "client_description": cl.describe(),
        "max_in_flight": cl.max_in_flight,
        "stages": [dataclasses.asdict(s) for s in stages],
        "runs": rows,
        "summaries": {k: v.summary for k, v in runs.items()},
        "published": scenario.published if why is None else {},
        "not_comparable": why if scenario.published else None,  # nothing to compare with: nothing to say
    }


# ---- sweeps ------------------------------------------------------------------------------------------------


@dataclass
class SweepSpec:
    """What to vary. Each list's values combine with every other's (a grid); empty lists keep the base."""

    replicas: list[int] = field(default_factory=list)
    hardware: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    prefix_weights: list[float] = field(default_factory=list)  # precise-prefix-cache-scorer weight
    pd_splits: list[tuple[int, int]] = field(default_factory=list)  # (prefill pods, decode pods)
    cpu_blocks: list[int] = field(default_factory=list)


def _with_prefix_weight(router: dict[str, Any], weight: float) -> dict[str, Any]:
    r = copy.deepcopy(router)
    for prof in r.get("schedulingProfiles", []):
        for ref in prof.get("plugins", []):
            if ref.get("pluginRef") in ("precise-prefix-cache-scorer", "prefix-cache-scorer"):
                ref["weight"] = weight
    return r


def pd_router(block_size: int, non_cached_tokens: int = 256) -> dict[str, Any]:
    """llm-d's P/D config: prefill and decode profiles (role filters, precise prefix + queue), the
    prefix-based decider."""

    def prof(name: str, filt: str) -> dict[str, Any]:
        return {
            "name": name,
            "plugins": [
                {"pluginRef": filt},
                {"pluginRef": "precise-prefix-cache-scorer", "weight": 2},
                {"pluginRef": "queue-scorer", "weight": 1},
                {"pluginRef": "max-score-picker"},
            ],
        }

    return {
        "apiVersion": "llm-d.ai/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": [
            {"type": "prefill-filter"},
            {"type": "decode-filter"},
            {"type": "precise-prefix-cache-scorer", "parameters": {"tokenProcessorConfig": {"blockSize": block_size}}},
            {"type": "queue-scorer"},
            {"type": "max-score-picker"},
            {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": non_cached_tokens}},
            {
                "type": "disagg-profile-handler",
                "parameters": {
                    "decodeProfile": "decode",
                    "prefillProfile": "prefill",
                    "prefillDeciderPluginName": "prefix-based-pd-decider",
                },
            },
        ],
        "schedulingProfiles": [prof("prefill", "prefill-filter"), prof("decode", "decode-filter")],
    }


def sweep_configs(base: Scenario, spec: SweepSpec) -> list[tuple[str, PlanConfig, dict[str, Any]]]:
    """The grid of configurations, each with a readable name and its parameters."""
    pool0 = base.pools[0]
    bs = pool0.block_size
    routers = policy_configs(bs)
    out = []
    grid = itertools.product(
        spec.replicas or [pool0.replicas],
        spec.hardware or [pool0.hardware],
        spec.policies or ["precise"],
        spec.prefix_weights or [None],
        spec.cpu_blocks or [pool0.cpu_blocks],
    )
    for replicas, hw, pol, w, cpu in grid:
        params: dict[str, Any] = {"replicas": replicas, "hardware": hw, "policy": pol}
        if cpu:
            params["cpu_blocks"] = cpu
        router = routers[pol]
        if w is not None:
            router = _with_prefix_weight(router, w)
            params["prefix_weight"] = w
        pools = [dataclasses.replace(pool0, replicas=replicas, hardware=hw, cpu_blocks=cpu)]
        out.append(
            (
                "-".join(f"{k}={v}" for k, v in params.items()),
                PlanConfig(pools=pools, router=router, name="", network=base.network),
                params,
            )
        )
    # P/D splits are configurations of their own (their router is the P/D one), per hardware.
    for (p, d), hw in itertools.product(spec.pd_splits, spec.hardware or [pool0.hardware]):
        params = {"pd": f"{p}P{d}D", "replicas": p + d, "hardware": hw, "policy": "pd-precise"}
        pools = [
            dataclasses.replace(pool0, name="prefill", role="prefill", replicas=p, hardware=hw),
            dataclasses.replace(pool0, name="decode", role="decode", replicas=d, hardware=hw),
        ]
        out.append(
            (
                "-".join(f"{k}={v}" for k, v in params.items()),
                PlanConfig(pools=pools, router=pd_router(bs), name="", network=base.network),
                params,
            )
        )
    for name, cfg, _ in out:
        cfg.name = name
    return out


def pareto(rows: list[dict[str, Any]], metric: str, higher_is_better: bool) -> list[dict[str, Any]]:
    """Rows no other row beats on both cost (lower) and `metric`; sorted by cost."""

    def better(a: dict[str, Any], b: dict[str, Any]) -> bool:  # a dominates b
        va, vb = a.get(metric), b.get(metric)
        if va is None or vb is None:
            return False
        ok_metric = va >= vb if higher_is_better else va <= vb
        strictly = (a["cost"] < b["cost"]) or (va > vb if higher_is_better else va < vb)
        return a["cost"] <= b["cost"] and ok_metric and strictly

    front = [r for r in rows if r.get(metric) is not None and not any(better(o, r) for o in rows if o is not r)]
    seen: set[tuple[Any, Any]] = set()
    unique = []
    for r in sorted(front, key=lambda r: (r["cost"], r.get(metric) or 0)):
        key = (r["cost"], r.get(metric))
        if key not in seen:  # ties: keep the first configuration
            seen.add(key)
            unique.append(r)
    return unique


def sweep(
    base: Scenario,
    spec: SweepSpec,
    *,
    time_scale: float = 1.0,
    rate_scale: float = 1.0,
    seed: int = 0,
    slo: SLO | None = None,
    max_wall_s: float = 900.0,
    price: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every configuration of the grid on the same workload; rows plus the Pareto fronts."""
    stages = scale_stages(base.stages, time_scale, rate_scale)
    reqs, arrivals = workload_and_arrivals(base.workload, stages, seed, client=base.client)
    slo = slo or SLO()
    rows = []
    for name, cfg, params in sweep_configs(base, spec):
        run = run_one(
            cfg,
            reqs,
            arrivals,
            stages,
            slo,
            max_wall_s=max_wall_s,
            progress=progress,
            price=price,
            client=base.client,
        )
        run.params = params
        rows.append(run.row())
    return {
        "scenario": base.name,
        "requests": len(arrivals),
        "rows": rows,
        "pareto_ttft_p90": pareto(rows, "ttft_p90_s", False),
        "pareto_throughput": pareto(rows, "output_tok_s", True),
    }


__all__ = [
    "PlanRun",
    "SweepSpec",
    "pareto",
    "pd_router",
    "run_one",
    "run_policies",
    "sweep",
    "sweep_configs",
    "workload_and_arrivals",
    "PoolPlan",
]
