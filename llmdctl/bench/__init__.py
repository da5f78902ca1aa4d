"""Benchmarks: workloads, load shapes, a streaming client, metrics and reports (`llmdctl bench`).

The pure parts (workloads, load, metrics) are shared with the offline planner (`llmdctl.plan`), so live and
simulated runs are generated and summarised the same way.
"""

from llmdctl.bench.load import LLMD_73_LADDER, LoadSpec, Stage, parse_stages, poisson_arrivals
from llmdctl.bench.metrics import SLO, RequestRecord, Summary, percentile, ratios, summarize
from llmdctl.bench.workloads import BenchRequest, SessionTracker, WorkloadSpec, generate

__all__ = [
    "LLMD_73_LADDER",
    "SLO",
    "BenchRequest",
    "LoadSpec",
    "RequestRecord",
    "SessionTracker",
    "Stage",
    "Summary",
    "WorkloadSpec",
    "generate",
    "parse_stages",
    "percentile",
    "poisson_arrivals",
    "ratios",
    "summarize",
]
