"""router_lite.promtext on the simulator's real /metrics output: the one parser and pod-figures reader."""

from __future__ import annotations

import math

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router_lite import promtext
from sim_gpu.engine.request import EngineStats
from sim_gpu.metrics import PodMetrics
from sim_gpu.tiers import TierFigures
from tests.sim.simproc import sim_server


def _full_parse(text: str) -> list[promtext.Sample]:
    return [(s.name, dict(s.labels), float(s.value)) for f in text_string_to_metric_families(text) for s in f.samples]


def _same(a: list[promtext.Sample], b: list[promtext.Sample]) -> bool:
    key = lambda s: (s[0], sorted(s[1].items()))  # noqa: E731
    return sorted(a, key=key) == sorted(b, key=key)


@pytest.fixture(scope="module")
def sim_page() -> str:
    """A live simulator's /metrics after two completions (so counters and TTFT buckets are non-zero)."""
    with sim_server("--model", "m", "--max-model-len", "256", "--block-size", "16", "--num-gpu-blocks", "64") as s:
        with httpx.Client(timeout=10) as c:
            for _ in range(2):
                r = c.post(s.base + "/v1/completions", json={"prompt": "hello " * 40, "max_tokens": 2})
                assert r.status_code == 200
            return c.get(s.base + "/metrics").text


def test_parse_agrees_with_prometheus_client_on_a_sim_page(sim_page: str) -> None:
    assert _same(promtext.parse(sim_page), _full_parse(sim_page))
    wanted = promtext.parse(sim_page, ("vllm:prefix_cache_", "vllm:num_requests_"))
    assert {n for n, _, _ in wanted} == {
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_created",
        "vllm:prefix_cache_hits_created",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:num_requests_waiting_by_reason",  # a longer name under the same prefix (vLLM 0.32 exports it)
    }
    assert _same(
        wanted, [s for s in _full_parse(sim_page) if s[0].startswith(("vllm:prefix_cache_", "vllm:num_requests_"))]
    )


def test_pod_figures_and_ttft_quantile_of_a_sim_page(sim_page: str) -> None:
    full = _full_parse(sim_page)
    value = lambda name: sum(v for n, _, v in full if n == name)  # noqa: E731
    f = promtext.pod_figures(promtext.parse(sim_page, promtext.POD_PREFIXES))
    assert (f.waiting, f.running) == (0.0, 0.0)
    assert f.prefix_queries == value("vllm:prefix_cache_queries_total") > 0
    assert f.prefix_hits == value("vllm:prefix_cache_hits_total") > 0  # the second prompt hit the first's blocks
    assert f.prefix_hit_rate == f.prefix_hits / f.prefix_queries
    assert f.kv_cache_usage == value("vllm:kv_cache_usage_perc")
    assert f.remote_prefill_hits == 0.0 and f.tier_hits == f.tier_usage == f.tier_blocks == {}  # no tiers configured
    buckets: dict[float, float] = {}
    promtext.add_buckets(
        buckets, promtext.parse(sim_page, ("vllm:time_to_first_token",)), "vllm:time_to_first_token_seconds"
    )
    assert buckets[math.inf] == 2
    p50 = promtext.quantile(0.5, buckets)
    assert p50 is not None and 0 < p50 <= min(b for b, c in buckets.items() if c >= 1)


def _tier_page(engine: int, waiting: int, usage: float) -> str:
    stats = EngineStats(
        num_running=1,
        num_waiting=waiting,
        kv_cache_usage=usage,
        prefix_cache_queries_tokens=100,
        prefix_cache_hits_tokens=40,
        num_preemptions=0,
        prompt_tokens_total=100,
        generation_tokens_total=5,
        num_gpu_blocks=64,
        block_size=16,
    )
    tiers = TierFigures(
        hit_tokens={"CPU": 32, "DISK": 16},
        blocks={"CPU": 4, "DISK": 9},
        capacity={"CPU": 8, "DISK": 100},
        stored={"CPU": 4, "DISK": 9},
        evicted={"CPU": 0, "DISK": 0},
        load_s=0.1,
        loads=2,
        dropped=0,
        bad_reads=0,
        fs={"corrupt": 0},
        fs_paused=False,
    )
    pm = PodMetrics("m", lambda: stats, engine_index=engine, tiers_fn=lambda: tiers)
    pm.count_remote_prefill(48)
    return pm.render().decode()


