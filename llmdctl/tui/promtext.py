"""A small, fast reader of Prometheus text exposition for the few metric families the TUI shows.

The TUI scrapes every pod once a second; `prometheus_client`'s parser builds objects for every family, while
this one skips unwanted lines after a prefix check. Histograms come back as cumulative `le -> count` maps,
which `quantile` turns into p50/p90 the way PromQL's histogram_quantile does (linear within a bucket).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

Sample = tuple[str, dict[str, str], float]

_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str, prefixes: tuple[str, ...]) -> list[Sample]:
    """Samples whose metric name starts with one of `prefixes` (comments and other families skipped)."""
    out: list[Sample] = []
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(prefixes):
            continue
        brace = line.find("{")
        if brace >= 0:
            close = line.rfind("}")
            if close < brace:
                continue
            name = line[:brace]
            labels = dict(_LABEL.findall(line[brace + 1 : close]))
            rest = line[close + 1 :].split()
        else:
            parts = line.split()
            if len(parts) < 2:
                continue
            name, labels, rest = parts[0], {}, parts[1:]
        if not rest:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        out.append((name, labels, value))
    return out


def add_buckets(into: dict[float, float], samples: Iterable[Sample], name: str) -> None:
    """Sum the `NAME_bucket` samples (any labels) into `into` (upper bound -> cumulative count)."""
    bucket = name + "_bucket"
    for n, labels, v in samples:
        if n == bucket:
            le = labels.get("le")
            if le is None:
                continue
            bound = math.inf if le in ("+Inf", "Inf", "inf") else float(le)
            into[bound] = into.get(bound, 0.0) + v


def bucket_delta(now: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    """Per-bound increase between two cumulative snapshots; a counter reset counts from zero."""
    if not before:
        return dict(now)
    out = {}
    reset = any(now.get(b, 0.0) < v for b, v in before.items())
    for b, v in now.items():
        out[b] = v if reset else v - before.get(b, 0.0)
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram (bounds -> counts), None when it holds no observations."""
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
