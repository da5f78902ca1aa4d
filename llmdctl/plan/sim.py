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
through kvtiers. E/P/D adds a leg before them, as the gateway runs it: a request the router gives an encoder pod
queues there for the encoder's roofline time (one pass at a time, as an encode pod runs), then the pod that
pulls the embeddings (prefill, else the target) waits their transfer and skips its own encoder.

Everything is bounded: simulated seconds (`max_sim_s`) and wall seconds (`max_wall_s`).
"""

from __future__ import annotations

import gc
import heapq
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvtiers.kvevents import KVEventBatch
from llmdctl.bench.metrics import ERROR, OK, TIMEOUT, RequestRecord
from llmdctl.bench.workloads import BenchRequest, SessionTracker
from llmdctl.plan.router import PlannedRouter
from router_lite.director import Flow
from router_lite.failures import Failure, FailureKind
from router_lite.registry import load_plugins
from router_lite.speeds import GROUP_LABEL as POOL_LABEL
from router_lite.types import BLOCK_DIGESTS, ROLE_LABEL, Endpoint, EndpointMetrics, LLMRequest
from sim_gpu.engine import EngineConfig, EngineRequest, RemotePrefill, SimEngine
from sim_gpu.latency import LatencyModel
from sim_gpu.multimodal import embedding_bytes, encode_time, transfer_time


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
    labels: dict[str, str] = field(default_factory=dict)  # the profile pool's labels, on each pod's endpoint

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
    utilization: dict[str, float] = field(default_factory=dict)  # role -> mean busy fraction of its pods
    encode_legs: int = 0  # requests whose encode leg ran on an encoder pod (E/P/D)
    encode_leg_s: float = 0.0  # their encode legs' seconds (queue + encoder), summed
    decisions: list[dict[str, Any]] = field(default_factory=list)  # the first `keep_decisions` decision records

    @property
    def speedup(self) -> float:
        """Simulated seconds per wall second."""
        return self.sim_s / self.wall_s if self.wall_s > 0 else float("inf")


class _Pod:
    __slots__ = ("name", "engine", "endpoint", "busy", "seq", "pool", "tiers", "next_t", "stalled", "busy_s", "encoder")

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
        self.busy_s = 0.0  # simulated seconds of engine steps (or encoder passes) that did work
        self.encoder = _EncoderQueue() if pool.role == "encode" else None


class _EncoderQueue:
    """An encode pod's encoder on the virtual clock: one pass at a time, first come first served (as
    `sim_gpu.pod.SimPod.encode` serves them live); its running / waiting passes are what the router scrapes."""

    __slots__ = ("free_at", "passes")

    def __init__(self) -> None:
        self.free_at = 0.0
        self.passes: deque[tuple[float, float]] = deque()  # (start, end) of passes not yet over at the last look

    def run(self, now: float, seconds: float) -> float:
        """Queue a pass of `seconds` arriving at `now`; returns when it ends."""
        start = max(now, self.free_at)
        self.free_at = start + seconds
        self.passes.append((start, self.free_at))
        return self.free_at

    def load(self, now: float) -> tuple[int, int]:
        """(running, waiting) passes at `now`."""
        while self.passes and self.passes[0][1] <= now:
            self.passes.popleft()
        running = sum(1 for s, _ in self.passes if s <= now)
        return running, len(self.passes) - running


def prompt_digests(engine: SimEngine, llm: LLMRequest) -> list[bytes] | None:
    """The router's digests of the prompt when the engine hashes with the same setting and extra keys (it then
    skips hashing the prompt again); None and the engine hashes it itself. Both planners hand them over."""
    dig = llm.state.get(BLOCK_DIGESTS)
    if dig is None or llm.cache_salt or llm.lora_name or engine.config.lora_name:
        return None
    h = engine.hasher
    return dig[1] if dig[0] == (h.block_size, h.algo, h.seed) else None


class _Live:
    """A request in flight: its record, its flow through the router, where it runs, what the runner must do
    when it finishes."""

    __slots__ = ("req", "rec", "flow", "pod", "prompt", "out", "phase", "decode_pod", "encoded")

    def __init__(self, req: BenchRequest, rec: RequestRecord, flow: Flow, prompt: list[int]) -> None:
        self.req = req
        self.rec = rec
        self.flow = flow
        self.pod: _Pod | None = None
        self.prompt = prompt
        self.out: list[int] | None = [] if req.session is not None else None
        self.phase = 0  # 0: single or decode leg; 1: P/D prefill leg
        self.decode_pod: _Pod | None = None
        self.encoded = False  # E/P/D: the embeddings came from an encoder pod (the engines skip the encoder)


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
                role="both" if pool.role == "encode" else pool.role,  # an encode pod's engine stays idle
            )
            eng = SimEngine(ecfg)
            labels = {**pool.labels, POOL_LABEL: pool.name}
            if pool.role != "both":
                labels[ROLE_LABEL] = pool.role
            ep = Endpoint("10.0.0.1", port, labels=labels, name=f"{pool.name}-{i}")
            ep.metrics = EndpointMetrics(block_size=pool.block_size, num_gpu_blocks=eng.num_gpu_blocks)
            pod = _Pod(f"{pool.name}-{i}", eng, ep, pool)
            if pool.cpu_blocks > 0:
                from kvtiers.engine_hook import attach_tiers
                from kvtiers.store import CostModel, MemoryTier, TieredStore

                block_bytes = int(lat.kv_bytes_per_token_per_gpu() * pool.block_size)
                store = TieredStore(
                    [MemoryTier("CPU", pool.cpu_blocks)],
                    CostModel(block_bytes=block_bytes, pcie_gbps=cfg.pcie_gbps),
                    block_size=pool.block_size,
                )
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
    stage_barrier_s: float | None = None,
    keep_decisions: int = 0,
) -> PlanResult:
    """Run `requests` (sent at `arrivals[i]` = (time, stage)) through the router and the engines.

    Follow-up turns of a session are sent no earlier than their predecessor's end + think time.
    `progress(sim_now, finished, total)` is called about every 2 simulated seconds. `max_in_flight` caps the
    requests open at once, as a benchmark client's worker pool does (inference-perf's `num_workers`): later
    arrivals wait on the client side and are sent (their TTFT clock starts) when a slot frees up.

    `stage_barrier_s` (inference-perf's stages, `llmdctl.bench.inference_perf`): `arrivals[i][0]` is then an
    offset from the opening of stage `arrivals[i][1]`; the first stage opens at 0 and each next one
    `stage_barrier_s` after the last request of the previous stage ended, so stages never overlap.

    `drive`: "step" runs every engine one `step()` at a time off the event heap; "fast" advances each engine
    with `fast_forward` up to the next arrival (same results: the router sees the same snapshots, KV events
    and finishes at the same simulated times); "auto" picks "fast" where no finish creates new work (no P/D
    hand-off, no session follow-up turns, no client cap) and "step" otherwise. Python's cyclic GC is tuned
    for the run (the workload is built and frozen; thresholds raised) and restored after.

    `keep_decisions`: how many decision records (the gateway's `/debug/decisions` objects, from the same
    director) the result keeps, in the order requests end."""
    if drive not in ("auto", "step", "fast"):
        raise ValueError(f"drive: expected auto, step or fast, got {drive!r}")
    if drive == "fast" and any(p.role == "encode" for p in cfg.pools):
        raise ValueError("drive: fast cannot run encode pools (their legs hand off between pods); use step or auto")
    frozen_before = gc.get_freeze_count()
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    # A young generation of 1M live containers: a run makes no cyclic garbage to speak of (measured: none in
    # llmd-73), while every collection walks what is young — each request's 7k-token lists, the pools' new
    # blocks — and at 50k it cost ~8% of the run's CPU for nothing. Memory stays bounded by the threshold.
    gc.set_threshold(1_000_000, 50, 100)
    try:
        run = _PlanRun(
            cfg,
            requests,
            arrivals,
            max_sim_s=max_sim_s,
            max_wall_s=max_wall_s,
            progress=progress,
            model_name=model_name,
            max_in_flight=max_in_flight,
            stage_barrier_s=stage_barrier_s,
            keep_decisions=keep_decisions,
        )
        if drive == "fast" or (drive == "auto" and _fast_ok(cfg, requests, max_in_flight)):
            run.drive_fast()
        run.drive_steps()
        return run.result()
    finally:
        gc.set_threshold(*thresholds)
        if frozen_before == 0:
            gc.unfreeze()


def _fast_ok(cfg: PlanConfig, requests: list[BenchRequest], max_in_flight: int | None) -> bool:
    """Whether no finish can create work (P/D hand-off, a session's next turn, a freed client slot)."""
    return (
        max_in_flight is None and all(p.role == "both" for p in cfg.pools) and all(r.session is None for r in requests)
    )


_ARRIVE, _STEP_END, _ENCODED = 0, 1, 2  # event heap kinds (step driving)
_KV, _FIRST, _FIN = 0, 1, 2  # pending deliveries (fast driving)


class _PlanRun:
    """One planned run: the router's director and scheduler, the pods' engines, the client, on one clock.

    Two drivers share the request flow (`send`, `submit`, the director's feedback): `drive_steps` runs each
    engine a step at a time off one event heap; `drive_fast` advances engines with `fast_forward` up to the next
    arrival and delivers what they produced (KV events, finishes) at its own simulated time.
    """

    def __init__(
        self,
        cfg: PlanConfig,
        requests: list[BenchRequest],
        arrivals: list[tuple[float, int]],
        *,
        max_sim_s: float,
        max_wall_s: float,
        progress: Callable[[float, int, int], None] | None,
        model_name: str,
        max_in_flight: int | None,
        stage_barrier_s: float | None = None,
        keep_decisions: int = 0,
    ) -> None:
        load_plugins()  # one-time per process (~45 ms): not the run's work, so before the clocks start
        self.t_wall0 = time.perf_counter()
        self.t_cpu0 = time.process_time()
        self.cfg, self.requests, self.arrivals = cfg, requests, list(arrivals)
        self.max_sim_s, self.max_wall_s, self.progress = max_sim_s, max_wall_s, progress
        self.model_name, self.max_in_flight = model_name, max_in_flight
        self.router = PlannedRouter.build(cfg.router, f"{cfg.name}: router", cfg.seed, cfg.pools[0].block_size)
        self.clock, self.index, self.director = self.router.clock, self.router.index, self.router.director
        self.pods = build_pods(cfg)
        self.by_key = {p.endpoint.key: p for p in self.pods}
        self.endpoints = [p.endpoint for p in self.pods]
        self.n = min(len(requests), len(arrivals))
        self.tracker = SessionTracker()
        self.records: list[RequestRecord] = []
        self.waiting_turns: dict[str, list[int]] = {}  # session -> indices of turns waiting for their predecessor
        # Stage barrier (inference-perf): only the first stage's requests are scheduled; each later stage opens
        # when the previous one has ended (see `_ended`).
        self.barrier = stage_barrier_s
        self.stage_members: dict[int, list[int]] = {}
        for i in range(self.n):
            self.stage_members.setdefault(arrivals[i][1], []).append(i)
        self.stage_order = sorted(self.stage_members) if stage_barrier_s is not None else []
        self.stage_left = {s: len(m) for s, m in self.stage_members.items()}
        self.stage_next = 1
        first = range(self.n) if stage_barrier_s is None or not self.n else self.stage_members[self.stage_order[0]]
        self.heap: list[tuple[float, int, int, Any]] = [(arrivals[i][0], i, _ARRIVE, i) for i in first]
        heapq.heapify(self.heap)  # (time, seq, kind, payload)
        self.seq = self.n
        self.pend: list[tuple[float, int, int, Any]] = []  # fast driving: (time, seq, kind, payload) to deliver
        self.live: dict[str, _Live] = {}
        self.client_queue: deque[int] = deque()  # arrivals waiting for a free client slot (max_in_flight)
        self.finished = 0
        self.steps = 0
        self.last_scrape = -1e18
        self.next_progress = 0.0
        self.truncated: str | None = None
        self.fast = False
        self.next_drain = 0.0  # fast driving: the horizon the last drain step advanced the engines to
        self.events_muted = False  # fast driving: the engines were told to stop making KV events (drain_step)
        self.keep_decisions = keep_decisions
        self.decisions: list[dict[str, Any]] = []
        self.encode_legs = 0
        self.encode_leg_s = 0.0

    # ---- the router's view ---------------------------------------------------------------------------
    def scrape(self, now: float) -> None:
        """Refresh every endpoint's metrics from its engine (at most once per scrape interval)."""
        for p in self.pods:
            st = p.engine.stats()
            m = p.endpoint.metrics
            if p.encoder is not None:  # an encode pod's load is its encoder queue (SimPod._encode_stats)
                m.running_requests_size, m.waiting_queue_size = p.encoder.load(now)
            else:
                m.waiting_queue_size = st.num_waiting
                m.running_requests_size = st.num_running
            m.kv_cache_usage_percent = st.kv_cache_usage
            m.updated_at = now

    # ---- the request flow ------------------------------------------------------------------------------
    def send(self, i: int, now: float) -> None:
        """The client sends request `i`: prepare, the director routes it, the engines take its leg(s)."""
        req = self.requests[i]
        prompt = self.tracker.prompt_of(req)
        rec = RequestRecord(req.request_id, stage=self.arrivals[i][1], sent=now, prompt_tokens=len(prompt))
        self.records.append(rec)
        interval = self.cfg.scrape_interval_s
        if now - self.last_scrape >= interval:
            self.scrape(now)
            self.last_scrape = now - (now % interval)
        llm = LLMRequest(
            req.request_id,
            self.model_name,
            prompt_token_ids=prompt,
            arrival=now,
            multimodal=len(req.mm_items),
            mm_items=list(req.mm_items),  # their blocks hash with the items' identifiers, as the pods' do
        )
        flow = self.router.route(llm, self.endpoints)
        if isinstance(flow, str):
            rec.status, rec.error, rec.finished = ERROR, flow, now
            self._ended(rec.stage, now)
            return
        lv = _Live(req, rec, flow, prompt)
        rec.endpoint = self.by_key[flow.target.key].name
        self.live[req.request_id] = lv
        if flow.encode is not None:
            self.encode(lv, now)
        else:
            self.legs(lv, now)

    def encode(self, lv: _Live, now: float) -> None:
        """E/P/D: the encode leg on the encoder pod the router chose, then the embeddings' transfer to the pod
        that pulls them (the prefill pod, else the target); the next legs go when they have landed."""
        flow = lv.flow
        assert flow.encode is not None
        enc = self.by_key[flow.encode.key]
        assert enc.encoder is not None, f"{enc.name} is not an encode pod"
        tokens = sum(n for _, _, n in lv.req.mm_items)
        seconds = encode_time(enc.engine.latency, tokens)
        end = enc.encoder.run(now, seconds)
        enc.busy_s += seconds
        puller = self.by_key[(flow.prefill or flow.target).key]
        landed = end + transfer_time(puller.engine.latency, embedding_bytes(enc.engine.latency, tokens))
        self.seq += 1
        heapq.heappush(self.heap, (landed, self.seq, _ENCODED, (lv, end - now)))

    def encoded(self, lv: _Live, leg_s: float, now: float) -> None:
        """The embeddings have landed: the director hears of the encode leg, the engines take the next legs."""
        self.director.encode_done(lv.flow, leg_s)
        self.encode_legs += 1
        self.encode_leg_s += leg_s
        lv.encoded = True
        self.legs(lv, now)

    def legs(self, lv: _Live, now: float) -> None:
        """The engine legs: the P/D prefill leg (the decode leg follows it), or the one leg on the target."""
        req, flow, prompt, llm = lv.req, lv.flow, lv.prompt, lv.flow.request
        decode = self.by_key[flow.target.key]
        mm = req.mm_items or None
        if flow.prefill is not None:
            pf = self.by_key[flow.prefill.key]
            lv.phase, lv.pod, lv.decode_pod = 1, pf, decode
            ereq = EngineRequest(
                req.request_id,
                prompt,
                1,
                ignore_eos=True,
                arrival_time=now,
                prefill_only=True,
                prompt_block_hashes=prompt_digests(pf.engine, llm),
                mm_items=mm,
                mm_encode=not lv.encoded,
            )
            ok = self.submit(lv, pf, now, ereq)
        else:
            lv.pod = decode
            ereq = EngineRequest(
                req.request_id,
                prompt,
                req.max_tokens,
                ignore_eos=True,
                arrival_time=now,
                prompt_block_hashes=prompt_digests(decode.engine, llm),
                mm_items=mm,
                mm_encode=not lv.encoded,
            )
            ok = self.submit(lv, decode, now, ereq)
            if ok:
                self.director.dispatched(flow)
        if not ok:
            del self.live[req.request_id]
            self._ended(lv.rec.stage, now)

    def submit(self, lv: _Live, pod: _Pod, now: float, ereq: EngineRequest) -> bool:
        """Hand a leg to an engine; a refusal (too long for it) ends the request, as vLLM's 400 would."""
        try:
            pod.engine.add_request(ereq)
        except ValueError as exc:
            lv.rec.status = ERROR
            lv.rec.error = str(exc)
            lv.rec.finished = now
            self.director.dispatch_failed(lv.flow, Failure(FailureKind.REJECTED, str(exc)))
            self.director.finished(lv.flow)
            self._decision(lv, 400)
            return False
        self.kick(pod, now)
        return True

    def prefill_finished(self, lv: _Live, out: Any, pod: _Pod, now: float) -> None:
        """P/D: the prefill leg is done; the decode leg pulls the KV (its engine prices the transfer)."""
        self.director.prefill_done(lv.flow)
        lv.phase, lv.pod = 0, lv.decode_pod
        rp = RemotePrefill(num_tokens=len(lv.prompt), remote_block_hashes=out.block_hashes, remote_tp=pod.pool.tp)
        ereq = EngineRequest(
            lv.req.request_id,
            lv.prompt,
            lv.req.max_tokens,
            ignore_eos=True,
            arrival_time=now,
            remote_prefill=rp,
            mm_items=lv.req.mm_items or None,  # the prompt's blocks hash as the prefill pod's did
            mm_encode=False,  # the KV arrives: nothing to encode
        )
        if self.submit(lv, lv.decode_pod, now, ereq):
            self.director.dispatched(lv.flow)
        else:
            self.live.pop(out.request_id, None)
            self._ended(lv.rec.stage, now)

    def request_finished(self, lv: _Live, out: Any, now: float) -> None:
        """The request's last token: its record closes, the router hears of it, waiting work may go."""
        lv.rec.finished = now
        lv.rec.output_tokens = out.num_output_tokens
        self.live.pop(out.request_id, None)
        self.director.finished(lv.flow, out.num_output_tokens)
        self._decision(lv, 200)
        if lv.req.session is not None:
            self.tracker.record(lv.req, lv.prompt, lv.out or [], now)
            if not SessionTracker.is_branch(lv.req):
                self.release_turns(lv.req.session, now)
        if self.client_queue:  # a client slot freed up: the oldest waiting arrival goes now
            self.seq += 1
            heapq.heappush(self.heap, (now, self.seq, _ARRIVE, self.client_queue.popleft()))
        self._ended(lv.rec.stage, now)

    def _decision(self, lv: _Live, status: int) -> None:
        """Keep the request's decision record (the first `keep_decisions` to end)."""
        if len(self.decisions) < self.keep_decisions:
            self.decisions.append(self.director.decision(lv.flow, status, lv.flow.target.key)())

    def _ended(self, stage: int, now: float) -> None:
        """A request is over (finished or failed); the last one of a stage opens the next stage (barrier)."""
        self.finished += 1
        if self.barrier is None:
            return
        self.stage_left[stage] -= 1
        if self.stage_left[stage] or self.stage_next >= len(self.stage_order):
            return
        s = self.stage_order[self.stage_next]
        self.stage_next += 1
        start = now + self.barrier
        for i in self.stage_members[s]:
            t = start + self.arrivals[i][0]
            self.arrivals[i] = (t, s)
            self.seq += 1
            heapq.heappush(self.heap, (t, self.seq, _ARRIVE, i))

    def release_turns(self, session: str, now: float) -> None:
        for j in self.waiting_turns.pop(session, []):
            t = max(now + self.requests[j].think_time_s, self.arrivals[j][0])
            self.seq += 1
            heapq.heappush(self.heap, (t, self.seq, _ARRIVE, j))

    # ---- engines -----------------------------------------------------------------------------------------
    def kick(self, pod: _Pod, now: float) -> None:
        """New work for `pod`: an idle engine starts a step now."""
        if self.fast:
            # An idle pod starts a step at once (as the step driver's kick); a busy one picks the request up
            # at its next step start.
            if pod.stalled or pod.next_t < now:
                pod.stalled = False
                self.run_ff(pod, now, math.inf, max_steps=1)
            return
        if pod.busy or not pod.engine.has_unfinished():
            return
        res = pod.engine.step(now)
        self.steps += 1
        if not res.idle:
            pod.busy_s += res.duration_s
        pod.busy = True
        self.seq += 1
        heapq.heappush(self.heap, (now + res.duration_s, self.seq, _STEP_END, (pod, res)))

    def run_ff(self, pod: _Pod, start: float, until: float, max_steps: int | None = None) -> None:
        """Run pod's steps that start before `until`; what they produce is delivered at its own simulated time."""
        # Records need first and last token times, not the tokens: lazy decodes' tokens go unreported.
        res = pod.engine.fast_forward(start, until, max_steps=max_steps, tokens=False)
        self.steps += res.num_steps
        pod.busy_s += sum(res.step_durations)  # no remote KV here: idle steps last 0 s
        pod.next_t, pod.stalled = res.end_s, res.stalled
        pend = self.pend
        if res.kv_events:
            times = res.kv_event_times
            evs = res.kv_events
            j = 0
            while j < len(evs):  # one batch per step, as the step driver applies them
                k = j + 1
                while k < len(evs) and times[k] == times[j]:
                    k += 1
                self.seq += 1
                heapq.heappush(pend, (times[j], self.seq, _KV, (pod, evs[j:k])))
                j = k
        live = self.live
        for o in res.outputs:
            lv = live.get(o.request_id)
            if lv is None:
                continue
            if o.first_token:
                lv.rec.first_token = o.token_times[0]
                lv.rec.cached_tokens = o.num_cached_tokens
                # The router learns of it at its own time, as the step driver tells it: told now (a step
                # started at an arrival runs ahead), its in-flight tokens would leave early and the TTFT the
                # router measures would be the time to the step's start.
                self.seq += 1
                heapq.heappush(pend, (o.token_times[0], self.seq, _FIRST, lv))
            if o.finished:
                self.seq += 1
                heapq.heappush(pend, (o.token_times[-1], self.seq, _FIN, (lv, o)))

    def advance(self, t: float) -> None:
        """Every step that starts before t runs: the engines' state is what the step driver has at t."""
        for pod in self.pods:
            if not pod.stalled and pod.next_t < t and pod.engine.has_unfinished():
                self.run_ff(pod, pod.next_t, t)

    def deliver(self, t: float, inclusive: bool = False, routing: bool = False) -> None:
        """KV events and finishes up to t (strictly before: at a tie the step driver routes the arrival first).
        `routing`: a request is routed at t. Once nothing can be routed any more, KV events no longer reach the
        prefix index: nobody reads it again (finishes still close their records)."""
        pend = self.pend
        feed = routing or self.routes_ahead()
        while pend and (pend[0][0] < t or (inclusive and pend[0][0] == t)):
            te, _, kind, payload = heapq.heappop(pend)
            self.clock.advance_to(te)
            if kind == _KV:
                if feed:
                    pod, evs = payload
                    pod.seq += 1
                    self.index.apply(pod.endpoint.key, pod.seq, KVEventBatch(te, evs))
            elif kind == _FIRST:
                self.director.first_token(payload.flow)
            else:
                lv, o = payload
                self.request_finished(lv, o, te)

    def routes_ahead(self) -> bool:
        """Whether a request may still be routed: an arrival queued, a client slot or a session turn waiting, a
        stage left to open. Once False it stays so (a finish only queues work through these)."""
        return bool(self.heap or self.client_queue or self.waiting_turns) or (
            self.barrier is not None and self.stage_next < len(self.stage_order)
        )

    def _pods_busy(self) -> bool:
        return bool(self.pend) or any(not p.stalled and p.engine.has_unfinished() for p in self.pods)

    def _report(self, now: float) -> bool:
        """Progress about every 2 simulated seconds; False once the wall-clock budget is spent."""
        if self.progress is not None and now >= self.next_progress:
            self.progress(now, self.finished, self.n)
            self.next_progress = now + 2.0
            if time.perf_counter() - self.t_wall0 > self.max_wall_s:
                self.truncated = f"stopped after {self.max_wall_s:g} wall seconds"
                return False
        return True

    # ---- drivers -------------------------------------------------------------------------------------
    def drive_fast(self) -> None:
        """Fast-forward driving (no finish creates work but a stage barrier): arrivals in order off the heap,
        engines advanced between them; with an empty heap the engines run on until the work drains (or a
        stage's last finish opens the next stage)."""
        self.fast = True
        heap, clock = self.heap, self.clock
        while self.truncated is None:
            if heap:
                t = heap[0][0]
                if t > self.max_sim_s:
                    self.truncated = f"stopped at {self.max_sim_s:g} simulated seconds"
                    break
                i = heapq.heappop(heap)[3]
                self.advance(t)
                self.deliver(t, routing=True)
                clock.advance_to(t)
                self.send(i, t)
                self._report(t)
                continue
            if not self._pods_busy():
                break
            self.drain_step()
        heap.clear()  # what was never sent stays unsent (the step driver must not pick it up)

    def drain_step(self) -> None:
        """Advance every engine two simulated seconds and deliver what they produced (no arrival is due).
        Once no request can be routed any more, the engines stop making KV events: none would be read."""
        if not self.events_muted and not self.routes_ahead():
            self.events_muted = True
            for p in self.pods:
                p.engine.mute_kv_events()
        h = self.clock.now() if self.next_drain < self.clock.now() else self.next_drain
        if h >= self.max_sim_s:
            self.deliver(self.max_sim_s, inclusive=True)
            if self._pods_busy() and not self.heap:
                self.truncated = f"stopped at {self.max_sim_s:g} simulated seconds"
            return
        h = min(h + 2.0, self.max_sim_s)
        self.next_drain = h
        self.advance(h)
        self.deliver(h)
        if self.progress is not None:
            self.progress(self.clock.now(), self.finished, self.n)
        if time.perf_counter() - self.t_wall0 > self.max_wall_s:
            self.truncated = f"stopped after {self.max_wall_s:g} wall seconds"

    def drive_steps(self) -> None:
        """Step driving: arrivals and step ends off one heap (P/D hand-offs, sessions, client caps)."""
        heap, clock = self.heap, self.clock
        while heap:
            t, _, kind, payload = heapq.heappop(heap)
            if t > self.max_sim_s:
                self.truncated = f"stopped at {self.max_sim_s:g} simulated seconds"
                break
            clock.advance_to(t)
            if kind == _ARRIVE:
                self.arrive(payload, t)
            elif kind == _ENCODED:
                self.encoded(*payload, t)
            else:
                self.step_ended(*payload, t)
            if not self._report(t):
                break

    def arrive(self, i: int, now: float) -> None:
        req = self.requests[i]
        if req.session is not None and req.turn > 0:
            ready = self.tracker.ready_at(req)
            if ready is None:
                self.waiting_turns.setdefault(req.session, []).append(i)
                return
            if ready > now:
                self.seq += 1
                heapq.heappush(self.heap, (ready, self.seq, _ARRIVE, i))
                return
        if self.max_in_flight is not None and len(self.live) >= self.max_in_flight:
            self.client_queue.append(i)
            return
        self.send(i, now)

    def step_ended(self, pod: _Pod, res: Any, now: float) -> None:
        pod.busy = False
        if res.kv_events:
            pod.seq += 1
            self.index.apply(pod.endpoint.key, pod.seq, KVEventBatch(now, res.kv_events))
        for out in res.outputs:
            lv = self.live.get(out.request_id)
            if lv is None:
                continue
            if lv.phase == 1:
                if out.finished:
                    self.prefill_finished(lv, out, pod, now)
                continue
            if out.first_token:
                lv.rec.first_token = now
                lv.rec.cached_tokens = out.num_cached_tokens
                self.director.first_token(lv.flow)
            if lv.out is not None:
                lv.out.extend(out.new_token_ids)
            if out.finished:
                self.request_finished(lv, out, now)
        if not (res.idle and res.duration_s == 0):
            self.kick(pod, now)
        # else: nothing was schedulable (no budget or blocks and nothing running); the next arrival or
        # finish on this pod kicks it again.

    # ---- outcome -------------------------------------------------------------------------------------
    def add_serving_costs(self) -> None:
        """The serving pod's costs outside its engine steps (request in + router proxying + token out: fitted on
        real vLLM traces, see sim_gpu.replay; zero in profiles that have none) added to each record's first
        token and end. Every request pays the same, so the engines' timelines only shift; open-loop results
        equal delaying each arrival at its engine."""
        pods = {p.name: p for p in self.pods}
        for rec in self.records:
            pod = pods.get(rec.endpoint or "")
            if pod is None or rec.first_token is None:
                continue
            c = pod.engine.latency.coefficients
            shift = c.request_in_s + c.router_s + c.token_out_s
            if shift:
                rec.first_token += shift
                if rec.finished is not None:
                    rec.finished += shift

    def result(self) -> PlanResult:
        if self.progress is not None:
            self.progress(self.clock.now(), self.finished, self.n)
        end = self.clock.now()
        for lv in self.live.values():  # engines that went idle holding requests, requests never finished
            lv.rec.status = TIMEOUT
            lv.rec.error = self.truncated or "did not finish"
        for j in self.client_queue:  # never sent: the client was still waiting for a slot
            self.records.append(
                RequestRecord(
                    self.requests[j].request_id,
                    stage=self.arrivals[j][1],
                    sent=self.arrivals[j][0],
                    status=TIMEOUT,
                    error=self.truncated or "never sent",
                    finished=end,
                )
            )
        for s in self.stage_order[self.stage_next :]:  # stages a stuck or truncated run never opened
            for j in self.stage_members[s]:
                self.records.append(
                    RequestRecord(
                        self.requests[j].request_id,
                        stage=s,
                        sent=end,
                        status=TIMEOUT,
                        error=self.truncated or "its stage never opened",
                        finished=end,
                    )
                )
        self.add_serving_costs()
        busy: dict[str, list[float]] = {}
        for p in self.pods:
            busy.setdefault(p.pool.role, []).append(min(1.0, p.busy_s / end) if end > 0 else 0.0)
        stats = [p.engine.stats() for p in self.pods]
        queries = sum(s.prefix_cache_queries_tokens for s in stats)
        hits = sum(s.prefix_cache_hits_tokens for s in stats)
        return PlanResult(
            name=self.cfg.name,
            records=self.records,
            sim_s=end,
            wall_s=time.perf_counter() - self.t_wall0,
            steps=self.steps,
            hit_rate=hits / queries if queries else None,
            preemptions=sum(s.num_preemptions for s in stats),
            gpus=self.cfg.gpus,
            truncated=self.truncated,
            scheduling_s=self.router.scheduling_s,
            cpu_s=time.process_time() - self.t_cpu0,
            utilization={role: sum(v) / len(v) for role, v in busy.items()},
            encode_legs=self.encode_legs,
            encode_leg_s=self.encode_leg_s,
            decisions=self.decisions,
        )


__all__ = ["OK", "PlanConfig", "PlanResult", "PoolPlan", "build_pods", "simulate"]
