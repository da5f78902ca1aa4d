"""The offline planner's core: the real router Scheduler and N SimEngines on one virtual clock.

A discrete-event loop, no HTTP and no sleeping: arrivals and engine step completions sit in one heap ordered
by simulated time. A request is scheduled by `router_lite.scheduler.Scheduler` (the same plugins, indexes and
config as the live router) against endpoints whose metrics are snapshots of `engine.stats()` refreshed every
`scrape_interval_s` (the staleness the live data layer has), and whose precise prefix index is fed with the
engines' own KV events. Two drivers, same results: "step" runs each engine one step at a time (a step planned
at `t` lands at `t + duration`, when its tokens and events are delivered); "fast" advances every pod with
`SimEngine.fast_forward` up to the next arrival and delivers the KV events and finishes at their own simulated
times (2-3x less CPU; used where no finish creates new work). P/D goes in two steps (prefill_only on a
prefill engine, then a remote_prefill on the decode engine that pays the KV transfer); CPU tiers attach
through kvtiers.

Everything is bounded: simulated seconds (`max_sim_s`) and wall seconds (`max_wall_s`).
"""

from __future__ import annotations

import gc
import heapq
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvtiers.hashing import DEFAULT_SEED
from kvtiers.kvevents import KVEventBatch
from llmdctl.bench.metrics import ERROR, OK, TIMEOUT, RequestRecord
from llmdctl.bench.workloads import BenchRequest, SessionTracker
from router_lite.config import SchedulerConfig, load_config
from router_lite.prefix import PrecisePrefixIndex, PrefixIndexes
from router_lite.scheduler import Scheduler
from router_lite.director import Director, Flow, NoEndpoint, Shed
from router_lite.failures import Failure, FailureKind
from router_lite.tokenization import request_preparer
from router_lite.types import BLOCK_DIGESTS, ROLE_LABEL, Endpoint, EndpointMetrics, LLMRequest
from sim_gpu.clock import VirtualClock
from sim_gpu.engine import EngineConfig, EngineRequest, RemotePrefill, SimEngine
from sim_gpu.latency import LatencyModel


@dataclass
class PoolPlan:
    """One pool of identical simulated pods."""

    name: str = "pod"
    role: str = "both"
    replicas: int = 4
    hardware: str = "H100"
    model: str = "Llama-3.1-8B"
    tp: int = 1
    ep: int = 1  # expert-parallel group size in GPUs (MoE, wide EP); each replica is one data-parallel rank
    block_size: int = 16
    num_gpu_blocks: int | None = None
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 32768
    cpu_blocks: int = 0  # CPU KV tier per pod (0: none)

    @property
    def gpus(self) -> int:
        return self.replicas * self.tp


@dataclass
class PlanConfig:
    """A deployment to simulate: pools, the router's EndpointPickerConfig, the network for P/D."""

    pools: list[PoolPlan]
    router: dict[str, Any]
    name: str = "plan"
    network: str = "rdma-200g"
    scrape_interval_s: float = 0.05  # metrics staleness, as the live data layer's refresh interval
    pcie_gbps: float = 32.0
    seed: int = 0

    @property
    def gpus(self) -> int:
        return sum(p.gpus for p in self.pools)


@dataclass
class PlanResult:
    name: str
    records: list[RequestRecord]
    sim_s: float
    wall_s: float
    steps: int
    hit_rate: float | None
    preemptions: int
    gpus: int
    truncated: str | None = None  # why the run stopped early, if it did
    scheduling_s: float = 0.0  # wall seconds spent in the router's scheduler
    cpu_s: float = 0.0  # CPU seconds of this process (wall time on a shared machine overstates the cost)

    @property
    def speedup(self) -> float:
        """Simulated seconds per wall second."""
        return self.sim_s / self.wall_s if self.wall_s > 0 else float("inf")


