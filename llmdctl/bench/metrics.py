"""Benchmark math: per-request records in, summaries out (percentiles, throughput, goodput, stages, ratios).

Pure functions over `RequestRecord`s so the live client and the offline planner report the same numbers the
same way. Percentiles interpolate linearly between order statistics (numpy's default), throughput is output
tokens over the span from the first send to the last finish, goodput counts requests that met the SLO
(TTFT and time per output token thresholds), and the prefix-cache hit rate comes from the pods' own
`vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total` counters, before and after.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

OK, ERROR, SHED, TIMEOUT = "ok", "error", "shed", "timeout"


@dataclass
class RequestRecord:
    """What one request did. Times are seconds since the run started (send, first token, finish)."""

    request_id: str
    stage: int = 0
    sent: float = 0.0
    first_token: float | None = None
    finished: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens when the server reports it
    endpoint: str | None = None  # x-llmd-endpoint
    status: str = OK
    error: str | None = None
    itl_max: float | None = None  # longest gap between streamed chunks
    router_request_id: str | None = None  # the router's x-request-id: joins this record to its routing decision

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.sent

    @property
    def e2e(self) -> float | None:
        return None if self.finished is None else self.finished - self.sent

    @property
    def tpot(self) -> float | None:
        """Mean inter-token latency after the first token (time per output token)."""
        if self.first_token is None or self.finished is None or self.output_tokens < 2:
            return None
        return (self.finished - self.first_token) / (self.output_tokens - 1)


@dataclass(frozen=True)
class SLO:
    """A request is 'good' when it succeeded with TTFT <= ttft_s and TPOT <= itl_s."""

    ttft_s: float = 2.0
    itl_s: float = 0.1

    def met(self, r: RequestRecord) -> bool:
        if r.status != OK or r.ttft is None or r.ttft > self.ttft_s:
            return False
        tp = r.tpot
        return tp is None or tp <= self.itl_s


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be in [0, 100], got {q}")
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    frac = pos - lo
    return float(xs[lo] + (xs[hi] - xs[lo]) * frac)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _dist(values: list[float]) -> dict[str, float | None]:
    return {
        "mean": mean(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
    }


def hit_rate_delta(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Prefix-cache hit rate over a run from summed pod counters {prefix_hits, prefix_queries} before/after."""
    q = after.get("prefix_queries", 0.0) - before.get("prefix_queries", 0.0)
    h = after.get("prefix_hits", 0.0) - before.get("prefix_hits", 0.0)
    return h / q if q > 0 else None


@dataclass
class Summary:
    requests: int
    ok: int
    errors: int
    shed: int
    timeouts: int
    duration_s: float
    ttft_s: dict[str, float | None]
    tpot_s: dict[str, float | None]
    e2e_s: dict[str, float | None]
    output_tokens: int
    prompt_tokens: int
    output_tok_s: float
    request_s: float
    goodput_req_s: float
    slo: dict[str, float]
    slo_attainment: float | None
    cached_token_fraction: float | None  # from usage (the server's cached_tokens), when reported
    pod_hit_rate: float | None = None  # from the pods' counters
    stages: list[dict[str, Any]] = field(default_factory=list)
    endpoints: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None  # one failed request's error, to say what went wrong

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    records: Iterable[RequestRecord],
    slo: SLO | None = None,
    stage_rates: Sequence[float] | None = None,
    pod_hit_rate: float | None = None,
) -> Summary:
    """Aggregate records. `stage_rates` (offered QPS per stage) adds per-stage summaries."""
    recs = list(records)
    slo = slo or SLO()
    ok = [r for r in recs if r.status == OK]
    start = min((r.sent for r in recs), default=0.0)
    end = max((r.finished for r in recs if r.finished is not None), default=start)
    duration = max(end - start, 1e-9)
    out_tok = sum(r.output_tokens for r in ok)
    prompt_tok = sum(r.prompt_tokens for r in ok)
    good = sum(1 for r in recs if slo.met(r))
    cached = [r for r in ok if r.cached_tokens is not None]
    cached_frac = (
        (sum(r.cached_tokens or 0 for r in cached) / max(1, sum(r.prompt_tokens for r in cached))) if cached else None
    )
    endpoints: dict[str, int] = {}
    for r in ok:
        if r.endpoint:
            endpoints[r.endpoint] = endpoints.get(r.endpoint, 0) + 1
    summary = Summary(
        requests=len(recs),
        ok=len(ok),
        errors=sum(1 for r in recs if r.status == ERROR),
        shed=sum(1 for r in recs if r.status == SHED),
        timeouts=sum(1 for r in recs if r.status == TIMEOUT),
        duration_s=duration if recs else 0.0,
        ttft_s=_dist([r.ttft for r in ok if r.ttft is not None]),
        tpot_s=_dist([t for r in ok if (t := r.tpot) is not None]),
        e2e_s=_dist([r.e2e for r in ok if r.e2e is not None]),
        output_tokens=out_tok,
        prompt_tokens=prompt_tok,
        output_tok_s=out_tok / duration if recs else 0.0,
        request_s=len(ok) / duration if recs else 0.0,
        goodput_req_s=good / duration if recs else 0.0,
        slo={"ttft_s": slo.ttft_s, "itl_s": slo.itl_s},
        slo_attainment=good / len(recs) if recs else None,
        cached_token_fraction=cached_frac,
        pod_hit_rate=pod_hit_rate,
        endpoints=dict(sorted(endpoints.items())),
        first_error=next((r.error for r in recs if r.status != OK and r.error), None),
    )
    if stage_rates:
        summary.stages = stage_summaries(recs, stage_rates, slo)
    return summary


