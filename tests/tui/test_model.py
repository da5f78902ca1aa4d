"""The TUI's pure core: decision reduction, bounded feed, pod figures, chart series, Prometheus parsing."""

from __future__ import annotations

import math

from llmdctl.tui.model import Model, decision_row
from router_lite import promtext
from tests.tui.decisions import PODS, cand, decision, endpoints_doc, pod_metrics


def test_decision_row_compares_chosen_pod_with_best_alternative() -> None:
    d = decision(
        "r1",
        PODS[1],
        [cand(PODS[1], 40, 6.9, prefix=1.0), cand(PODS[0], 12, 4.3, prefix=0.3), cand(PODS[2], 0, 4.0, prefix=0.0)],
    )
    row = decision_row(d)
    assert (row.served_by, row.matched, row.best_alt, row.best_alt_endpoint) == (PODS[1], 40, 12, PODS[0])
    assert dict(row.scores) == {"queue": 2.0, "kv-cache-utilization": 1.98, "precise-prefix-cache": 3.0}
    assert row.prompt_tokens == 800 and row.scheduling_ms == 0.123


def test_decision_row_without_prefix_scorer_has_no_match_figures() -> None:
    d = decision(
        "r2",
        PODS[0],
        [
            {
                "endpoint": PODS[0],
                "role": "both",
                "scores": {},
                "total": 0.0,
                "prefix_match_blocks": 0,
                "profile": "default",
            }
        ],
    )
    row = decision_row(d)
    assert row.matched is None and row.best_alt is None and row.scores == []


def test_decision_row_for_pd_takes_the_decode_profile_candidate() -> None:
    p, dec = "127.0.0.1:7001", "127.0.0.1:7002"
    d = decision(
        "r3",
        dec,
        [
            cand(p, 30, 5.0, profile="prefill", role="prefill", prefix=0.8),
            cand(dec, 5, 4.0, profile="decode", role="decode", prefix=0.1),
            cand("127.0.0.1:7003", 9, 3.0, profile="decode", role="decode", prefix=0.2),
        ],
        prefill=p,
    )
    row = decision_row(d)
    assert row.prefill == p and row.decode == dec
    assert (row.matched, row.best_alt, row.best_alt_endpoint) == (5, 9, "127.0.0.1:7003")
    assert set(row.pods) == {p, dec}


def test_feed_is_a_bounded_ring_and_filters_by_pod() -> None:
    m = Model(feed_cap=50)
    for i in range(1000):
        m.ingest_decision(decision(f"r{i}", PODS[i % 3], [cand(PODS[i % 3], 1, 1.0, prefix=0.1)]))
    assert len(m.feed) == 50 and m.decisions_total == 1000
    newest = m.rows(limit=5)
    assert [r.request_id for r in newest] == ["r999", "r998", "r997", "r996", "r995"]
    only = m.rows(PODS[0], limit=100)
    assert only and all(r.served_by == PODS[0] for r in only) and len(only) == 17  # 50 kept, every third
    m.ingest_poll(endpoints_doc(), None, {})
    assert sum(p.routed for p in m.pods.values()) == 50  # routed counts follow the ring, not all history


def test_malformed_decisions_are_counted_not_raised() -> None:
    m = Model()
    assert m.ingest_decision({"request_id": "x", "prompt_tokens": "many"}) is None
    assert m.decisions_bad == 1 and len(m.feed) == 0


def test_pod_hit_rates_from_token_counters_survive_a_restart() -> None:
    m = Model()
    doc = endpoints_doc(PODS[:1])
    m.ingest_poll(doc, None, {PODS[0]: pod_metrics(1000, 500)}, now=0.0)
    pod = m.pods[PODS[0]]
    assert pod.hit_rate == 0.5 and pod.from_pod and (pod.running, pod.waiting, pod.kv_usage) == (2, 1, 0.25)
    m.ingest_poll(doc, None, {PODS[0]: pod_metrics(2000, 1400)}, now=1.0)
    assert math.isclose(pod.hit_rate_recent, 0.9)  # (1400-500)/(2000-1000)
    assert math.isclose(m.series.hit_rate[-1], 0.9)
    m.ingest_poll(doc, None, {PODS[0]: pod_metrics(100, 100)}, now=2.0)  # pod restarted: counters reset
    assert m.series.hit_rate[-1] is not None and 0.0 < m.series.hit_rate[-1] <= 1.0
    m.ingest_poll(doc, None, {PODS[0]: None}, now=3.0)  # pod unreachable: the router's view, no hit rate
    assert not pod.from_pod and pod.hit_rate is None and pod.running == 1


def test_ttft_quantiles_and_request_rate_from_deltas() -> None:
    m = Model()
    doc = endpoints_doc(PODS[:2])
    before = {"0.01": 0, "0.1": 0, "1.0": 0, "+Inf": 0}
    after = {"0.01": 0, "0.1": 10, "1.0": 10, "+Inf": 10}
    router = 'llmd_router_requests_total{route="/v1/completions",status="200"} %d\n'
    m.ingest_poll(
        doc, router % 100, {PODS[0]: pod_metrics(0, 0, ttft=before), PODS[1]: pod_metrics(0, 0, ttft=before)}, now=0.0
    )
    m.ingest_poll(
        doc, router % 120, {PODS[0]: pod_metrics(0, 0, ttft=after), PODS[1]: pod_metrics(0, 0, ttft=after)}, now=2.0
    )
    assert m.series.req_rate[-1] == 10.0
    assert math.isclose(m.series.ttft_p50[-1], 0.055)  # 20 observations in (0.01, 0.1]: linear within it
    assert m.series.hit_rate[-1] is None  # no queries: no rate rather than a fake zero