def test_pod_figures_reads_the_sims_tier_metrics_by_exact_name() -> None:
    page = _tier_page(0, 3, 0.5)
    assert _same(promtext.parse(page), _full_parse(page))
    f = promtext.pod_figures(promtext.parse(page, promtext.POD_PREFIXES))
    assert f.tier_hits == {"CPU": 32.0, "DISK": 16.0}
    assert f.tier_blocks == {"CPU": 4.0, "DISK": 9.0}
    assert f.tier_usage == {"CPU": 0.5, "DISK": 0.09}
    assert (f.waiting, f.running, f.kv_cache_usage, f.remote_prefill_hits) == (3.0, 1.0, 0.5, 48.0)
    # two data-parallel engines on one page: counts add up, usage takes the larger
    f2 = promtext.pod_figures(promtext.parse(page + _tier_page(1, 2, 0.75), promtext.POD_PREFIXES))
    assert (f2.waiting, f2.kv_cache_usage, f2.prefix_queries, f2.tier_hits["CPU"], f2.tier_usage["CPU"]) == (
        5.0,
        0.75,
        200.0,
        64.0,
        0.5,
    )


def test_parse_edge_cases() -> None:
    text = (
        '# HELP vllm:x y\nvllm:a{l="a}b",m="q\\"r"} 1 1700000000000\nvllm:b NaN\nvllm:broken{\nvllm:c{x="1"} nope\n'
        "vllm:d +Inf"
    )
    got = promtext.parse(text, ("vllm:", "vllm:a"))  # overlapping prefixes: each line once, page order
    assert [(n, lab) for n, lab, _ in got] == [("vllm:a", {"l": "a}b", "m": 'q"r'}), ("vllm:b", {}), ("vllm:d", {})]
    assert got[0][2] == 1.0 and math.isnan(got[1][2]) and got[2][2] == math.inf
    assert promtext.parse("", ("vllm:",)) == [] and promtext.parse("") == []
    old = promtext.pod_figures(promtext.parse('vllm:gpu_cache_usage_perc{model_name="m"} 0.75\n'))
    assert old.kv_cache_usage == 0.75 and old.waiting is None and old.prefix_hit_rate is None
    assert promtext.bucket_delta({1.0: 5, math.inf: 7}, {1.0: 2, math.inf: 3}) == {1.0: 3, math.inf: 4}
    assert promtext.bucket_delta({1.0: 1, math.inf: 1}, {1.0: 2, math.inf: 3}) == {1.0: 1, math.inf: 1}  # reset


def test_status_bench_and_tui_read_the_same_figures() -> None:
    from llmdctl.local.stack import pod_status_metrics
    from llmdctl.tui.model import _pod_figures

    page = _tier_page(0, 3, 0.5)
    assert pod_status_metrics(page) == {
        "waiting": 3.0,
        "running": 1.0,
        "kv_usage": 0.5,
        "prefix_queries": 100.0,
        "prefix_hits": 40.0,
        "prefix_hit_rate": 0.4,
        "tier_cpu_hits": 32.0,
        "tier_disk_hits": 16.0,
        "tier_cpu_usage": 0.5,
        "tier_disk_usage": 0.09,
        "tier_cpu_blocks": 4.0,
        "tier_disk_blocks": 9.0,
    }
    assert pod_status_metrics("") == {}
    tui = _pod_figures(promtext.parse(page, promtext.POD_PREFIXES))
    assert tui["tiers"] == {"CPU": {"hits": 32.0, "occupancy": 0.5}, "DISK": {"hits": 16.0, "occupancy": 0.09}}
    assert (tui["running"], tui["waiting"], tui["kv"], tui["queries"], tui["hits"]) == (1.0, 3.0, 0.5, 100.0, 40.0)
