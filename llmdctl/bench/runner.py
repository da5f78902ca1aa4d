"""`llmdctl bench`'s core: send a workload at a load shape to an OpenAI endpoint and summarise; compare
router configurations on the same pods by switching the router's config live between runs.

Bounded everywhere: at most `load.max_requests` requests, `max_in_flight` at once, each at most
`timeout_s`, the whole run at most `max_duration_s` (what is still running then counts as timed out).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from llmdctl.bench.client import MODES, send
from llmdctl.bench.load import LoadSpec, schedule
from llmdctl.bench.metrics import SLO, TIMEOUT, RequestRecord, hit_rate_delta, ratios, summarize
from llmdctl.bench.workloads import BenchRequest, SessionTracker, WorkloadSpec, generate
from llmdctl.profile import load_shipped_profile

Progress = Callable[[int, int], None]  # (finished, total)


@dataclass
class BenchConfig:
    url: str = "http://127.0.0.1:8000"
    model: str = "sim-model"
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    load: LoadSpec = field(default_factory=LoadSpec)
    mode: str = "tokens"
    slo: SLO = field(default_factory=SLO)
    timeout_s: float = 120.0
    max_duration_s: float = 600.0
    max_in_flight: int = 512
    keep_records: bool = False
    pods: list[str] | None = None  # pod base URLs for hit rates when the target is not this project's router
    admin_key: str | None = None  # for the router's admin API; None: see _admin_headers

    def check(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"--url: expected http(s)://HOST:PORT, got {self.url!r}")
        if self.mode not in MODES:
            raise ValueError(f"--mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("timeout_s", "max_duration_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_s', '').replace('_', '-')}: expected > 0")
        self.workload.check()
        self.load.check()


# ---- pods --------------------------------------------------------------------------------------------------


async def discover_pods(client: httpx.AsyncClient, url: str) -> list[str]:
    """Pod base URLs behind a router (its /debug/endpoints); [] when the target is not our router."""
    try:
        r = await client.get(url.rstrip("/") + "/debug/endpoints", timeout=5.0)
        if r.status_code != 200:
            return []
        eps = r.json().get("endpoints") or []
    except (httpx.HTTPError, ValueError, AttributeError):
        return []
    return sorted({f"http://{e['endpoint']}" for e in eps if isinstance(e, dict) and e.get("endpoint")})


async def pod_counters(client: httpx.AsyncClient, pods: list[str]) -> dict[str, float]:
    """Summed prefix-cache counters of the pods (vllm:prefix_cache_{hits,queries}_total)."""
    from router_lite import promtext

    total: dict[str, float] = {"prefix_hits": 0.0, "prefix_queries": 0.0}

    async def one(p: str) -> None:
        try:
            r = await client.get(p + "/metrics", timeout=5.0)
        except httpx.HTTPError:
            return
        if r.status_code != 200:
            return
        f = promtext.pod_figures(promtext.parse(r.text, (promtext.PREFIX_QUERIES, promtext.PREFIX_HITS)))
        total["prefix_hits"] += f.prefix_hits or 0.0
        total["prefix_queries"] += f.prefix_queries or 0.0

    await asyncio.gather(*(one(p) for p in pods))
    return total


async def reset_pod_caches(client: httpx.AsyncClient, pods: list[str]) -> None:
    """POST /reset_prefix_cache on each pod (vLLM's endpoint) so a comparison starts cold everywhere."""

    async def one(p: str) -> None:
        try:
            await client.post(p + "/reset_prefix_cache", timeout=5.0)
        except httpx.HTTPError:
            pass

    await asyncio.gather(*(one(p) for p in pods))


# ---- one run -----------------------------------------------------------------------------------------------


def plan_requests(cfg: BenchConfig) -> tuple[list[BenchRequest], list[tuple[float, int]]]:
    """The requests and their (send time, stage) under the load (closed loop: times are 0)."""
    n_hint = cfg.load.max_requests
    if cfg.load.kind in ("poisson", "trace"):
        arrivals = schedule(cfg.load, n_hint)
    else:
        arrivals = []
    spec = cfg.workload
    if spec.kind in ("shared-prefix", "random") and arrivals:
        spec = dataclasses.replace(spec, num_requests=len(arrivals))
    reqs = generate(spec)[: cfg.load.max_requests]
    if cfg.load.kind == "concurrency":
        arrivals = [(0.0, 0)] * len(reqs)
    n = min(len(reqs), len(arrivals))
    return reqs[:n], arrivals[:n]


async def run_bench_async(cfg: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    cfg.check()
    reqs, arrivals = plan_requests(cfg)
    tracker = SessionTracker()
    changed = asyncio.Condition()
    records: list[RequestRecord] = []
    sem = asyncio.Semaphore(cfg.max_in_flight)
    done = 0
    limits = httpx.Limits(max_connections=cfg.max_in_flight, max_keepalive_connections=min(cfg.max_in_flight, 64))
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        pods = cfg.pods if cfg.pods is not None else await discover_pods(client, cfg.url)
        before = await pod_counters(client, pods) if pods else {}
        t0 = time.monotonic()
        want_ids = any(r.session is not None for r in reqs)

        async def one(i: int) -> None:
            nonlocal done
            req = reqs[i]
            at, stage = arrivals[i]
            delay = at - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            if req.session is not None and req.turn > 0:
                async with changed:
                    await changed.wait_for(lambda: tracker.ready_at(req) is not None)
                ready = tracker.ready_at(req) or 0.0
                wait = ready - (time.monotonic() - t0)
                if wait > 0:
                    await asyncio.sleep(wait)
            prompt = tracker.prompt_of(req)
            async with sem:
                rec, out = await send(
                    client,
                    cfg.url,
                    req,
                    prompt,
                    model=cfg.model,
                    mode=cfg.mode,
                    t0=t0,
                    stage=stage,
                    timeout_s=cfg.timeout_s,
                    want_token_ids=want_ids,
                    segments=tracker.segments_of(req),
                )
            records.append(rec)
            if req.session is not None:
                async with changed:
                    tracker.record(req, prompt, out, rec.finished or 0.0)
                    changed.notify_all()
            done += 1
            if progress:
                progress(done, len(reqs))

        if cfg.load.kind == "concurrency":
            queue = list(range(len(reqs)))
            queue.reverse()

            async def worker() -> None:
                while queue:
                    await one(queue.pop())

            tasks = [asyncio.create_task(worker()) for _ in range(min(cfg.load.concurrency, len(reqs)))]
        else:
            tasks = [asyncio.create_task(one(i)) for i in range(len(reqs))]
        _, pending = await asyncio.wait(tasks, timeout=cfg.max_duration_s) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        seen = {r.request_id for r in records}
        now = time.monotonic() - t0
        for i, req in enumerate(reqs):
            if req.request_id not in seen and arrivals[i][0] <= now:
                records.append(
                    RequestRecord(
                        req.request_id,
                        stage=arrivals[i][1],
                        sent=arrivals[i][0],
                        status=TIMEOUT,
                        error=f"run stopped after {cfg.max_duration_s:g}s",
                        finished=now,
                    )
                )
        after = await pod_counters(client, pods) if pods else {}
    stage_rates = [s.rate for s in cfg.load.stages] if cfg.load.kind == "poisson" else None
    summary = summarize(
        records, cfg.slo, stage_rates=stage_rates, pod_hit_rate=hit_rate_delta(before, after) if pods else None
    )
    out: dict[str, Any] = {
        "url": cfg.url,
        "model": cfg.model,
        "workload": cfg.workload.describe(),
        "load": cfg.load.describe(),
        "mode": cfg.mode,
        "pods": pods,
        "summary": summary.to_dict(),
    }
    if cfg.keep_records:
        out["records"] = [dataclasses.asdict(r) for r in sorted(records, key=lambda r: r.sent)]
    return out


def run_bench(cfg: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    return asyncio.run(run_bench_async(cfg, progress))


# ---- compare -----------------------------------------------------------------------------------------------


def _admin_headers(key: str | None = None) -> dict[str, str]:
    """The router's admin key: `key` when given (a stack in another run directory, as the live demos start),
    else $LLMD_ROUTER_ADMIN_KEY, the local stack's key file, else $LLMD_ROUTER_API_KEY."""
    from llmdctl.local.state import read_admin_key

    key = key or read_admin_key() or os.environ.get("LLMD_ROUTER_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _admin(
    client: httpx.AsyncClient, url: str, method: str, path: str, body: Any = None, key: str | None = None
) -> dict[str, Any]:
    r = await client.request(method, url.rstrip("/") + path, json=body, headers=_admin_headers(key), timeout=10.0)
    try:
        doc = r.json()
    except ValueError:
        doc = {}
    if r.status_code != 200:
        msg = (doc.get("error") or {}).get("message") if isinstance(doc, dict) else None
        raise ValueError(f"{path}: HTTP {r.status_code}: {msg or r.text[:200]}")
    return doc


async def _block_size(client: httpx.AsyncClient, url: str) -> int:
    try:
        doc = await _admin(client, url, "GET", "/debug/endpoints")
        return int((doc.get("hashing") or {}).get("block_size") or 16)
    except (ValueError, httpx.HTTPError):
        return 16


async def switch_router(client: httpx.AsyncClient, url: str, name: str, key: str | None = None) -> str:
    """Point the running router at a policy (random / load / approximate / precise, llm-d's benchmark
    configs) or a shipped profile's router config, through POST /admin/profile. Returns what it applied."""
    from llmdctl.plan.presets import policy_configs

    configs = policy_configs(await _block_size(client, url))
    config = configs[name] if name in configs else load_shipped_profile(name).router.config  # the CLI resolves names
    await _admin(client, url, "POST", "/admin/profile", {"config": config}, key)
    return name


def run_compare(
    cfg: BenchConfig, names: list[str], progress: Callable[[str, int, int], None] | None = None, settle_s: float = 0.5
) -> dict[str, Any]:
    """The same workload against each router config on the same pods (caches reset in between); ratios vs
    the first. The router's original config is restored afterwards."""

    async def main() -> dict[str, Any]:
        results: dict[str, Any] = {}
        async with httpx.AsyncClient(trust_env=False) as client:
            original = await _admin(client, cfg.url, "GET", "/admin/config", key=cfg.admin_key)
            pods = await discover_pods(client, cfg.url)
            try:
                for name in names:
                    await switch_router(client, cfg.url, name, cfg.admin_key)
                    await reset_pod_caches(client, pods)
                    await asyncio.sleep(settle_s)  # let the reset's events reach the router's index
                    cb = (lambda d, t, n=name: progress(n, d, t)) if progress else None
                    results[name] = await run_bench_async(cfg, cb)
            finally:
                try:
                    await _admin(
                        client, cfg.url, "POST", "/admin/profile", {"config": original["config"]}, cfg.admin_key
                    )
                except (ValueError, httpx.HTTPError, KeyError):
                    pass
        summaries = {n: r["summary"] for n, r in results.items()}
        return {
            "url": cfg.url,
            "workload": cfg.workload.describe(),
            "load": cfg.load.describe(),
            "runs": results,
            "ratios": ratios(summaries),
            "baseline": names[0],
        }

    cfg.check()
    return asyncio.run(main())
