"""Wide expert parallelism on the virtual clock: data-parallel ranks that step in lockstep, routed per rank or
per pod.

An addition beside `llmdctl.plan.sim` (which runs independent pods): in wide EP (DeepSeek-R1, llm-d's
wide-ep-lws guide) every rank of the expert-parallel group joins each MoE layer's all-to-all, so the group
steps together and a step lasts as long as its slowest rank — one overloaded rank slows every rank. That is
why the router must see ranks. Two routing modes over the same engines:

- `rank_aware=True` (llm-d's DP-aware path): each rank is an endpoint with its own queue, KV usage and
  precise prefix index (its KV events keyed to the rank), and the real Scheduler picks a rank.
- `rank_aware=False` (hybrid load balancing): the router sees one endpoint per pod (queues summed, the pod's
  ranks' KV events merged under the pod), then the engine's internal DP balancer picks the rank with the
  lowest `4 x waiting + running` (vLLM's data-parallel load-balancing score), blind to prefixes.

Bounded by simulated seconds and wall seconds, like `simulate`.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from typing import Any

from kvtiers.kvevents import KVEventBatch
from llmdctl.bench.metrics import ERROR, RequestRecord
from llmdctl.bench.workloads import BenchRequest
from llmdctl.plan.router import PlannedRouter
from llmdctl.plan.sim import PlanResult, prompt_digests
from router_lite.director import Flow
from router_lite.failures import Failure, FailureKind
from router_lite.types import Endpoint, EndpointMetrics, LLMRequest
from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine
from sim_gpu.latency import LatencyModel


@dataclass
class WideEPConfig:
    """`pods` x `dp` ranks of `tp` GPUs each, one expert-parallel group over all of them."""

    router: dict[str, Any]
    rank_aware: bool = True
    pods: int = 2
    dp: int = 8
    tp: int = 1
    hardware: str = "H200"
    model: str = "DeepSeek-R1"
    network: str = "rdma-400g"
    block_size: int = 16
    num_gpu_blocks: int | None = None
    max_num_seqs: int = 128
    max_num_batched_tokens: int = 8192
    max_model_len: int = 16384
    lockstep: bool = True  # the EP group steps together (False: ranks step independently, for comparison)
    scrape_interval_s: float = 0.05
    seed: int = 0
    name: str = "wide-ep"

    @property
    def gpus(self) -> int:
        return self.pods * self.dp * self.tp


def _lb_rank(engines: list[SimEngine]) -> int:
    """vLLM's in-pod data-parallel balancer: the rank with the lowest 4 x waiting + running."""
    best, best_score = 0, None
    for r, eng in enumerate(engines):
        st = eng.stats()
        score = 4 * st.num_waiting + st.num_running
        if best_score is None or score < best_score:
            best, best_score = r, score
    return best


