"""Faults around a proxied request, with real simulator and router processes on loopback: a pod that dies
mid-stream ends the client's stream with an error event (not a clean-looking end), and a client that drops
a non-streaming request gets its generation aborted on the pod (issue 18, #5 and #6)."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.router.procs import MODEL, router, sim_pods, wait_until, words

pytestmark = pytest.mark.timeout(90)


def _ready(rt) -> None:
    wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=1", timeout=2).status_code == 200, timeout=15)


def _pod_metric(address: str, name: str) -> float:
    text = httpx.get(f"http://{address}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_stream_cut_by_a_pod_crash_ends_with_an_error_event():
    # --crash-after 1: the pod serves one request, and the next one arriving kills its process at once
    with sim_pods(1, events=False, time_scale=1.0, extra=["--crash-after", "1"]) as pod, router(pod.endpoint_entries()) as rt:
        _ready(rt)
        body = {"model": MODEL, "prompt": words("cut", 20), "max_tokens": 2000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", rt.url + "/v1/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert '"choices"' in first
            with pytest.raises(httpx.HTTPError):  # the second request kills the pod mid-stream
                httpx.post(f"http://{pod.address()}/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=5)
            rest = [line for line in lines if line.startswith("data: ")]
        assert "data: [DONE]" not in rest
        assert rest and '"error"' in rest[-1] and "mid-stream" in rest[-1], rest[-3:]


def test_dropped_non_streaming_client_aborts_the_pod_generation():
    with sim_pods(1, events=False, time_scale=1.0) as pod, router(pod.endpoint_entries()) as rt:
        _ready(rt)
        body = {"model": MODEL, "prompt": words("drop", 20), "max_tokens": 2000, "ignore_eos": True}
        with pytest.raises(httpx.ReadTimeout):  # 2000 real-time decode steps take ~14 s; the client leaves at 1 s
            httpx.post(rt.url + "/v1/completions", json=body, timeout=httpx.Timeout(10, read=1.0))
        start = time.monotonic()
        while _pod_metric(pod.address(), "vllm:num_requests_running") and time.monotonic() - start < 8:
            time.sleep(0.1)
        assert _pod_metric(pod.address(), "vllm:num_requests_running") == 0
        assert _pod_metric(pod.address(), "vllm:generation_tokens_total") < 1000
