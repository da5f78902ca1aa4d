"""What one simulated pod's /metrics page costs to render: the classic text page routers scrape 20 times a
second per rank (its slow part reused for up to 250 ms), and the whole OpenMetrics page Prometheus asks for.

    python bench/bench_sim_metrics.py [--iterations 300]

Prints the page sizes and the median render time of each, after 50 finished requests were observed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_gpu.metrics import FinishedRequest, PodMetrics  # noqa: E402

OPENMETRICS = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args()
    stats = SimpleNamespace(
        num_running=3,
        num_waiting=1,
        kv_cache_usage=0.4,
        prefix_cache_queries_tokens=1000,
        prefix_cache_hits_tokens=400,
        num_preemptions=0,
        prompt_tokens_total=1000,
        generation_tokens_total=200,
    )
    pm = PodMetrics("m", lambda: stats)
    for i in range(50):
        pm.observe_ttft(0.01 * i)
        pm.observe_finished(0.5, "length", FinishedRequest(0.5, 0.01, 0.05, 0.4, 0.45, 100 + i, 16, 32, 16, 1))
    classic = pm.render()
    om, _ = pm.render_for(OPENMETRICS)
    print(
        f"classic page: {len(classic.splitlines())} lines, {len(classic)} bytes; "
        f"median render {_median_ms(pm.render, args.iterations):.3f} ms"
    )
    print(
        f"OpenMetrics page: {len(om.splitlines())} lines, {len(om)} bytes; "
        f"median render {_median_ms(lambda: pm.render_for(OPENMETRICS), args.iterations):.3f} ms"
    )


if __name__ == "__main__":
    main()
