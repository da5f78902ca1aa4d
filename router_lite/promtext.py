"""The one reader of Prometheus text exposition: the router's scraper, `llmdctl status`, bench and the TUI.

A vLLM `/metrics` page is large (three histograms); callers want a few families. `parse` finds the wanted
lines with `str.find` on "\\n" + prefix (no pass over the whole page in Python), and hands each line's
name-and-labels to prometheus_client's parser once, caching the result: the escaping rules are
prometheus_client's, the cost is a dict lookup per line on later scrapes. `pod_figures` reads the load,
prefix-cache and KV-tier figures every consumer shows, by the exact names vLLM and the simulator export.
It lives in router_lite, the lowest layer both the router and llmdctl import.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]

_CACHE_MAX = 8192
_heads: dict[str, tuple[str, dict[str, str]] | None] = {}  # None: a malformed head
_MISS = object()


def _lines(text: str, prefixes: tuple[str, ...] | None) -> list[str]:
    """Sample lines starting with one of `prefixes` (all non-comment lines for None), in page order."""
    if prefixes is None:
        return [ln for ln in text.splitlines() if ln and ln[0] != "#"]
    text = "\n" + text
    found: list[tuple[int, str]] = []
    for p in prefixes:
        needle = "\n" + p
        i = text.find(needle)
        while i >= 0:
            end = text.find("\n", i + 1)
            found.append((i, text[i + 1 : end if end >= 0 else len(text)]))
            i = text.find(needle, end) if end >= 0 else -1
    if len(prefixes) > 1:
        found = sorted(dict(found).items())  # overlapping prefixes find a line twice
    return [ln for _, ln in found]


def _name_labels(head: str) -> tuple[str, dict[str, str]] | None:
    """Name and labels of `head` (a line without its value), parsed by prometheus_client and cached."""
    try:
        s = next(iter(text_string_to_metric_families(head + " 0\n"))).samples[0]
        parsed: tuple[str, dict[str, str]] | None = (s.name, dict(s.labels))
    except (ValueError, StopIteration, IndexError, TypeError):
        parsed = None
    if len(_heads) >= _CACHE_MAX:  # label churn (pods coming and going): start over rather than grow
        _heads.clear()
    _heads[head] = parsed
    return parsed


def parse(text: str, prefixes: Iterable[str] | None = None) -> list[Sample]:
    """(name, labels, value) of each sample whose name starts with one of `prefixes` (None: every sample).

    Malformed lines are skipped; a trailing timestamp is ignored. Labels come back unescaped, in dicts shared
    with the cache: read them, never mutate them.
    """
    out: list[Sample] = []
    for line in _lines(text, None if prefixes is None else tuple(prefixes)):
        line = line.rstrip()
        close = line.rfind("}")
        if close >= 0:
            head, rest = line[: close + 1], line[close + 1 :].split()
        else:
            parts = line.split()
            head, rest = (parts[0] if parts else ""), parts[1:]
        if not rest:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        nl = _heads.get(head, _MISS)
        if nl is _MISS:
            nl = _name_labels(head)
        if nl is not None:
            out.append((nl[0], nl[1], value))
    return out


# ---- histograms -----------------------------------------------------------------------------------------


def add_buckets(into: dict[float, float], samples: Iterable[Sample], name: str) -> None:
    """Sum the `NAME_bucket` samples (any labels) into `into` (upper bound -> cumulative count)."""
    bucket = name + "_bucket"
    for n, labels, v in samples:
        if n == bucket:
            le = labels.get("le")
            if le is None:
                continue
            try:
                bound = float(le)  # "+Inf" -> inf
            except ValueError:
                continue
            into[bound] = into.get(bound, 0.0) + v


def bucket_delta(now: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    """Per-bound increase between two cumulative snapshots; a counter reset counts from zero."""
    if not before:
        return dict(now)
    reset = any(now.get(b, 0.0) < v for b, v in before.items())
    return {b: v if reset else v - before.get(b, 0.0) for b, v in now.items()}


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram (bound -> count) the way PromQL's histogram_quantile
    computes it (linear within a bucket); None when it holds no observations."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return prev_bound
            if c == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (c - prev_count)
        prev_bound, prev_count = b, c
    return prev_bound


# ---- a pod's figures ------------------------------------------------------------------------------------

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"  # vLLM < 0.10
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
TIER_HITS = "llmd_sim:kv_tier_hits_total"  # per `medium` (CPU, DISK): prompt tokens loaded from the tier
TIER_USAGE = "llmd_sim:kv_tier_usage_perc"
TIER_BLOCKS = "llmd_sim:kv_tier_blocks"
REMOTE_PREFILL_HITS = "llmd_sim:remote_prefill_hits_total"
POD_PREFIXES = ("vllm:", "llmd_sim:")


@dataclass
class PodFigures:
    """Load, prefix-cache and KV-tier figures of one pod page; None/absent where the page lacks the metric.

    Samples of several engines (data parallel) add up; usage figures take the maximum.
    """

    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None
    prefix_queries: float | None = None  # tokens
    prefix_hits: float | None = None  # tokens
    tier_hits: dict[str, float] = field(default_factory=dict)  # medium as exported (CPU, DISK) -> tokens
    tier_usage: dict[str, float] = field(default_factory=dict)  # medium -> 0..1
    tier_blocks: dict[str, float] = field(default_factory=dict)  # medium -> blocks held
    remote_prefill_hits: float | None = None  # tokens whose KV came from a prefill pod

    @property
    def prefix_hit_rate(self) -> float | None:
        return (self.prefix_hits or 0.0) / self.prefix_queries if self.prefix_queries else None


def _add(a: float | None, v: float) -> float:
    return v if a is None else a + v


def pod_figures(samples: Iterable[Sample]) -> PodFigures:
    """The figures of `parse(text, POD_PREFIXES)` (or any superset of those samples)."""
    f = PodFigures()
    old_usage: float | None = None
    for name, labels, v in samples:
        if name == WAITING:
            f.waiting = _add(f.waiting, v)
        elif name == RUNNING:
            f.running = _add(f.running, v)
        elif name == KV_USAGE:
            f.kv_cache_usage = v if f.kv_cache_usage is None else max(f.kv_cache_usage, v)
        elif name == KV_USAGE_OLD:
            old_usage = v if old_usage is None else max(old_usage, v)
        elif name == PREFIX_QUERIES:
            f.prefix_queries = _add(f.prefix_queries, v)
        elif name == PREFIX_HITS:
            f.prefix_hits = _add(f.prefix_hits, v)
        elif name == REMOTE_PREFILL_HITS:
            f.remote_prefill_hits = _add(f.remote_prefill_hits, v)
        elif name in (TIER_HITS, TIER_USAGE, TIER_BLOCKS):
            medium = labels.get("medium")
            if not medium:
                continue
            if name == TIER_HITS:
                f.tier_hits[medium] = f.tier_hits.get(medium, 0.0) + v
            elif name == TIER_BLOCKS:
                f.tier_blocks[medium] = f.tier_blocks.get(medium, 0.0) + v
            else:
                f.tier_usage[medium] = max(f.tier_usage.get(medium, 0.0), v)
    if f.kv_cache_usage is None:
        f.kv_cache_usage = old_usage
    return f
