"""The simulator's /metrics against vLLM 0.32's families (tests/fixtures/vllm_metric_families.json): every family
there with its type and labels, `_created` series, OpenMetrics when the scraper asks for it (as Prometheus
does), and KV-tier loads counted as vLLM counts a KV connector's hits."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.sim.simproc import sim_server

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "vllm_metric_families.json").read_text())["families"]
OPENMETRICS = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"  # what Prometheus 3 asks for first
BS = 16


@pytest.fixture(scope="module")
def server():
    tiers = json.dumps({"cpu_blocks": 64})
    with sim_server(
        "--model",
        "m",
        "--time-scale",
        "0",
        "--max-model-len",
        "512",
        "--num-gpu-blocks",
        "20",
        "--block-size",
        str(BS),
        "--kv-tiers",
        tiers,
    ) as s:
        yield s


def _complete(client: httpx.Client, base: str, prompt: list[int]) -> dict:
    r = client.post(
        f"{base}/v1/completions", json={"model": "m", "prompt": prompt, "max_tokens": 3, "ignore_eos": True}
    )
    assert r.status_code == 200, r.text
    return r.json()


def _scrape(client: httpx.Client, base: str) -> dict:
    r = client.get(f"{base}/metrics", headers={"accept": OPENMETRICS})
    assert r.headers["content-type"].startswith("application/openmetrics-text"), r.headers
    return {f.name: f for f in parse_openmetrics(r.text)}


def _value(families: dict, name: str, sample: str | None = None) -> float:
    fam = families[name]
    return sum(s.value for s in fam.samples if s.name == (sample or name))


def test_families_types_and_labels_cover_vllms(server):
    with httpx.Client(timeout=10) as client:
        _complete(client, server.base, list(range(100, 140)))
        families = _scrape(client, server.base)
    missing = sorted(set(FIXTURE) - set(families))
    assert not missing, f"vLLM families the simulator lacks: {missing}"
    for name, want in FIXTURE.items():
        fam = families[name]
        assert fam.type == want["type"], (name, fam.type)
        labels = {k for s in fam.samples for k in s.labels if k not in ("le", "quantile")}
        if fam.samples and want["labels"]:
            assert labels == set(want["labels"]), (name, labels)
    counters = [n for n, w in FIXTURE.items() if w["type"] == "counter" and n.startswith("vllm:")]
    for name in counters:  # vLLM's counters carry a _created series
        assert any(s.name == f"{name}_created" for s in families[name].samples), name
    assert (
        _value(families, "vllm:request_prompt_tokens", "vllm:request_prompt_tokens_sum") == 40
    )  # token ids: no BOS added
    assert _value(families, "vllm:request_queue_time_seconds", "vllm:request_queue_time_seconds_count") == 1


def test_classic_text_by_default_and_openmetrics_on_request(server):
    with httpx.Client(timeout=10) as client:
        plain = client.get(f"{server.base}/metrics")
        om = client.get(f"{server.base}/metrics", headers={"accept": OPENMETRICS})
    assert plain.headers["content-type"].startswith("text/plain")
    assert "# TYPE vllm:prompt_tokens_total counter" in plain.text  # prometheus_client's classic format
    assert "# TYPE vllm:prompt_tokens counter" in om.text and "# TYPE vllm:prompt_tokens_total" not in om.text
    assert om.text.rstrip().endswith("# EOF")
    assert {f.name for f in parse_text(plain.text)} >= {"vllm:prompt_tokens", "http_requests", "process_cpu_seconds"}


def test_a_cpu_tier_load_raises_external_prefix_cache_hits(server):
    with httpx.Client(timeout=10) as client:
        before = _scrape(client, server.base)
        prompt = list(range(1000, 1000 + 4 * BS + 1))
        _complete(client, server.base, prompt)
        for i in range(6):  # push the prompt's blocks out of the 20-block GPU into the CPU tier
            _complete(client, server.base, list(range(5000 + 100 * i, 5000 + 100 * i + 4 * BS + 1)))
        _complete(client, server.base, prompt)
        after = _scrape(client, server.base)
    tier = "llmd_sim:kv_tier_hits"
    gained = _value(after, tier, f"{tier}_total") - _value(before, tier, f"{tier}_total")
    ext = "vllm:external_prefix_cache_hits"
    assert gained > 0
    assert _value(after, ext, f"{ext}_total") - _value(before, ext, f"{ext}_total") == gained
    q = "vllm:external_prefix_cache_queries"
    assert _value(after, q, f"{q}_total") > _value(before, q, f"{q}_total")
    http = after["http_requests"]
    assert any(
        s.labels == {"handler": "/v1/completions", "method": "POST", "status": "2xx"} and s.value >= 8
        for s in http.samples
        if s.name == "http_requests_total"
    )