class _Pod:
    __slots__ = ("name", "engine", "endpoint", "busy", "seq", "pool", "tiers", "next_t", "stalled")

    def __init__(self, name: str, engine: SimEngine, endpoint: Endpoint, pool: PoolPlan) -> None:
        self.name = name
        self.engine = engine
        self.endpoint = endpoint
        self.busy = False  # a step (or a timed wait) is in flight
        self.seq = 0
        self.pool = pool
        self.tiers: Any = None
        self.next_t = 0.0  # fast-forward driving: when the engine's next (not yet run) step starts
        self.stalled = False  # fast-forward driving: stopped on an idle 0 s step; the next submit restarts it


def _prompt_digests(pod: _Pod, llm: LLMRequest) -> list[bytes] | None:
    """The router's digests of the prompt when the pod's engine hashes with the same setting and extra keys
    (it then skips hashing the prompt again); None and the engine hashes it itself."""
    dig = llm.state.get(BLOCK_DIGESTS)
    if dig is None or llm.cache_salt or llm.lora_name or pod.engine.config.lora_name:
        return None
    h = pod.engine.hasher
    return dig[1] if dig[0] == (h.block_size, h.algo, h.seed) else None


class _Live:
    """A request in flight: its record, its flow through the router, where it runs, what the runner must do
    when it finishes."""

    __slots__ = ("req", "rec", "flow", "pod", "prompt", "out", "phase", "decode_pod")

    def __init__(self, req: BenchRequest, rec: RequestRecord, flow: Flow, prompt: list[int]) -> None:
        self.req = req
        self.rec = rec
        self.flow = flow
        self.pod: _Pod | None = None
        self.prompt = prompt
        self.out: list[int] | None = [] if req.session is not None else None
        self.phase = 0  # 0: single or decode leg; 1: P/D prefill leg
        self.decode_pod: _Pod | None = None


def _latency(pool: PoolPlan, network: str) -> LatencyModel:
    return LatencyModel.from_names(pool.hardware, pool.model, tp=pool.tp, ep=pool.ep, network=network)


def build_pods(cfg: PlanConfig) -> list[_Pod]:
    pods: list[_Pod] = []
    port = 8100
    for pool in cfg.pools:
        lat = _latency(pool, cfg.network)
        for i in range(pool.replicas):
            ecfg = EngineConfig(
                block_size=pool.block_size,
                num_gpu_blocks=pool.num_gpu_blocks,
                gpu_memory_utilization=pool.gpu_memory_utilization,
                max_num_seqs=pool.max_num_seqs,
                max_num_batched_tokens=pool.max_num_batched_tokens,
                max_model_len=pool.max_model_len,
                latency=lat,
                seed=cfg.seed * 1000 + len(pods),
                role=pool.role,
            )
            eng = SimEngine(ecfg)
            labels = {ROLE_LABEL: pool.role} if pool.role != "both" else {}
            ep = Endpoint("10.0.0.1", port, labels=labels, name=f"{pool.name}-{i}")
            ep.metrics = EndpointMetrics(block_size=pool.block_size, num_gpu_blocks=eng.num_gpu_blocks)
            pod = _Pod(f"{pool.name}-{i}", eng, ep, pool)
            if pool.cpu_blocks > 0:
                from kvtiers.engine_hook import attach_tiers
                from kvtiers.store import CostModel, MemoryTier, TieredStore

                block_bytes = int(lat.kv_bytes_per_token_per_gpu() * pool.block_size)
                store = TieredStore([MemoryTier("CPU", pool.cpu_blocks)], CostModel(block_bytes=block_bytes, pcie_gbps=cfg.pcie_gbps), block_size=pool.block_size)
                pod.tiers = attach_tiers(eng, store)
            pods.append(pod)
            port += 1
    return pods


