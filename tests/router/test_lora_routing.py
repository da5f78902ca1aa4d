"""LoRA through real processes on loopback: simulated vLLM pods serving adapters (max_loras 1) behind the router.

lora-affinity-scorer reads `vllm:lora_requests_info` from the pods' /metrics: a request for an adapter goes to
the pod already running it, never to a pod whose only adapter slot is taken by another. The precise prefix
index hashes the adapter name into block hashes as the engine does, so cache hits stay within one adapter.
"""

from __future__ import annotations

import json

import httpx
import yaml

from tests.router.procs import PRECISE_CONFIG, router, sim_pods, wait_until, words

LORA_FLAGS = [
    "--enable-lora",
    "--lora-modules",
    "sql=org/sql-lora",
    "--lora-modules",
    "chat=org/chat-lora",
    "--enable-prompt-tokens-details",
]
AFFINITY_CONFIG = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: lora-affinity-scorer
  - type: queue-scorer
  - type: max-score-picker
schedulingProfiles:
  - name: default
    plugins:
      - {pluginRef: lora-affinity-scorer, weight: 1}
      - {pluginRef: queue-scorer, weight: 1}
      - {pluginRef: max-score-picker}
"""


def _decision(c: httpx.Client) -> dict:
    with c.stream("GET", "/debug/decisions", params={"history": 1}) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                return yaml.safe_load(line[5:])
    raise AssertionError("no decision")


def _long(c: httpx.Client, url: str, model: str):
    """A streamed request that keeps its adapter running on that pod until the stream is closed."""
    body = {"model": model, "prompt": words(model, 20), "max_tokens": 3000, "ignore_eos": True, "stream": True}
    return c.stream("POST", url + "/v1/completions", json=body)


def test_adapter_requests_prefer_the_pod_running_that_adapter():
    flags = [*LORA_FLAGS, "--max-loras", "1"]
    with (
        sim_pods(3, events=False, time_scale=1.0, extra=flags) as sims,
        router(sims.endpoint_entries(), AFFINITY_CONFIG) as r,
        r.client() as c,
        httpx.Client(timeout=30) as direct,
    ):
        pod = [sims.address(i) for i in range(3)]
        # A pod that never stepped has no vllm:lora_requests_info series yet (vLLM sets it per engine step), so
        # the scorer cannot see its free slot: one base-model request gives pod 2 its (empty) series.
        warm = direct.post(
            f"http://{pod[2]}/v1/completions", json={"model": "sim-model", "prompt": "x", "max_tokens": 1}
        )
        assert warm.status_code == 200
        with _long(direct, f"http://{pod[0]}", "sql") as s0, _long(direct, f"http://{pod[1]}", "chat") as s1:
            assert s0.status_code == 200 and s1.status_code == 200

            def active() -> dict[str, list[str]]:
                return {e["endpoint"]: e["lora_active"] for e in c.get("/debug/endpoints").json()["endpoints"]}

            wait_until(lambda: active() == {pod[0]: ["sql"], pod[1]: ["chat"], pod[2]: []}, timeout=10)
            for model, home in (("sql", pod[0]), ("chat", pod[1]), ("sql", pod[0]), ("chat", pod[1])):
                resp = c.post("/v1/completions", json={"model": model, "prompt": words("q", 30), "max_tokens": 4})
                assert resp.status_code == 200, resp.text
                assert resp.headers["x-llmd-endpoint"] == home
                d = _decision(c)
                assert d["lora"] == model
                scores = {x["endpoint"]: x["scores"]["lora-affinity-scorer"]["raw"] for x in d["candidates"]}
                other = pod[1] if home == pod[0] else pod[0]
                assert scores == {home: 1.0, pod[2]: 0.8, other: 0.0}  # loaded / free slot / slot taken
            base = c.post("/v1/completions", json={"model": "sim-model", "prompt": "hi", "max_tokens": 2})
            assert base.status_code == 200 and _decision(c)["lora"] is None


def test_precise_prefix_hits_stay_within_one_adapter():
    with (
        sim_pods(2, events=True, extra=[*LORA_FLAGS, "--max-loras", "2"]) as sims,
        router(sims.endpoint_entries(), PRECISE_CONFIG) as r,
        r.client() as c,
    ):
        prompt = words("shared", 120)

        def ask(model: str) -> tuple[str, int, dict]:
            resp = c.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 2})
            assert resp.status_code == 200, resp.text
            cached = resp.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            return resp.headers["x-llmd-endpoint"], cached, _decision(c)

        home, cached, _ = ask("sql")
        assert cached == 0

        def indexed() -> bool:
            d = ask("sql")[2]
            return any(x["prefix_match_blocks"] > 0 for x in d["candidates"] if x["endpoint"] == home)

        wait_until(indexed, timeout=10)  # the pod's KV events reached the router's index
        again, cached, d = ask("sql")
        assert again == home and cached > 0
        for model in ("chat", "sim-model"):  # same tokens, another adapter / the base model: nothing to reuse
            _, cached, d = ask(model)
            assert cached == 0
            assert all(x["prefix_match_blocks"] == 0 for x in d["candidates"]), json.dumps(d["candidates"])


def test_adapter_of_needs_known_base_models():
    from router_lite.lora import adapter_of
    from router_lite.types import Endpoint, EndpointMetrics

    cold = Endpoint("127.0.0.1", 1)
    warm = Endpoint("127.0.0.1", 2, metrics=EndpointMetrics(base_models={"base"}))
    assert adapter_of("sql", [cold]) is None  # nothing scraped yet: cannot tell an adapter from the base
    assert adapter_of("sql", [cold, warm]) == "sql"
    assert adapter_of("base", [warm]) is None
