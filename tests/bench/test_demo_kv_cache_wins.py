"""`llmdctl demo kv-cache-wins --plan` on a short ladder: every cache-aware router (llm-d's approximate and
precise configs and the shipped profiles with load terms) beats the cache-blind ones (random, load) on hit
rate and on TTFT mean and p90, under KV pressure and rising load — where llm-d says cache-aware routing wins."""

from __future__ import annotations

import json
from pathlib import Path

from llmdctl.demos.catalog import KV_WINS_ROUTERS, run_demo

BLIND = ("random", "load")


def test_kv_cache_wins_plan_ranks_cache_aware_routers_above_blind_ones(tmp_path: Path) -> None:
    res = run_demo("kv-cache-wins", tmp_path, lambda _: None, plan=True, time_scale=0.02)
    s = res.summaries
    assert set(s) == set(KV_WINS_ROUTERS) and {
        "inference-scheduling",
        "precise-prefix-cache",
        "predicted-latency",
    } <= set(s)
    for aware in (r for r in KV_WINS_ROUTERS if r not in BLIND):
        for blind in BLIND:
            assert s[aware]["pod_hit_rate"] > s[blind]["pod_hit_rate"] + 0.05, (
                aware,
                blind,
                s[aware]["pod_hit_rate"],
                s[blind]["pod_hit_rate"],
            )
            assert s[aware]["ttft_s"]["mean"] < s[blind]["ttft_s"]["mean"], (
                aware,
                blind,
                s[aware]["ttft_s"],
                s[blind]["ttft_s"],
            )
            assert s[aware]["ttft_s"]["p90"] < s[blind]["ttft_s"]["p90"], (
                aware,
                blind,
                s[aware]["ttft_s"],
                s[blind]["ttft_s"],
            )
    for precise in ("precise", "precise-prefix-cache"):  # the KV-event index: by a wide margin
        assert s[precise]["ttft_s"]["mean"] < 0.6 * min(s[b]["ttft_s"]["mean"] for b in BLIND), precise
    doc = json.loads((tmp_path / "kv-cache-wins.json").read_text())
    assert doc["mode"] == "plan" and (tmp_path / "kv-cache-wins.png").exists()
