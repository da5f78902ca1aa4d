"""The live endpoint set: scraped metrics, health, and membership changes, shared by everything that routes.

Each endpoint has one asyncio task that scrapes `/metrics` every `scrape_interval_s` and probes `/health`
every `health_interval_s`. An endpoint leaves the candidate set when it refuses connections, when `/health`
fails, when its metrics have been failing for longer than `stale_after_s`, when it has answered nothing for
`silent_after_s` while another endpoint answered (a hung pod: its scrape is the first byte that does not come;
not when every endpoint is silent, which is the router's or the machine's stall, not theirs), or when the
proxy reports a failure; it comes back on the next successful scrape with a good health probe. Proxied answers feed the
outlier detector (`record_outcome`): a pod failing requests while it answers scrapes (503 storm, hung engine)
is ejected for a while, then put back (see outliers.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

from router_lite.aio import cancel_and_wait
from router_lite.datalayer.discovery import EndpointSpec
from router_lite.datalayer.scrape import CacheInfo, parse_vllm_metrics
from router_lite.outliers import Outcome, OutlierDetector
from router_lite.proxy import Backend, UpstreamError
from router_lite.types import Endpoint

log = logging.getLogger("router_lite.datalayer")

MembershipListener = Callable[[list[EndpointSpec], list[EndpointSpec]], None]


@dataclass(eq=False)
class EndpointState:
    spec: EndpointSpec
    endpoint: Endpoint
    cache: CacheInfo = field(default_factory=CacheInfo)
    health_ok: bool = True
    scrape_ok: bool = True
    proxy_down: bool = False
    ejected: bool = False  # by the outlier detector, until its ejection time is up
    silent: bool = False  # answered nothing for silent_after_s while other endpoints answered
    last_ok: float = 0.0
    last_seen: float = 0.0  # the last time a scrape or health probe got an answer
    failures: int = 0
    scrapes: int = 0
    last_error: str | None = None
    reason: str | None = None
    task: asyncio.Task | None = None

    @property
    def healthy(self) -> bool:
        return self.health_ok and self.scrape_ok and not self.proxy_down and not self.ejected and not self.silent


class DataLayer:
    """Endpoints by key with their metrics and health; `candidates()` is what the scheduler gets."""

    def __init__(
        self,
        specs: list[EndpointSpec],
        *,
        scrape_interval_s: float = 0.05,
        stale_after_s: float = 2.0,
        health_interval_s: float = 1.0,
        timeout_s: float = 1.0,
        metrics: Any = None,
        outliers: OutlierDetector | None = None,
        unresponsive_after_s: float = 10.0,
        silent_after_s: float = 0.7,
    ) -> None:
        self.scrape_interval_s = scrape_interval_s
        self.stale_after_s = stale_after_s
        self.health_interval_s = health_interval_s
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.outliers = outliers or OutlierDetector()
        self.unresponsive_after_s = unresponsive_after_s
        self.silent_after_s = silent_after_s  # 0: off
        self._silence_task: asyncio.Task | None = None
        self.states: dict[str, EndpointState] = {}
        self._listeners: list[MembershipListener] = []
        self._backends: dict[str, Backend] = {}
        self._running = False
        self._healthy_cache: list[Endpoint] | None = None
        for spec in specs:
            self._add(spec)

    # -- membership --------------------------------------------------------------------------------
    def add_listener(self, fn: MembershipListener) -> None:
        self._listeners.append(fn)

    def _add(self, spec: EndpointSpec) -> EndpointState:
        now = time.monotonic()
        state = EndpointState(spec=spec, endpoint=spec.to_endpoint(), last_ok=now, last_seen=now)
        self.states[spec.key] = state
        self._set_health_gauge(state)
        if self._running:
            state.task = asyncio.get_running_loop().create_task(self._watch(state), name=f"scrape-{spec.key}")
        return state

    def set_specs(self, specs: list[EndpointSpec]) -> tuple[list[EndpointSpec], list[EndpointSpec]]:
        """Replace the endpoint set; a changed spec counts as removed and added. Returns (added, removed)."""
        new = {s.key: s for s in specs}
        removed = [st.spec for k, st in self.states.items() if k not in new or new[k] != st.spec]
        added = [s for k, s in new.items() if k not in self.states or self.states[k].spec != s]
        for spec in removed:
            state = self.states.pop(spec.key)
            self.outliers.forget(spec.key)
            if state.task:
                state.task.cancel()
            b = self._backends.pop(spec.key, None)
            if b is not None:
                b.close()
            if self.metrics is not None:
                try:
                    self.metrics.endpoint_healthy.remove(spec.key)
                except KeyError:
                    pass
        for spec in added:
            self._add(spec)
        self._healthy_cache = None
        if added or removed:
            log.info("endpoints changed: +%s -%s", [s.key for s in added], [s.key for s in removed])
            for fn in self._listeners:
                try:
                    fn(added, removed)
                except Exception:
                    log.exception("endpoint membership listener")
        return added, removed

    # -- views ---------------------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        return [s.endpoint for s in self.states.values()]

    def candidates(self) -> list[Endpoint]:
        """Healthy endpoints (cached until health or membership changes)."""
        if self._healthy_cache is None:
            self._healthy_cache = [s.endpoint for s in self.states.values() if s.healthy]
        return self._healthy_cache

    def get(self, key: str) -> EndpointState | None:
        return self.states.get(key)

    def cache_info(self) -> CacheInfo:
        """The engines' prefix-cache settings: the first endpoint that reported them."""
        for s in self.states.values():
            if s.cache.block_size:
                return s.cache
        return CacheInfo()

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for s in self.states.values():
            ep, m = s.endpoint, s.endpoint.metrics
            out.append(
                {
                    "endpoint": ep.key,
                    "name": ep.name,
                    "role": ep.role,
                    "labels": dict(ep.labels),
                    "dp_rank": ep.dp_rank,
                    "healthy": s.healthy,
                    "ejected_for_s": round(max(0.0, self.outliers.until(ep.key) - now), 3) if s.ejected else None,
                    "reason": s.reason,
                    "last_error": s.last_error,
                    "metrics_age_s": round(now - m.updated_at, 3) if m.updated_at else None,
                    "stale": (not m.updated_at) or now - m.updated_at > self.stale_after_s,
                    "waiting": m.waiting_queue_size,
                    "running": m.running_requests_size,
                    "kv_cache_usage": m.kv_cache_usage_percent,
                    "block_size": s.cache.block_size,
                    "num_gpu_blocks": s.cache.num_gpu_blocks,
                    "hash_algo": s.cache.hash_algo,
                    "lora_active": sorted(m.active_models),
                    "scrapes": s.scrapes,
                    "kv_events": (
                        {
                            "endpoint": s.spec.kv_events.endpoint,
                            "topic": s.spec.kv_events.topic,
                            "bind": s.spec.kv_events.bind,
                        }
                        if s.spec.kv_events
                        else None
                    ),
                }
            )
        return out

    # -- health --------------------------------------------------------------------------------------
    def _set_health_gauge(self, state: EndpointState) -> None:
        if self.metrics is not None:
            self.metrics.endpoint_healthy.labels(state.spec.key).set(1 if state.healthy else 0)

    def _update(self, state: EndpointState, **changes: Any) -> None:
        before = state.healthy
        for k, v in changes.items():
            setattr(state, k, v)
        after = state.healthy
        state.endpoint.healthy = after
        if before != after:
            self._healthy_cache = None
            self._set_health_gauge(state)
            if after:
                state.reason = None
                log.info("endpoint %s healthy", state.spec.key)
            else:
                log.warning("endpoint %s unhealthy: %s", state.spec.key, state.reason)

    def report_failure(self, key: str, reason: str) -> None:
        """The proxy could not reach `key`: drop it from the candidates until a scrape succeeds again."""
        state = self.states.get(key)
        if state is not None and not state.proxy_down:
            state.reason = reason
            self._update(state, proxy_down=True)

    def record_outcome(self, key: str, outcome: Outcome, detail: str = "") -> None:
        """One proxied attempt's outcome (the proxy calls this): may eject `key` (see OutlierDetector)."""
        state = self.states.get(key)
        if state is None:
            return
        if self.outliers.record(key, outcome, time.monotonic(), detail):
            state.reason = self.outliers.reason(key)
            if self.metrics is not None:
                self.metrics.errors.labels("endpoint_ejected").inc()
            self._update(state, ejected=True)

    def responsive(self, key: str) -> bool:
        """False once `key` has answered no scrape and no health probe for `unresponsive_after_s`: a request
        waiting on it waits in vain (a stopped process). Not sooner: an overloaded pod answers its scrapes
        late, and cutting the requests it is working on would lose them (seen at 5x load: scrapes failed
        for over 2 s while the pod served)."""
        state = self.states.get(key)
        return state is None or time.monotonic() - state.last_seen < self.unresponsive_after_s

    def _end_ejection(self, state: EndpointState) -> None:
        if state.ejected and not self.outliers.ejected(state.spec.key, time.monotonic()):
            log.info("endpoint %s: ejection over, back in rotation", state.spec.key)
            self._update(state, ejected=False)

    # -- the scrape loop -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        loop = asyncio.get_running_loop()
        for state in self.states.values():
            if state.task is None:
                state.task = loop.create_task(self._watch(state), name=f"scrape-{state.spec.key}")
        if self.silent_after_s and self.scrape_interval_s > 0:
            self._silence_task = loop.create_task(self._silence_watch(), name="silence-watch")

    async def stop(self, timeout_s: float = 1.0) -> None:
        """Cancel the scrape tasks and wait for them, bounded: shutdown must never hang on a pod."""
        self._running = False
        tasks = [s.task for s in self.states.values() if s.task]
        if self._silence_task is not None:
            tasks.append(self._silence_task)
            self._silence_task = None
        await cancel_and_wait(tasks, timeout_s, "scrape")
        for s in self.states.values():
            s.task = None
        for b in self._backends.values():
            b.close()
        self._backends.clear()

    def _backend(self, state: EndpointState) -> Backend:
        b = self._backends.get(state.spec.key)
        if b is None:
            b = self._backends[state.spec.key] = Backend(state.spec.address, self.timeout_s, self.timeout_s, max_idle=2)
        return b

    def _heard(self, state: EndpointState) -> None:
        state.last_seen = time.monotonic()
        if state.silent:
            self._update(state, silent=False)

    def _check_silence(self, state: EndpointState) -> None:
        """Out of rotation when `state` answered nothing for `silent_after_s` and another endpoint did."""
        now = time.monotonic()
        limit = self.silent_after_s
        if state.silent or not limit or now - state.last_seen < limit:
            return
        if any(s is not state and now - s.last_seen < limit for s in self.states.values()):
            state.reason = f"answered nothing for {now - state.last_seen:.2f}s (scrapes and probes)"
            self._update(state, silent=True)

    async def _silence_watch(self) -> None:
        """Every scrape interval, judge each endpoint's silence. Beside the scrapes, not through their
        timeout: a scrape given up early is still served by a slow pod, and abandoned scrapes every 50 ms
        pile up on exactly the pod that is already behind."""
        while self._running:
            for state in list(self.states.values()):
                self._check_silence(state)
            await asyncio.sleep(self.scrape_interval_s)

    async def scrape_once(self, state: EndpointState) -> None:
        """One `/metrics` scrape of one endpoint (also used directly by tests and at startup)."""
        now = time.monotonic()
        try:
            status, body = await self._backend(state).get("/metrics", self.timeout_s)
            if status != 200:
                raise ValueError(f"/metrics returned {status}")
            metrics, cache = parse_vllm_metrics(
                body.decode("utf-8", "replace"), state.endpoint.dp_rank, now=time.monotonic()
            )
        except TimeoutError:  # an OSError too: a pod silent (hung, or slow), judged by its silence
            self._scrape_failed(
                state, f"metrics: no answer in {self.timeout_s:g}s", hard=now - state.last_ok > self.stale_after_s
            )
            return
        except (UpstreamError, OSError, httptools.HttpParserError) as exc:
            self._scrape_failed(state, f"unreachable: {exc}"[:200], hard=True)
            return
        except Exception as exc:  # HTTP errors, unparsable pages
            self._heard(state)  # an answer, if not a good one
            self._scrape_failed(
                state, f"metrics: {type(exc).__name__}: {exc}"[:200], hard=now - state.last_ok > self.stale_after_s
            )
            return
        state.endpoint.metrics = metrics
        if cache.block_size:
            state.cache = cache
        state.scrapes += 1
        state.failures = 0
        state.last_ok = time.monotonic()
        self._heard(state)
        state.last_error = None
        if not state.healthy or not state.scrape_ok:
            self._update(state, scrape_ok=True, proxy_down=False)

    def _scrape_failed(self, state: EndpointState, error: str, hard: bool) -> None:
        state.failures += 1
        state.last_error = error
        if self.metrics is not None:
            self.metrics.scrape_errors.labels(state.spec.key).inc()
        if hard and state.scrape_ok:
            state.reason = error
            self._update(state, scrape_ok=False)

    async def probe_health(self, state: EndpointState) -> None:
        try:
            status, _ = await self._backend(state).get("/health", self.timeout_s)
            self._heard(state)  # an answer, whatever it says
            ok = status == 200
            why = f"/health returned {status}"
        except Exception as exc:
            ok, why = False, f"/health: {type(exc).__name__}"
        if ok != state.health_ok:
            if not ok:
                state.reason = why
            self._update(state, health_ok=ok)

    async def _probe_logged(self, state: EndpointState) -> None:
        try:
            await self.probe_health(state)
        except Exception:
            log.exception("probing %s", state.spec.key)

    async def _watch(self, state: EndpointState) -> None:
        next_health = 0.0
        probe: asyncio.Task | None = None
        # The flags, not only cancellation, end the loop: a cancel that lands as a connect attempt completes
        # can be lost inside library code, and a loop that outlives `stop()` kept the router from exiting.
        try:
            while self._running and self.states.get(state.spec.key) is state:
                t0 = time.monotonic()
                self._end_ejection(state)
                try:
                    # The probe runs beside the scrapes: a probe waiting on a hung pod must not hold back the
                    # scrape whose timeout notices the silence first.
                    if t0 >= next_health and (probe is None or probe.done()):
                        next_health = t0 + self.health_interval_s
                        probe = asyncio.get_running_loop().create_task(self._probe_logged(state))
                        if self.scrape_interval_s <= 0:
                            await probe
                    if self.scrape_interval_s > 0:
                        await self.scrape_once(state)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("scraping %s", state.spec.key)
                interval = self.scrape_interval_s if self.scrape_interval_s > 0 else self.health_interval_s
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))
        finally:
            if probe is not None and not probe.done():
                probe.cancel()