def stage_summaries(recs: list[RequestRecord], stage_rates: Sequence[float], slo: SLO) -> list[dict[str, Any]]:
    """Per stage (by the stage a request was sent in): offered QPS, TTFT p50/p90/mean, output tok/s."""
    out = []
    for i, rate in enumerate(stage_rates):
        rs = [r for r in recs if r.stage == i]
        ok = [r for r in rs if r.status == OK]
        if not rs:
            out.append({"stage": i, "rate": rate, "requests": 0})
            continue
        s0 = min(r.sent for r in rs)
        s1 = max((r.finished for r in ok if r.finished is not None), default=s0)
        span = max(s1 - s0, 1e-9)
        ttfts = [r.ttft for r in ok if r.ttft is not None]
        out.append(
            {
                "stage": i,
                "rate": rate,
                "requests": len(rs),
                "ok": len(ok),
                "ttft_p50_s": percentile(ttfts, 50),
                "ttft_p90_s": percentile(ttfts, 90),
                "ttft_mean_s": mean(ttfts),
                "tpot_mean_s": mean([t for r in ok if (t := r.tpot) is not None]),
                "output_tok_s": sum(r.output_tokens for r in ok) / span,
                "slo_attainment": sum(1 for r in rs if slo.met(r)) / len(rs),
            }
        )
    return out


# Metrics shown side by side: (label, getter, higher is better)
HEADLINE: list[tuple[str, str, bool]] = [
    ("TTFT p90 (s)", "ttft_s.p90", False),
    ("TTFT mean (s)", "ttft_s.mean", False),
    ("TPOT mean (s)", "tpot_s.mean", False),
    ("Output tok/s", "output_tok_s", True),
    ("Goodput req/s", "goodput_req_s", True),
    ("Hit rate", "pod_hit_rate", True),
]


def get_path(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def ratio_key(label: str) -> str:
    """The key of a headline metric's ratio: `TTFT p90 (s)` -> `TTFT p90 (x better)` (a factor, not seconds)."""
    return label.split(" (")[0] + " (x better)"


def ratios(summaries: dict[str, dict[str, Any]], baseline: str | None = None) -> dict[str, dict[str, float | None]]:
    """For each run, each headline metric relative to the baseline run (default: the first) as a
    'times better' factor: baseline/value for lower-is-better metrics, value/baseline otherwise. Keys are
    `ratio_key(label)`, so a JSON reader never takes a factor for seconds."""
    if not summaries:
        return {}
    base_name = baseline or next(iter(summaries))
    if base_name not in summaries:
        raise ValueError(f"baseline {base_name!r} is not among the runs: {', '.join(summaries)}")
    base = summaries[base_name]
    out: dict[str, dict[str, float | None]] = {}
    for name, s in summaries.items():
        row: dict[str, float | None] = {}
        for label, path, higher in HEADLINE:
            v, b = get_path(s, path), get_path(base, path)
            row[ratio_key(label)] = ratio(v, b) if higher else ratio(b, v)
        out[name] = row
    return out