def simulate(
    cfg: PlanConfig,
    requests: list[BenchRequest],
    arrivals: list[tuple[float, int]],
    *,
    max_sim_s: float = 7200.0,
    max_wall_s: float = 900.0,
    progress: Callable[[float, int, int], None] | None = None,
    model_name: str = "sim-model",
    max_in_flight: int | None = None,
    drive: str = "auto",
) -> PlanResult:
    """Run `requests` (sent at `arrivals[i]` = (time, stage)) through the router and the engines.

    Follow-up turns of a session are sent no earlier than their predecessor's end + think time.
    `progress(sim_now, finished, total)` is called about every 2 simulated seconds. `max_in_flight` caps the
    requests open at once, as a benchmark client's worker pool does (inference-perf's `num_workers`): later
    arrivals wait on the client side and are sent (their TTFT clock starts) when a slot frees up.

    `drive`: "step" runs every engine one `step()` at a time off the event heap; "fast" advances each engine
    with `fast_forward` up to the next arrival (same results: the router sees the same snapshots, KV events
    and finishes at the same simulated times); "auto" picks "fast" where no finish creates new work (no P/D
    hand-off, no session follow-up turns, no client cap) and "step" otherwise. Python's cyclic GC is tuned
    for the run (the workload is built and frozen; thresholds raised) and restored after."""
    if drive not in ("auto", "step", "fast"):
        raise ValueError(f"drive: expected auto, step or fast, got {drive!r}")
    frozen_before = gc.get_freeze_count()
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        return _simulate(cfg, requests, arrivals, max_sim_s=max_sim_s, max_wall_s=max_wall_s, progress=progress,
                         model_name=model_name, max_in_flight=max_in_flight, drive=drive)
    finally:
        gc.set_threshold(*thresholds)
        if frozen_before == 0:
            gc.unfreeze()


def _fast_ok(cfg: PlanConfig, requests: list[BenchRequest], max_in_flight: int | None) -> bool:
    """Whether no finish can create work (P/D hand-off, a session's next turn, a freed client slot)."""
    return (max_in_flight is None and all(p.role == "both" for p in cfg.pools)
            and all(r.session is None for r in requests))


