"""`llmdctl demo kv-cache-wins --plan` on a short ladder: every cache-aware router (llm-d's approximate and
precise configs and the shipped profiles with load terms) beats the cache-blind ones (random, load) on hit
rate and on TTFT mean and p90, under KV pressure and rising load — where llm-d says cache-aware routing wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_live_demo_switches_its_own_stacks_router(monkeypatch) -> None:
    """A live demo's stack lives in a private run directory: switching its router must use that stack's admin
    key, not the one of $LLMDCTL_HOME (which the demo once sent, getting 401 on every live comparison)."""
    import asyncio

    import httpx

    from llmdctl.bench.runner import switch_router
    from llmdctl.demos.catalog import _live_stack

    monkeypatch.delenv("LLMD_ROUTER_ADMIN_KEY", raising=False)
    monkeypatch.setenv("LLMDCTL_HOME", "/nonexistent-llmdctl-home")

    async def switch(url: str, key: str | None) -> str:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await switch_router(client, url, "random", key)

    with _live_stack("inference-scheduling", 1, [], lambda _: None) as live:
        assert live.admin_key
        with pytest.raises(ValueError, match="401"):
            asyncio.run(switch(live.url, None))  # $LLMDCTL_HOME's key (none here) is not this stack's
        assert asyncio.run(switch(live.url, live.admin_key)) == "random"