def test_series_are_bounded() -> None:
    m = Model(series_len=10)
    doc = endpoints_doc(PODS[:1])
    for i in range(100):
        m.ingest_poll(doc, None, {PODS[0]: pod_metrics(i * 10, i * 5)}, now=float(i))
    assert len(m.series.hit_rate) == 10 and len(m.series.req_rate) == 10


def test_tiers_appear_when_pods_report_them() -> None:
    m = Model()
    extra = (
        'llmd_sim:kv_tier_usage_perc{medium="CPU"} 0.4\nllmd_sim:kv_tier_hits_total{medium="CPU"} 1200\n'
        'llmd_sim:kv_tier_hits_total{medium="DISK"} 300\nllmd_sim:kv_tier_blocks{medium="DISK"} 7\n'
    )
    m.ingest_poll(endpoints_doc(PODS[:1]), None, {PODS[0]: pod_metrics(10, 5, extra=extra)})
    assert m.pods[PODS[0]].tiers == {"CPU": {"occupancy": 0.4, "hits": 1200.0}, "DISK": {"hits": 300.0}}


def test_promtext_parses_labels_and_skips_other_families() -> None:
    text = '# HELP x y\nfoo_total 3\nvllm:a{l="x,y=\\"z\\"",m="2"} 1.5\nvllm:b 2e3\nvllm:broken{\n'
    assert promtext.parse(text, ("vllm:",)) == [("vllm:a", {"l": 'x,y="z"', "m": "2"}, 1.5), ("vllm:b", {}, 2000.0)]
    assert promtext.quantile(0.5, {}) is None
    assert math.isclose(promtext.quantile(0.9, {0.1: 0, 1.0: 10, math.inf: 10}), 0.91)


def test_scheduler_is_named_after_the_shipped_profile_it_matches() -> None:
    import yaml

    from llmdctl.tui.app import profile_config
    from llmdctl.tui.subscriber import scheduler_name
    from tests.router.procs import APPROX_CONFIG

    for name in ("round-robin", "inference-scheduling", "precise-prefix-cache", "pd-disaggregation"):
        assert scheduler_name(profile_config(name)) == name
    assert scheduler_name(yaml.safe_load(APPROX_CONFIG)) == "custom (active-request, prefix-cache, queue)"


def test_data_parallel_ranks_are_rows_of_their_own() -> None:
    m = Model()
    doc = {
        "endpoints": [
            {"endpoint": f"127.0.0.1:{9100 + r}", "name": n, "dp_rank": r, "healthy": True}
            for r, n in enumerate(["ep-0-r0", "ep-0-r1", "wide", "wide"])
        ]
    }
    m.ingest_poll(doc, None, {})
    assert [p.label for p in m.pods.values()] == ["ep-0-r0", "ep-0-r1", "wide r2", "wide r3"]


def test_decision_detail_shows_predicted_and_actual_latency_and_the_error() -> None:
    from rich.console import Console

    from llmdctl.tui.feed import decision_detail

    m = Model()
    cands = [
        {**cand(PODS[0], 3, 1.0), "predicted": {"ttft_ms": 120.0, "tpot_ms": 9.5}},
        {**cand(PODS[1], 0, 0.4), "predicted": {"ttft_ms": 310.0, "tpot_ms": 11.0}},
    ]
    m.ingest_decision(decision("r7", PODS[0], cands))
    doc = endpoints_doc()
    doc["predictors"] = {
        "predicted-latency-producer": {
            "ttft_error_after_warmup": {"n": 40, "median": 0.12, "p90": 0.35},
            "tpot_error_after_warmup": {"n": 38, "median": 0.08, "p90": 0.2},
            "recent": [
                {
                    "request_id": "r7",
                    "endpoint": PODS[0],
                    "predicted_ttft_ms": 120.0,
                    "ttft_ms": 134.0,
                    "predicted_tpot_ms": 9.5,
                    "tpot_ms": 10.25,
                }
            ],
        }
    }
    m.ingest_poll(doc, None, {})
    con = Console(width=200, record=True)
    con.print(decision_detail(m.find("r7"), m))
    text = con.export_text()
    assert "120 ms" in text and "310 ms" in text  # predicted, per candidate
    assert "134 ms / 10.2 ms" in text  # actual, on the pod that served it
    assert "TTFT median 12% p90 35% (n=40)" in text and "TPOT median 8% p90 20% (n=38)" in text


def test_decision_detail_shows_the_encode_leg_and_the_adapter() -> None:
    from rich.console import Console

    from llmdctl.tui.feed import decision_detail

    m = Model()
    enc, dec = "127.0.0.1:7009", PODS[0]
    d = decision("r9", dec, [cand(dec, 0, 1.0, profile="decode", role="decode")])
    d["chosen"]["encode"] = enc
    d["epd"] = {"encode": enc, "fallback": None, "ms": 41.5}
    d["lora"] = "sql-lora"
    row = m.ingest_decision(d)
    con = Console(width=200, record=True, file=open("/dev/null", "w"))
    con.print(decision_detail(row, m))
    text = con.export_text()
    assert f"encode {m.pod_name(enc)}" in text and '"ms": 41.5' in text and "sql-lora" in text
