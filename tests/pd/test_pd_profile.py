"""`llmdctl up pd-disaggregation` end to end on loopback (2 prefill + 2 decode simulator pods, the router):
long uncached prompts are disaggregated, short or cached ones are not; the decode pod takes the transferred
blocks as remote hits instead of recomputing them; a dead prefill pool degrades to decode-only visibly."""

from __future__ import annotations

import time

import pytest

from tests.pd.stack import pod_metric, profile_up

pytestmark = pytest.mark.timeout(180)

MODEL = "sim-model"
THRESHOLD = 256  # the profile's prefix-based-pd-decider nonCachedTokens


def words(tag: str, n: int) -> str:
    return " ".join(f"{tag}w{i}" for i in range(n))


@pytest.fixture(scope="module")
def pd(tmp_path_factory):
    with profile_up("pd-disaggregation", tmp_path_factory.mktemp("pd-home")) as stack:
        yield stack


def _post(stack, rid: str, prompt: str, max_tokens: int = 4):
    with stack.client() as c:
        r = c.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": prompt, "max_tokens": max_tokens},
            headers={"x-request-id": rid},
        )
    assert r.status_code == 200, r.text
    return r


def _counters(url: str) -> dict[str, float]:
    names = (
        "llmd_sim:remote_prefill_hits_total",
        "llmd_sim:remote_prefill_requests_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
    )
    return {n.split(":")[1].removesuffix("_total"): pod_metric(url, n) for n in names}


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def test_long_uncached_prompt_is_disaggregated_and_decode_pulls_the_kv(pd):
    prefill = {p["url"].removeprefix("http://"): p for p in pd.pods("prefill")}
    decode = {p["url"].removeprefix("http://"): p for p in pd.pods("decode")}
    assert len(prefill) == 2 and len(decode) == 2
    before = {a: _counters(p["url"]) for a, p in {**prefill, **decode}.items()}

    r = _post(pd, "pd-long-1", words("pdlong", 333))
    prompt = r.json()["usage"]["prompt_tokens"]
    assert prompt > THRESHOLD * 2 and r.json()["usage"]["completion_tokens"] == 4
    d_addr, p_addr = r.headers["x-llmd-endpoint"], r.headers["x-llmd-prefill-endpoint"]
    assert d_addr in decode and p_addr in prefill

    # The decision stream says which pods served it and why.
    d = pd.decision("pd-long-1")
    assert d["chosen"] == {"decode": d_addr, "prefill": p_addr}
    assert d["profiles_run"] == ["decode", "prefill"]
    assert d["reason"].startswith(f"disaggregated: {prompt} non-cached prompt tokens >= nonCachedTokens {THRESHOLD}")
    assert d["pd"] == {"prefill": p_addr, "fallback": None} and d["served_by"] == d_addr

    after = {a: _counters(prefill.get(a, decode.get(a))["url"]) for a in before}
    pf, dc = _delta(before[p_addr], after[p_addr]), _delta(before[d_addr], after[d_addr])
    # Prefill pod: computed the whole prompt, emitted the one token llm-d's sidecar asks for.
    assert pf["prompt_tokens"] == prompt and pf["generation_tokens"] == 1
    # Decode pod: every prompt token but the last arrived as remote KV (vLLM's NIXL rule); none was a local
    # hit, so the tokens it computed are prompt - local hits - remote hits = 1, not the prompt.
    assert dc["remote_prefill_requests"] == 1
    assert dc["remote_prefill_hits"] == prompt - 1
    assert dc["prefix_cache_hits"] == 0
    assert dc["prompt_tokens"] - dc["prefix_cache_hits"] - dc["remote_prefill_hits"] == 1
    assert dc["generation_tokens"] == 4
    # The other pods did nothing.
    for a in before:
        if a not in (p_addr, d_addr):
            assert _delta(before[a], after[a])["prompt_tokens"] == 0
    assert pd.router_metric("llmd_router_pd_disaggregated_total") == 1


def test_cached_and_short_prompts_stay_on_the_decode_pod(pd):
    prompt_text = words("pdcache", 333)
    first = _post(pd, "pd-cache-1", prompt_text)
    assert "x-llmd-prefill-endpoint" in first.headers
    d_addr = first.headers["x-llmd-endpoint"]
    d_url = f"http://{d_addr}"
    time.sleep(0.3)  # the decode pod's KV events reach the router's index
    before = _counters(d_url)

    again = _post(pd, "pd-cache-2", prompt_text)
    assert "x-llmd-prefill-endpoint" not in again.headers
    assert again.headers["x-llmd-endpoint"] == d_addr  # the prefix scorer keeps it where the KV is
    prompt = again.json()["usage"]["prompt_tokens"]
    d = pd.decision("pd-cache-2")
    assert d["chosen"] == {"decode": d_addr, "prefill": None} and d["profiles_run"] == ["decode"]
    assert (
        d["reason"].startswith("decode-only: ")
        and f"< nonCachedTokens {THRESHOLD}" in d["reason"]
        and "cached on decode" in d["reason"]
    )
    delta = _delta(before, _counters(d_url))
    assert delta["remote_prefill_requests"] == 0  # no transfer this time: a local prefix hit
    assert delta["prefix_cache_hits"] >= prompt - 16

    short = _post(pd, "pd-short", "a short prompt")
    assert "x-llmd-prefill-endpoint" not in short.headers
    assert short.headers["x-llmd-endpoint"] in {p["url"].removeprefix("http://") for p in pd.pods("decode")}
    ds = pd.decision("pd-short")
    assert ds["chosen"]["prefill"] is None and ds["reason"].startswith("decode-only: ")
    assert f"non-cached prompt tokens < nonCachedTokens {THRESHOLD}" in ds["reason"]
    assert pd.router_metric("llmd_router_pd_fallbacks_total") == 0


def test_dead_prefill_pool_degrades_to_decode_only_visibly(pd):  # runs last: kills the prefill pods
    decode = {p["url"].removeprefix("http://") for p in pd.pods("decode")}
    pd.kill_component("sim-prefill")
    r = _post(pd, "pd-dead-1", words("pddead1", 333))
    assert r.headers["x-llmd-endpoint"] in decode and "x-llmd-prefill-endpoint" not in r.headers
    assert r.json()["usage"]["completion_tokens"] == 4
    d = pd.decision("pd-dead-1")
    # Either the prefill leg failed (the router had not yet noticed) or the router already knew: both say so.
    assert "fell back to decode-only" in d["reason"] or "no prefill endpoint available" in d["reason"]
    assert pd.router_metric("llmd_router_pd_fallbacks_total") >= 1

    # Once the scraper has marked the prefill pods unhealthy the decider still wants P/D: decode-only, counted.
    deadline = time.monotonic() + 15
    for i in range(100):
        r = _post(pd, f"pd-dead-2-{i}", words(f"pddead2x{i}", 333))
        assert r.headers["x-llmd-endpoint"] in decode and "x-llmd-prefill-endpoint" not in r.headers
        if "no prefill endpoint available" in pd.decision(f"pd-dead-2-{i}")["reason"]:
            break
        assert time.monotonic() < deadline, "the router never noticed the dead prefill pods"
        time.sleep(0.5)
    assert pd.router_metric("llmd_router_pd_fallbacks_total", 'reason="no_prefill_endpoint"') >= 1
    assert pd.router_metric("llmd_router_pd_fallbacks_total") >= 2
