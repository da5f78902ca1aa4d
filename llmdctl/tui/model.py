"""What the TUI knows, as plain data: pods, the decision feed and the chart series, with no I/O.

The subscriber feeds it (`ingest_decision` per decision, `ingest_poll` once per poll of the router and
pods); screens read it. Everything is bounded: the feed is a ring, each series holds a fixed number of
samples, per-pod history a fixed window. Each part has a generation number that changes when it changes,
so a screen re-renders a panel only when there is something new — that is the coalescing.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from router_lite import promtext

FEED_CAP = 2000  # decisions kept (for the feed, the filter and the detail view)
SERIES_LEN = 300  # chart samples, one per poll (~1 s): five minutes
POD_WINDOW = 10  # polls over which a pod's "recent" hit rate is computed
CHART_WINDOW = 5  # polls summed for each point of the hit-rate, TTFT and request-rate charts

POD_PREFIXES = promtext.POD_PREFIXES
ROUTER_PREFIXES = ("llmd_router_",)
POD_TTFT = "vllm:time_to_first_token_seconds"
ROUTER_TTFB = "llmd_router_time_to_first_byte_seconds"


# ---- decisions -----------------------------------------------------------------------------------------


def short_scorer(name: str) -> str:
    """`precise-prefix-cache-scorer` -> `precise-prefix-cache`: the column text users recognise."""
    return name.removesuffix("-scorer")


@dataclass(slots=True)
class FeedRow:
    """One decision, reduced to what the feed shows; `raw` keeps the full object for the detail view."""

    request_id: str
    ts: float
    prompt_tokens: int
    decode: str | None
    prefill: str | None
    served_by: str | None
    status: int | None
    matched: int | None  # prefix blocks matched on the chosen pod (None: no prefix scorer ran)
    best_alt: int | None  # the most blocks any other candidate held
    best_alt_endpoint: str | None
    scores: list[tuple[str, float]]  # (scorer, weighted score) on the chosen pod
    total: float | None
    scheduling_ms: float
    reason: str
    raw: dict[str, Any]

    @property
    def pods(self) -> tuple[str, ...]:
        return tuple(p for p in (self.decode, self.prefill, self.served_by) if p)


def _chosen_candidate(
    cands: list[dict[str, Any]], endpoint: str | None, prefer_profile: str | None
) -> dict[str, Any] | None:
    best = None
    for c in cands:
        if c.get("endpoint") != endpoint:
            continue
        if prefer_profile and c.get("profile") == prefer_profile:
            return c
        if best is None or c.get("total", 0.0) > best.get("total", 0.0):
            best = c
    return best


def decision_row(d: dict[str, Any]) -> FeedRow:
    """Reduce one `/debug/decisions` object (router_lite's `to_decision_dict` + served_by/status/attempts)."""
    chosen = d.get("chosen") or {}
    decode = chosen.get("decode")
    prefill = chosen.get("prefill")
    served = d.get("served_by") or decode
    cands = [c for c in d.get("candidates") or [] if isinstance(c, dict)]
    pick = _chosen_candidate(cands, served, "decode" if prefill else None)
    matched = best_alt = None
    alt_ep = None
    scores: list[tuple[str, float]] = []
    total = None
    if pick is not None:
        profile = pick.get("profile")
        peers = [c for c in cands if c.get("profile") == profile]
        has_prefix = any("prefix" in s for s in (pick.get("scores") or {})) or any(
            c.get("prefix_match_blocks") for c in peers
        )
        if has_prefix:
            matched = int(pick.get("prefix_match_blocks") or 0)
            others = [c for c in peers if c.get("endpoint") != served]
            if others:
                alt = max(others, key=lambda c: c.get("prefix_match_blocks") or 0)
                best_alt, alt_ep = int(alt.get("prefix_match_blocks") or 0), alt.get("endpoint")
        for name, s in (pick.get("scores") or {}).items():
            scores.append((short_scorer(name), float(s.get("weighted", 0.0)) if isinstance(s, dict) else float(s)))
        total = pick.get("total")
    return FeedRow(
        request_id=str(d.get("client_request_id") or d.get("request_id", "?")),  # the id the client sent
        ts=float(d.get("ts") or time.time()),
        prompt_tokens=int(d.get("prompt_tokens") or 0),
        decode=decode,
        prefill=prefill,
        served_by=served,
        status=d.get("status"),
        matched=matched,
        best_alt=best_alt,
        best_alt_endpoint=alt_ep,
        scores=scores,
        total=total,
        scheduling_ms=float(d.get("scheduling_ms") or 0.0),
        reason=str(d.get("reason") or ""),
        raw=d,
    )


# ---- pods ----------------------------------------------------------------------------------------------


@dataclass
class PodView:
    """One row of the pods panel: a pod, or one data-parallel rank of a pod."""

    key: str  # host:port
    name: str
    role: str = "both"
    dp_rank: int | None = None
    healthy: bool = True
    reason: str | None = None
    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None
    hit_rate: float | None = None  # cumulative, from the pod's own token counters
    hit_rate_recent: float | None = None  # over the last POD_WINDOW polls
    tiers: dict[str, dict[str, float]] = field(default_factory=dict)  # tier -> {occupancy, hits}
    from_pod: bool = False  # figures scraped from the pod itself (else the router's view)
    routed: int = 0  # decisions in the feed ring that chose this pod

    @property
    def label(self) -> str:
        if self.dp_rank is None or self.name.endswith(f"r{self.dp_rank}"):
            return self.name
        return f"{self.name} r{self.dp_rank}"


def _pod_figures(samples: list[promtext.Sample]) -> dict[str, Any]:
    """The pod panel's view of `promtext.pod_figures`, plus the pod's TTFT buckets (for the chart)."""
    f = promtext.pod_figures(samples)
    tiers: dict[str, dict[str, float]] = {}
    for medium, v in f.tier_hits.items():
        tiers.setdefault(medium.upper(), {})["hits"] = v
    for medium, v in f.tier_usage.items():
        tiers.setdefault(medium.upper(), {})["occupancy"] = v
    buckets: dict[float, float] = {}
    promtext.add_buckets(buckets, samples, POD_TTFT)
    return {
        "running": f.running or 0.0,
        "waiting": f.waiting or 0.0,
        "kv": f.kv_cache_usage,
        "queries": f.prefix_queries or 0.0,
        "hits": f.prefix_hits or 0.0,
        "tiers": tiers,
        "ttft": buckets,
    }


def _delta(now: float, before: float) -> float:
    return now if now < before else now - before  # a restart resets counters


# ---- the model -----------------------------------------------------------------------------------------


@dataclass
class Series:
    """Chart series, one sample per poll."""

    hit_rate: deque = field(default_factory=lambda: deque(maxlen=SERIES_LEN))
    ttft_p50: deque = field(default_factory=lambda: deque(maxlen=SERIES_LEN))
    ttft_p90: deque = field(default_factory=lambda: deque(maxlen=SERIES_LEN))
    req_rate: deque = field(default_factory=lambda: deque(maxlen=SERIES_LEN))


class Model:
    """The TUI's state; see the module docstring."""

    def __init__(self, feed_cap: int = FEED_CAP, series_len: int = SERIES_LEN) -> None:
        self.feed: deque[FeedRow] = deque(maxlen=feed_cap)
        self.series = Series(*(deque(maxlen=series_len) for _ in range(4)))
        self.pods: dict[str, PodView] = {}
        self.router: dict[str, Any] = {}  # /debug/endpoints minus endpoints: config, indexes, decisions, kv_events
        self.ttft_source = "-"
        self.decisions_total = 0
        self.decisions_bad = 0
        self.decision_rate = 0.0  # per second, over the last poll interval
        self.router_dropped = 0.0  # decisions the router dropped for slow readers
        # connection: "connecting" | "live" | "down" | "nothing"
        self.status = "connecting"
        self.status_detail = ""
        self.url: str | None = None
        self.profile: str | None = None  # the stack's profile (from the run state), when known
        self.scheduler: str | None = None  # the profile whose scheduling config the router runs now, when known
        self.config_version: int | None = None
        self.notice: str = ""  # the last action's outcome, one line
        self.gen_pods = self.gen_feed = self.gen_charts = self.gen_status = 0
        self._pod_hist: dict[str, deque] = {}
        self._pod_prev: dict[str, tuple[float, float, dict[float, float]]] = {}
        self._chart_steps: deque = deque(maxlen=CHART_WINDOW)  # (dq, dh, ttft bucket delta, requests, dt)
        self._prev_poll: float | None = None
        self._prev_requests: float | None = None
        self._prev_router_ttfb: dict[float, float] | None = None
        self._decisions_at_poll = 0
        self._routed: dict[str, int] = {}

    # -- status ----------------------------------------------------------------------------------------
    def set_status(self, status: str, detail: str = "", url: str | None = None) -> None:
        if (status, detail, url) != (self.status, self.status_detail, self.url):
            self.status, self.status_detail, self.url = status, detail, url
            self.gen_status += 1

    def set_scheduler(self, name: str | None, version: int | None = None) -> None:
        self.scheduler = name
        if version is not None:
            self.config_version = version
        self.gen_status += 1

    def set_notice(self, text: str) -> None:
        self.notice = text
        self.gen_status += 1

    # -- decisions -------------------------------------------------------------------------------------
    def ingest_decision(self, d: dict[str, Any]) -> FeedRow | None:
        """Add one decision to the feed ring; a malformed one is counted and skipped."""
        try:
            row = decision_row(d)
        except (TypeError, ValueError, AttributeError):
            self.decisions_bad += 1
            return None
        if len(self.feed) == self.feed.maxlen:
            old = self.feed[0]
            if old.served_by:
                n = self._routed.get(old.served_by, 1) - 1
                self._routed[old.served_by] = n
        self.feed.append(row)
        if row.served_by:
            self._routed[row.served_by] = self._routed.get(row.served_by, 0) + 1
        self.decisions_total += 1
        self.gen_feed += 1
        return row

    def rows(self, pod: str | None = None, limit: int = 100) -> list[FeedRow]:
        """The newest `limit` feed rows, newest first, optionally only those involving `pod` (host:port)."""
        out: list[FeedRow] = []
        for row in reversed(self.feed):
            if pod is None or pod in row.pods:
                out.append(row)
                if len(out) >= limit:
                    break
        return out

    def find(self, request_id: str) -> FeedRow | None:
        for row in reversed(self.feed):
            if row.request_id == request_id:
                return row
        return None

    def pod_name(self, key: str | None) -> str:
        if not key:
            return "-"
        p = self.pods.get(key)
        return p.label if p else key

    # -- polls -----------------------------------------------------------------------------------------
    def ingest_poll(
        self,
        endpoints_doc: dict[str, Any] | None,
        router_metrics: str | None,
        pod_metrics: dict[str, str | None],
        now: float | None = None,
    ) -> None:
        """One poll: the router's `/debug/endpoints` and `/metrics`, and each pod's `/metrics` text (None: failed)."""
        now = time.monotonic() if now is None else now
        dt = None if self._prev_poll is None else max(1e-6, now - self._prev_poll)
        self._prev_poll = now
        if endpoints_doc is not None:
            self._ingest_endpoints(endpoints_doc)
        step_q = step_h = 0.0
        step_ttft: dict[float, float] = {}
        pods_with_ttft = 0
        for key, text in pod_metrics.items():
            pod = self.pods.get(key)
            if pod is None:
                continue
            if text is None:
                pod.from_pod = False
                pod.hit_rate = pod.hit_rate_recent = None
                continue
            fig = _pod_figures(promtext.parse(text, POD_PREFIXES))
            pod.from_pod = True
            pod.running, pod.waiting = fig["running"], fig["waiting"]
            if fig["kv"] is not None:
                pod.kv_usage = fig["kv"]
            pod.tiers = fig["tiers"]
            q, h = fig["queries"], fig["hits"]
            pod.hit_rate = h / q if q else None
            hist = self._pod_hist.setdefault(key, deque(maxlen=POD_WINDOW + 1))
            hist.append((q, h))
            oq, oh = hist[0]
            dq, dh = _delta(q, oq), _delta(h, oh)
            pod.hit_rate_recent = dh / dq if dq > 0 else None
            prev = self._pod_prev.get(key)
            if prev is not None:
                step_q += _delta(q, prev[0])
                step_h += _delta(h, prev[1])
                d = promtext.bucket_delta(fig["ttft"], prev[2])
                for b, v in d.items():
                    step_ttft[b] = step_ttft.get(b, 0.0) + v
                if fig["ttft"]:
                    pods_with_ttft += 1
            self._pod_prev[key] = (q, h, fig["ttft"])
        for key in [k for k in self._pod_prev if k not in self.pods]:
            del self._pod_prev[key]
            self._pod_hist.pop(key, None)
        for key, pod in self.pods.items():
            pod.routed = self._routed.get(key, 0)
        self.gen_pods += 1
        # router: request rate, TTFB fallback, drops
        requests = None
        router_ttfb: dict[float, float] = {}
        if router_metrics is not None:
            samples = promtext.parse(router_metrics, ROUTER_PREFIXES)
            requests = sum(v for n, _, v in samples if n == "llmd_router_requests_total")
            self.router_dropped = sum(v for n, _, v in samples if n == "llmd_router_decision_stream_drops_total")
            promtext.add_buckets(router_ttfb, samples, ROUTER_TTFB)
        if pods_with_ttft == 0 and router_ttfb and self._prev_router_ttfb is not None:
            step_ttft = promtext.bucket_delta(router_ttfb, self._prev_router_ttfb)
            self.ttft_source = "router TTFB"
        elif pods_with_ttft:
            self.ttft_source = "pods"
        self._prev_router_ttfb = router_ttfb or None
        if dt is None:  # the first poll only sets the baselines
            self._prev_requests = requests
            self._decisions_at_poll = self.decisions_total
            return
        self.decision_rate = (self.decisions_total - self._decisions_at_poll) / dt
        self._decisions_at_poll = self.decisions_total
        if requests is not None and self._prev_requests is not None:
            step_n = _delta(requests, self._prev_requests)
        else:
            step_n = self.decision_rate * dt
        self._prev_requests = requests
        self._chart_steps.append((step_q, step_h, step_ttft, step_n, dt))
        wq = sum(s[0] for s in self._chart_steps)
        wh = sum(s[1] for s in self._chart_steps)
        wb: dict[float, float] = {}
        for s in self._chart_steps:
            for b, v in s[2].items():
                wb[b] = wb.get(b, 0.0) + v
        rate = sum(st[3] for st in self._chart_steps) / sum(st[4] for st in self._chart_steps)
        s = self.series
        s.hit_rate.append(wh / wq if wq > 0 else None)
        s.ttft_p50.append(promtext.quantile(0.5, wb))
        s.ttft_p90.append(promtext.quantile(0.9, wb))
        s.req_rate.append(rate)
        self.gen_charts += 1

    def _ingest_endpoints(self, doc: dict[str, Any]) -> None:
        seen = set()
        for e in doc.get("endpoints") or []:
            key = e.get("endpoint")
            if not key:
                continue
            seen.add(key)
            pod = self.pods.get(key)
            if pod is None:
                pod = self.pods[key] = PodView(key=key, name=e.get("name") or key)
            pod.name = e.get("name") or key
            pod.role = e.get("role") or "both"
            pod.dp_rank = e.get("dp_rank")
            pod.healthy = bool(e.get("healthy", True))
            pod.reason = e.get("reason") or e.get("last_error")
            # the router's view, until (or unless) the pod's own metrics say more
            pod.running = e.get("running", pod.running)
            pod.waiting = e.get("waiting", pod.waiting)
            pod.kv_usage = e.get("kv_cache_usage", pod.kv_usage)
        for key in [k for k in self.pods if k not in seen]:
            del self.pods[key]
        self.router = {k: v for k, v in doc.items() if k != "endpoints"}
        self.gen_status += 1

    def prediction_outcome(self, request_id: str) -> dict[str, Any] | None:
        """The router's predicted-vs-actual TTFT/TPOT for one request (router id), from the last poll of
        `/debug/endpoints` (a predicted-latency producer keeps its last outcomes there); None when absent."""
        for stats in (self.router.get("predictors") or {}).values():
            for o in reversed((stats or {}).get("recent") or []):
                if isinstance(o, dict) and o.get("request_id") == request_id:
                    return o
        return None

    def prediction_errors(self) -> dict[str, dict[str, Any]]:
        """Predictor name -> its TTFT and TPOT error summaries after the warm-up (median and p90 of
        |pred-actual|/actual)."""
        out = {}
        for name, stats in (self.router.get("predictors") or {}).items():
            if isinstance(stats, dict) and "ttft_error_after_warmup" in stats:
                out[name] = {
                    "ttft": stats.get("ttft_error_after_warmup") or {},
                    "tpot": stats.get("tpot_error_after_warmup") or {},
                }
        return out

    def clear_pods(self) -> None:
        """Nothing to show (router gone): pods vanish, history baselines restart on reconnect."""
        if self.pods:
            self.pods.clear()
            self.gen_pods += 1
        self._pod_prev.clear()
        self._pod_hist.clear()
        self._prev_poll = None
        self._prev_requests = None
        self._prev_router_ttfb = None
        self._chart_steps.clear()