def simulate_wide_ep(
    cfg: WideEPConfig,
    requests: list[BenchRequest],
    arrivals: list[tuple[float, int]],
    *,
    max_sim_s: float = 3600.0,
    max_wall_s: float = 600.0,
    model_name: str = "sim-model",
) -> PlanResult:
    """Run `requests` (sent at `arrivals[i]`) through the router and the lockstep EP group."""
    t_wall0 = time.perf_counter()
    router = PlannedRouter.build(cfg.router, f"{cfg.name}: router", cfg.seed, cfg.block_size)
    clock, director = router.clock, router.director
    lat = LatencyModel.from_names(
        cfg.hardware, cfg.model, tp=cfg.tp, ep=cfg.pods * cfg.dp * cfg.tp, network=cfg.network
    )

    ranks: list[SimEngine] = []  # pod p rank r at index p * dp + r
    rank_eps: list[Endpoint] = []
    pod_eps: list[Endpoint] = []
    for p in range(cfg.pods):
        base = 8000 + p * cfg.dp
        pod_eps.append(Endpoint(f"10.0.0.{p + 1}", base, name=f"ep-{p}"))
        for r in range(cfg.dp):
            eng = SimEngine(
                EngineConfig(
                    block_size=cfg.block_size,
                    num_gpu_blocks=cfg.num_gpu_blocks,
                    max_num_seqs=cfg.max_num_seqs,
                    max_num_batched_tokens=cfg.max_num_batched_tokens,
                    max_model_len=cfg.max_model_len,
                    latency=lat,
                    seed=cfg.seed * 1000 + len(ranks),
                    data_parallel_rank=r,
                )
            )
            ranks.append(eng)
            rank_eps.append(Endpoint(f"10.0.0.{p + 1}", base + r, name=f"ep-{p}-r{r}", dp_rank=r))
    endpoints = rank_eps if cfg.rank_aware else pod_eps
    for ep in endpoints:
        ep.metrics = EndpointMetrics(
            block_size=cfg.block_size, num_gpu_blocks=ranks[0].num_gpu_blocks * (1 if cfg.rank_aware else cfg.dp)
        )
    ep_index = {ep.key: i for i, ep in enumerate(endpoints)}
    event_key = [rank_eps[i].key if cfg.rank_aware else pod_eps[i // cfg.dp].key for i in range(len(ranks))]
    event_seq = {k: 0 for k in event_key}

    def scrape(now: float) -> None:
        for i, ep in enumerate(endpoints):
            group = [ranks[i]] if cfg.rank_aware else ranks[i * cfg.dp : (i + 1) * cfg.dp]
            stats = [e.stats() for e in group]
            m = ep.metrics
            m.waiting_queue_size = sum(s.num_waiting for s in stats)
            m.running_requests_size = sum(s.num_running for s in stats)
            m.kv_cache_usage_percent = sum(s.kv_cache_usage for s in stats) / len(stats)
            m.updated_at = now

    n = min(len(requests), len(arrivals))
    heap: list[tuple[float, int, int, Any]] = [(arrivals[i][0], i, 0, i) for i in range(n)]
    heapq.heapify(heap)
    seq = n
    records: list[RequestRecord] = []
    live: dict[str, tuple[RequestRecord, Flow]] = {}
    busy = [False] * len(ranks)
    group_busy = False
    steps = 0
    last_scrape = -1e18
    truncated: str | None = None

    def kick(now: float) -> None:
        """Start the next step: the whole group at once (lockstep), or each idle rank with work."""
        nonlocal seq, steps, group_busy
        if cfg.lockstep:
            if group_busy:
                return
            results = [(i, e.step(now)) for i, e in enumerate(ranks) if e.has_unfinished()]
            if not results:
                return
            steps += 1
            group_busy = True
            seq += 1
            heapq.heappush(heap, (now + max(r.duration_s for _, r in results), seq, 1, results))
            return
        for i, e in enumerate(ranks):
            if not busy[i] and e.has_unfinished():
                res = e.step(now)
                steps += 1
                busy[i] = True
                seq += 1
                heapq.heappush(heap, (now + res.duration_s, seq, 1, [(i, res)]))

    while heap:
        if time.perf_counter() - t_wall0 > max_wall_s:
            truncated = f"stopped after {max_wall_s:g} wall seconds"
            break
        t, _, kind, payload = heapq.heappop(heap)
        if t > max_sim_s:
            truncated = f"stopped at {max_sim_s:g} simulated seconds"
            break
        clock.advance_to(t)
        if kind == 0:
            req = requests[payload]
            rec = RequestRecord(req.request_id, stage=arrivals[payload][1], sent=t, prompt_tokens=len(req.prompt))
            records.append(rec)
            if t - last_scrape >= cfg.scrape_interval_s:
                scrape(t)
                last_scrape = t
            llm = LLMRequest(req.request_id, model_name, prompt_token_ids=req.prompt, arrival=t)
            flow = router.route(llm, endpoints)
            if isinstance(flow, str):
                rec.status, rec.error, rec.finished = ERROR, flow, t
                continue
            i = ep_index[flow.target.key]
            rank = i if cfg.rank_aware else i * cfg.dp + _lb_rank(ranks[i * cfg.dp : (i + 1) * cfg.dp])
            rec.endpoint = rank_eps[rank].name
            try:
                ranks[rank].add_request(
                    EngineRequest(
                        req.request_id,
                        req.prompt,
                        req.max_tokens,
                        ignore_eos=True,
                        arrival_time=t,
                        prompt_block_hashes=prompt_digests(ranks[rank], llm),
                    )
                )
            except ValueError as exc:
                rec.status, rec.error, rec.finished = ERROR, str(exc), t
                director.dispatch_failed(flow, Failure(FailureKind.REJECTED, str(exc)))
                director.finished(flow)
                continue
            director.dispatched(flow)
            live[req.request_id] = (rec, flow)
            kick(t)
            continue
        if cfg.lockstep:
            group_busy = False
        for i, res in payload:
            busy[i] = False
            if res.kv_events:
                key = event_key[i]
                event_seq[key] += 1
                router.index.apply(key, event_seq[key], KVEventBatch(t, res.kv_events))
            for out in res.outputs:
                entry = live.get(out.request_id)
                if entry is None:
                    continue
                rec, flow = entry
                if out.first_token:
                    rec.first_token = t
                    rec.cached_tokens = out.num_cached_tokens
                    director.first_token(flow)
                if out.finished:
                    rec.finished = t
                    rec.output_tokens = out.num_output_tokens
                    del live[out.request_id]
                    director.finished(flow, out.num_output_tokens)
        kick(t)

    hits = sum(e.stats().prefix_cache_hits_tokens for e in ranks)
    queries = sum(e.stats().prefix_cache_queries_tokens for e in ranks)
    return PlanResult(
        cfg.name,
        records,
        clock.now(),
        time.perf_counter() - t_wall0,
        steps,
        hits / queries if queries else None,
        sum(e.stats().num_preemptions for e in ranks),
        cfg.gpus,
        truncated=truncated,
        scheduling_s=router.scheduling_s,
    )


__all__ = ["WideEPConfig", "simulate_wide_ep"]