def _simulate(
    cfg: PlanConfig,
    requests: list[BenchRequest],
    arrivals: list[tuple[float, int]],
    *,
    max_sim_s: float = 7200.0,
    max_wall_s: float = 900.0,
    progress: Callable[[float, int, int], None] | None = None,
    model_name: str = "sim-model",
    max_in_flight: int | None = None,
    drive: str = "auto",
) -> PlanResult:
    t_wall0 = time.perf_counter()
    t_cpu0 = time.process_time()
    sched_cfg: SchedulerConfig = load_config(cfg.router, origin=f"{cfg.name}: router")
    clock = VirtualClock()
    now_fn = clock.now
    indexes = PrefixIndexes(precise=PrecisePrefixIndex(clock=now_fn))
    scheduler = Scheduler(sched_cfg, index=indexes, rng=random.Random(cfg.seed), clock=now_fn)
    director = Director(lambda: scheduler, max_retries=0)  # the gateway's flow; an engine refusal is final
    pool0 = cfg.pools[0]  # the engines hash with their defaults (EngineConfig) at the pools' block size
    prepare = request_preparer(scheduler.needs, (pool0.block_size, "sha256", DEFAULT_SEED))

    pods = build_pods(cfg)
    by_key = {p.endpoint.key: p for p in pods}
    endpoints = [p.endpoint for p in pods]
    index = indexes.precise
    n = min(len(requests), len(arrivals))
    tracker = SessionTracker()
    records: list[RequestRecord] = []
    waiting_turns: dict[str, list[int]] = {}  # session -> indices of turns waiting for their predecessor
    heap: list[tuple[float, int, int, Any]] = []  # (time, seq, kind, payload)
    seq = 0
    ARRIVE, STEP_END = 0, 1
    for i in range(n):
        heap.append((arrivals[i][0], i, ARRIVE, i))
    heapq.heapify(heap)
    seq = n
    live: dict[str, _Live] = {}
    client_queue: deque[int] = deque()  # arrivals waiting for a free client slot (max_in_flight)
    finished = 0
    steps = 0
    sched_wall = 0.0
    last_scrape = -1e18
    interval = cfg.scrape_interval_s
    next_progress = 0.0
    truncated: str | None = None
    def scrape(now: float) -> None:
        for p in pods:
            st = p.engine.stats()
            m = p.endpoint.metrics
            m.waiting_queue_size = st.num_waiting
            m.running_requests_size = st.num_running
            m.kv_cache_usage_percent = st.kv_cache_usage
            m.updated_at = now

    fast = drive == "fast" or (drive == "auto" and _fast_ok(cfg, requests, max_in_flight))
    pend: list[tuple[float, int, int, Any]] = []  # fast driving: (time, seq, kind, payload) not yet delivered
    KV, FIN = 0, 1

    def run_ff(pod: _Pod, start: float, until: float, max_steps: int | None = None) -> None:
        # Run pod's steps that start before `until`; what they produce is delivered at its own simulated time.
        nonlocal seq, steps
        res = pod.engine.fast_forward(start, until, max_steps=max_steps)
        steps += res.num_steps
        pod.next_t, pod.stalled = res.end_s, res.stalled
        if res.kv_events:
            times = res.kv_event_times
            evs = res.kv_events
            j = 0
            while j < len(evs):  # one batch per step, as the step driver applies them
                k = j + 1
                while k < len(evs) and times[k] == times[j]:
                    k += 1
                seq += 1
                heapq.heappush(pend, (times[j], seq, KV, (pod, evs[j:k])))
                j = k
        for o in res.outputs:
            lv = live.get(o.request_id)
            if lv is None:
                continue
            if o.first_token:
                lv.rec.first_token = o.token_times[0]
                lv.rec.cached_tokens = o.num_cached_tokens
                director.first_token(lv.flow)
            if o.finished:
                seq += 1
                heapq.heappush(pend, (o.token_times[-1], seq, FIN, (lv, o)))

    def advance(t: float) -> None:
        # Every step that starts before t runs: the engines' state is what the step driver has at t.
        for pod in pods:
            if not pod.stalled and pod.next_t < t and pod.engine.has_unfinished():
                run_ff(pod, pod.next_t, t)

    def deliver(t: float, inclusive: bool = False) -> None:
        # KV events and finishes up to t (strictly before: at a tie the step driver routes the arrival first).
        nonlocal finished
        while pend and (pend[0][0] < t or (inclusive and pend[0][0] == t)):
            te, _, kind, payload = heapq.heappop(pend)
            clock.advance_to(te)
            if kind == KV:
                pod, evs = payload
                pod.seq += 1
                index.apply(pod.endpoint.key, pod.seq, KVEventBatch(te, evs))
            else:
                lv, o = payload
                lv.rec.finished = te
                lv.rec.output_tokens = o.num_output_tokens
                live.pop(o.request_id, None)
                finished += 1
                director.finished(lv.flow, o.num_output_tokens)

    def kick(pod: _Pod, now: float) -> None:
        nonlocal seq, steps
        if fast:
            # An idle pod starts a step at once (as the step driver's kick); a busy one picks the request up
            # at its next step start.
            if pod.stalled or pod.next_t < now:
                pod.stalled = False
                run_ff(pod, now, math.inf, max_steps=1)
            return
        if pod.busy or not pod.engine.has_unfinished():
            return
        res = pod.engine.step(now)
        steps += 1
        pod.busy = True
        seq += 1
        heapq.heappush(heap, (now + res.duration_s, seq, STEP_END, (pod, res)))

    def submit(lv: _Live, pod: _Pod, now: float, ereq: EngineRequest) -> bool:
        """Hand a leg to an engine; a refusal (too long for it) ends the request, as vLLM's 400 would."""
        try:
            pod.engine.add_request(ereq)
        except ValueError as exc:
            lv.rec.status = ERROR
            lv.rec.error = str(exc)
            lv.rec.finished = now
            director.dispatch_failed(lv.flow, Failure(FailureKind.REJECTED, str(exc)))
            director.finished(lv.flow)
            return False
        kick(pod, now)
        return True

    def send(i: int, now: float) -> None:
        nonlocal last_scrape, sched_wall, finished
        req = requests[i]
        prompt = tracker.prompt_of(req)
        rec = RequestRecord(req.request_id, stage=arrivals[i][1], sent=now, prompt_tokens=len(prompt))
        records.append(rec)
        if now - last_scrape >= interval:
            scrape(now)
            last_scrape = now - (now % interval)
        llm = LLMRequest(req.request_id, model_name, prompt_token_ids=prompt, arrival=now)
        t0 = time.perf_counter()
        prepare(llm)
        try:
            flow = director.start(llm, endpoints)
        except (NoEndpoint, Shed) as exc:
            rec.status, rec.error, rec.finished = ERROR, str(exc), now
            finished += 1
            return
        finally:
            sched_wall += time.perf_counter() - t0
        lv = _Live(req, rec, flow, prompt)
        decode = by_key[flow.target.key]
        rec.endpoint = decode.name
        live[req.request_id] = lv
        if flow.prefill is not None:
            pf = by_key[flow.prefill.key]
            lv.phase, lv.pod, lv.decode_pod = 1, pf, decode
            ok = submit(lv, pf, now, EngineRequest(req.request_id, prompt, 1, ignore_eos=True, arrival_time=now, prefill_only=True,
                                                   prompt_block_hashes=_prompt_digests(pf, llm)))
        else:
            lv.pod = decode
            ok = submit(lv, decode, now, EngineRequest(req.request_id, prompt, req.max_tokens, ignore_eos=True, arrival_time=now,
                                                       prompt_block_hashes=_prompt_digests(decode, llm)))
            if ok:
                director.dispatched(flow)
        if not ok:
            del live[req.request_id]
            finished += 1

    def release_turns(session: str, now: float) -> None:
        nonlocal seq
        for j in waiting_turns.pop(session, []):
            t = max(now + requests[j].think_time_s, arrivals[j][0])
            seq += 1
            heapq.heappush(heap, (t, seq, ARRIVE, j))

    if fast:
        heap.clear()
        for i in sorted(range(n), key=lambda i: (arrivals[i][0], i)):
            t = arrivals[i][0]
            if t > max_sim_s:
                truncated = f"stopped at {max_sim_s:g} simulated seconds"
                break
            advance(t)
            deliver(t)
            clock.advance_to(t)
            send(i, t)
            if progress is not None and t >= next_progress:
                progress(t, finished, n)
                next_progress = t + 2.0
                if time.perf_counter() - t_wall0 > max_wall_s:
                    truncated = f"stopped after {max_wall_s:g} wall seconds"
                    break
        h = clock.now()
        while truncated is None and (pend or any(not p.stalled and p.engine.has_unfinished() for p in pods)):
            if h >= max_sim_s:
                deliver(max_sim_s, inclusive=True)
                if pend or any(not p.stalled and p.engine.has_unfinished() for p in pods):
                    truncated = f"stopped at {max_sim_s:g} simulated seconds"
                break
            h = min(h + 2.0, max_sim_s)
            advance(h)
            deliver(h)
            if progress is not None:
                progress(clock.now(), finished, n)
            if time.perf_counter() - t_wall0 > max_wall_s:
                truncated = f"stopped after {max_wall_s:g} wall seconds"
    while heap:
        t, _, kind, payload = heapq.heappop(heap)
        if t > max_sim_s:
            truncated = f"stopped at {max_sim_s:g} simulated seconds"
            break
        clock.advance_to(t)
        now = t
        if kind == ARRIVE:
            req = requests[payload]
            if req.session is not None and req.turn > 0:
                ready = tracker.ready_at(req)
                if ready is None:
                    waiting_turns.setdefault(req.session, []).append(payload)
                    continue
                if ready > now:
                    seq += 1
                    heapq.heappush(heap, (ready, seq, ARRIVE, payload))
                    continue
            if max_in_flight is not None and len(live) >= max_in_flight:
                client_queue.append(payload)
                continue
            send(payload, now)
        else:
            pod, res = payload
            pod.busy = False
            if res.kv_events:
                pod.seq += 1
                index.apply(pod.endpoint.key, pod.seq, KVEventBatch(now, res.kv_events))
            for out in res.outputs:
                lv = live.get(out.request_id)
                if lv is None:
                    continue
                if lv.phase == 1:
                    if out.finished:  # prefill done: the decode leg pulls the KV (engine prices the transfer)
                        director.prefill_done(lv.flow)
                        lv.phase, lv.pod = 0, lv.decode_pod
                        rp = RemotePrefill(num_tokens=len(lv.prompt), remote_block_hashes=out.block_hashes, remote_tp=pod.pool.tp)
                        ereq = EngineRequest(lv.req.request_id, lv.prompt, lv.req.max_tokens, ignore_eos=True, arrival_time=now, remote_prefill=rp)
                        if submit(lv, lv.decode_pod, now, ereq):
                            director.dispatched(lv.flow)
                        else:
                            live.pop(out.request_id, None)
                            finished += 1
                    continue
                rec = lv.rec
                if out.first_token:
                    rec.first_token = now
                    rec.cached_tokens = out.num_cached_tokens
                    director.first_token(lv.flow)
                if lv.out is not None:
                    lv.out.extend(out.new_token_ids)
                if out.finished:
                    rec.finished = now
                    rec.output_tokens = out.num_output_tokens
                    del live[out.request_id]
                    finished += 1
                    director.finished(lv.flow, out.num_output_tokens)
                    if lv.req.session is not None:
                        tracker.record(lv.req, lv.prompt, lv.out or [], now)
                        if not SessionTracker.is_branch(lv.req):
                            release_turns(lv.req.session, now)
                    if client_queue:  # a client slot freed up: the oldest waiting arrival goes now
                        seq += 1
                        heapq.heappush(heap, (now, seq, ARRIVE, client_queue.popleft()))
            if not (res.idle and res.duration_s == 0):
                kick(pod, now)
            # else: nothing was schedulable (no budget or blocks and nothing running); the next arrival or
            # finish on this pod kicks it again.
        if progress is not None and now >= next_progress:
            progress(now, finished, n)
            next_progress = now + 2.0
            if time.perf_counter() - t_wall0 > max_wall_s:
                truncated = f"stopped after {max_wall_s:g} wall seconds"
                break
    if progress is not None:
        progress(clock.now(), finished, n)
    # Engines that went idle while holding requests (a stuck waiting queue) and requests never finished.
    end = clock.now()
    for lv in live.values():
        lv.rec.status = TIMEOUT
        lv.rec.error = truncated or "did not finish"
    for j in client_queue:  # never sent: the client was still waiting for a slot
        records.append(RequestRecord(requests[j].request_id, stage=arrivals[j][1], sent=arrivals[j][0], status=TIMEOUT,
                                     error=truncated or "never sent", finished=clock.now()))
    queries = sum(p.engine.stats().prefix_cache_queries_tokens for p in pods)
    hits = sum(p.engine.stats().prefix_cache_hits_tokens for p in pods)
    return PlanResult(
        name=cfg.name,
        records=records,
        sim_s=end,
        wall_s=time.perf_counter() - t_wall0,
        steps=steps,
        hit_rate=hits / queries if queries else None,
        preemptions=sum(p.engine.stats().num_preemptions for p in pods),
        gpus=cfg.gpus,
        truncated=truncated,
        scheduling_s=sched_wall,
        cpu_s=time.process_time() - t_cpu0,
    )


__all__ = ["OK", "PlanConfig", "PlanResult", "PoolPlan", "build_pods", "simulate"]
