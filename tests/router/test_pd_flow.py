"""The router's two-step P/D flow against a real prefill pod and a real decode pod (simulator, loopback):
long uncached prompts are disaggregated (the decode pod pulls the KV instead of recomputing it), short ones
are not, and a failing or dead prefill pod degrades to decode-only visibly (metric + decision reason)."""

from __future__ import annotations

import httpx
import pytest

from tests.router.procs import MODEL, router, sim_group, words

pytestmark = pytest.mark.timeout(120)

PD_CONFIG = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: prefill-filter
  - type: decode-filter
  - type: precise-prefix-cache-scorer
  - type: queue-scorer
  - type: prefix-based-pd-decider
    parameters: {nonCachedTokens: 128}
  - type: disagg-profile-handler
    parameters: {prefillDeciderPluginName: prefix-based-pd-decider}
schedulingProfiles:
  - name: prefill
    plugins: [{pluginRef: prefill-filter}, {pluginRef: queue-scorer}]
  - name: decode
    plugins:
      - pluginRef: decode-filter
      - {pluginRef: precise-prefix-cache-scorer, weight: 2}
      - pluginRef: queue-scorer
"""


def _decisions(url: str, n: int) -> list[dict]:
    from router_lite.decisions import iter_decisions

    out = []
    for d in iter_decisions(url, history=n, timeout_s=2):
        out.append(d)
        if len(out) == n:
            break
    return out


def _sim_metric(address: str, name: str) -> float:
    text = httpx.get(f"http://{address}/metrics").text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name))


@pytest.fixture(scope="module")
def pd_pods():  # the last test kills the healthy prefill pod, so it runs last
    # [healthy prefill, decode, prefill that answers 503 to every completion]
    fail = ["--failure-injection-rate", "100", "--failure-types", "server_error"]
    with sim_group(3, role=["prefill", "decode", "prefill"], events=True, extras=[[], [], fail]) as sims:
        yield sims


def test_long_prompts_disaggregate_short_ones_do_not(pd_pods):
    prefill, decode, _ = pd_pods
    with router(prefill.endpoint_entries() + decode.endpoint_entries(), PD_CONFIG) as rt, rt.client() as c:
        long_prompt = words("pdlong", 150)  # several hundred tokens, none cached
        r = c.post("/v1/completions", json={"model": MODEL, "prompt": long_prompt, "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert r.headers["x-llmd-endpoint"] == decode.address()
        assert r.headers["x-llmd-prefill-endpoint"] == prefill.address()
        assert r.json()["usage"]["completion_tokens"] == 4
        # The decode pod was served from the remote prefill rather than recomputing the prompt.
        assert _sim_metric(decode.address(), "llmd_sim:remote_prefill_requests_total") == 1
        assert _sim_metric(decode.address(), "llmd_sim:remote_prefill_hits_total") > 128
        # Streaming works through the two steps too.
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": words("pdchat", 150)}],
            "max_tokens": 3,
            "stream": True,
        }
        with c.stream("POST", "/v1/chat/completions", json=body) as s:
            assert s.status_code == 200 and s.headers["x-llmd-prefill-endpoint"] == prefill.address()
            lines = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        short = c.post("/v1/completions", json={"model": MODEL, "prompt": "a short prompt", "max_tokens": 2})
        assert short.status_code == 200 and "x-llmd-prefill-endpoint" not in short.headers
        assert short.headers["x-llmd-endpoint"] == decode.address()
        d_long, d_chat, d_short = _decisions(rt.url, 3)
        assert d_long["chosen"] == {"decode": decode.address(), "prefill": prefill.address()}
        assert d_long["reason"].startswith("disaggregated") and d_long["pd"] == {
            "prefill": prefill.address(),
            "fallback": None,
        }
        assert d_long["profiles_run"] == ["decode", "prefill"]
        assert d_chat["chosen"]["prefill"] == prefill.address()
        assert d_short["chosen"]["prefill"] is None and d_short["reason"].startswith("decode-only")
        assert rt.metric("llmd_router_pd_disaggregated_total") == 2
        assert rt.metric("llmd_router_pd_fallbacks_total") == 0


def test_failing_prefill_falls_back_to_decode_only_visibly(pd_pods):
    _, decode, bad = pd_pods
    with router(bad.endpoint_entries() + decode.endpoint_entries(), PD_CONFIG) as rt, rt.client() as c:
        # `bad` answers 503 to every completion while /health and /metrics stay fine.
        r = c.post("/v1/completions", json={"model": MODEL, "prompt": words("pdfail", 150), "max_tokens": 2})
        assert r.status_code == 200 and r.headers["x-llmd-endpoint"] == decode.address()
        assert "x-llmd-prefill-endpoint" not in r.headers
        (d,) = _decisions(rt.url, 1)
        assert "fell back to decode-only" in d["reason"] and d["pd"]["fallback"]
        assert rt.metric("llmd_router_pd_fallbacks_total") == 1


def test_dead_prefill_pod_falls_back_visibly(pd_pods):
    prefill, decode, _ = pd_pods
    with router(prefill.endpoint_entries() + decode.endpoint_entries(), PD_CONFIG) as rt, rt.client() as c:
        prefill.kill()
        for i in range(2):  # before the scraper notices (prefill leg fails) and after (no prefill endpoint)
            r = c.post("/v1/completions", json={"model": MODEL, "prompt": words(f"pddead{i}", 150), "max_tokens": 2})
            assert r.status_code == 200 and r.headers["x-llmd-endpoint"] == decode.address()
            assert "x-llmd-prefill-endpoint" not in r.headers
        for d in _decisions(rt.url, 2):
            assert d["chosen"]["prefill"] is None or d["pd"]["fallback"]
            assert "fell back to decode-only" in d["reason"] or "no prefill endpoint" in d["reason"]
        assert rt.metric("llmd_router_pd_fallbacks_total") == 2
