"""Faults around a proxied request, with real simulator and router processes on loopback: a pod that dies
mid-stream ends the client's stream with an error event (not a clean-looking end), and a client that drops
a non-streaming request gets its generation aborted on the pod (issue 18, #5 and #6); a hung pod costs a
request at most the header timeout (it is retried elsewhere) and a pod answering 503 to everything is ejected
and put back once it recovers (issue 18, low)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.router.procs import MODEL, ROOT, ROUND_ROBIN_CONFIG, router, sim_group, sim_pods, wait_until, words

pytestmark = pytest.mark.timeout(90)


def _ready(rt) -> None:
    wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=1", timeout=2).status_code == 200, timeout=15)


def _pod_metric(address: str, name: str) -> float:
    text = httpx.get(f"http://{address}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_stream_cut_by_a_pod_crash_ends_with_an_error_event():
    # --crash-after 1: the pod serves one request, and the next one arriving kills its process at once
    with (
        sim_pods(1, events=False, time_scale=1.0, extra=["--crash-after", "1"]) as pod,
        router(pod.endpoint_entries()) as rt,
    ):
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


# ---- hung pods, 503 storms (issue 18, low): bounded waits, ejection, nothing lost ----------------------

STORM = ["--failure-injection-rate", "100", "--failure-types", "server_error"]


def _endpoint_row(rt, address: str) -> dict:
    rows = httpx.get(rt.url + "/debug/endpoints", headers=_ADMIN, timeout=5).json()["endpoints"]
    return next(r for r in rows if r["endpoint"] == address)


_ADMIN: dict[str, str] = {}


def _stream_ok(rt, prompt: str, timeout: float = 20) -> tuple[str, list[str]]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", rt.url + "/v1/completions", json=body, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        return r.headers["x-llmd-endpoint"], [line for line in r.iter_lines() if line.startswith("data: ")]


def test_requests_to_a_hung_pod_go_elsewhere_within_the_header_timeout_and_the_pod_is_excluded():
    with (
        sim_group(2, events=False) as (hung, good),
        router(
            hung.endpoint_entries() + good.endpoint_entries(), ROUND_ROBIN_CONFIG, args=["--header-timeout", "0.5"]
        ) as rt,
    ):
        wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=2", timeout=2).status_code == 200, timeout=15)
        os.kill(hung.proc.pid, signal.SIGSTOP)  # accepts connections (the kernel does), answers nothing
        try:
            for i in range(6):
                t0 = time.monotonic()
                served_by, events = _stream_ok(rt, words(f"hang{i}", 5))
                assert served_by == good.address() and events[-1] == "data: [DONE]"
                assert time.monotonic() - t0 < 3.0  # never the 600 s request timeout
            row = _endpoint_row(rt, hung.address())
            assert row["healthy"] is False, row
        finally:
            os.kill(hung.proc.pid, signal.SIGCONT)


def test_a_lone_hung_pod_answers_an_openai_error_not_a_600_s_wait():
    with sim_pods(1, events=False) as pod, router(pod.endpoint_entries(), args=["--header-timeout", "0.5"]) as rt:
        _ready(rt)
        os.kill(pod.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            r = httpx.post(
                rt.url + "/v1/completions",
                json={"model": MODEL, "prompt": "x", "max_tokens": 2, "stream": True},
                timeout=20,
            )
            assert time.monotonic() - t0 < 3.0
            assert r.status_code in (503, 504), r.text
            err = r.json()["error"]
            assert err["code"] == "upstream_error" and "within 0.5s" in err["message"], err
        finally:
            os.kill(pod.proc.pid, signal.SIGCONT)


def test_a_pod_answering_503_to_everything_is_ejected_and_put_back_once_it_recovers():
    with (
        sim_group(2, events=False, extras=[STORM, []]) as (storm, good),
        router(storm.endpoint_entries() + good.endpoint_entries(), ROUND_ROBIN_CONFIG) as rt,
    ):
        wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=2", timeout=2).status_code == 200, timeout=15)
        t0 = time.monotonic()
        for i in range(12):  # every request succeeds: a 503 is retried on the other pod
            served_by, events = _stream_ok(rt, words(f"storm{i}", 5))
            assert served_by == good.address() and events[-1] == "data: [DONE]"
        row = _endpoint_row(rt, storm.address())
        assert row["healthy"] is False and row["ejected_for_s"] > 0 and "answered 503" in row["reason"], row
        assert time.monotonic() - t0 < 5  # well within the 5 s ejection: it is still out
        # without ejection round-robin sends it every other request; ejected at its first 503 it gets no more
        assert _pod_metric(storm.address(), "llmd_sim:injected_failures_total") == 1
        # it recovers (a healthy server on its port); after the ejection it is back in rotation
        port = storm.port
        storm.kill()
        fixed = subprocess.Popen(
            [sys.executable, "-m", "sim_gpu", "serve", "--port", str(port), "--model", MODEL, "--time-scale", "0"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: _endpoint_row(rt, storm.address())["healthy"], timeout=15, interval=0.1)
            served = {_stream_ok(rt, words(f"back{i}", 5))[0] for i in range(4)}
            assert served == {storm.address(), good.address()}
        finally:
            fixed.terminate()
            fixed.wait(10)


def test_engine_tokenizer_leaves_a_pod_that_stopped_answering_at_once():
    """The soak's slow tail: requests tokenized on a hung pod waited the tokenizer's 5 s before the next pod; now
    the next pod is asked too after HEDGE_AFTER_S."""
    import asyncio

    from router_lite.tokenization import EngineTokenizer

    with sim_group(2, events=False) as (hung, good):
        os.kill(hung.proc.pid, signal.SIGSTOP)
        try:
            tok = EngineTokenizer(lambda: [hung.address(), good.address()])  # the hung pod first, as candidates come

            async def run() -> tuple[list[int], float]:
                t0 = time.monotonic()
                ids = await tok.encode_prompt(MODEL, "tokenize me please")
                await tok.aclose()
                return ids, time.monotonic() - t0

            ids, took = asyncio.run(run())
            assert ids and took < 2.5  # not the 5 s timeout on the hung pod
        finally:
            os.kill(hung.proc.pid, signal.SIGCONT)


def test_a_non_streaming_request_held_by_a_pod_that_stopped_answering_is_retried_elsewhere():
    # a non-streaming answer has no early headers to time out on: the request gives up once the pod has
    # answered no scrape or probe for --unresponsive-after, and (nothing sent yet) goes to the other pod
    with (
        sim_group(2, events=False) as (hung, good),
        router(
            hung.endpoint_entries() + good.endpoint_entries(), ROUND_ROBIN_CONFIG, args=["--unresponsive-after", "1.5"]
        ) as rt,
    ):
        wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=2", timeout=2).status_code == 200, timeout=15)
        os.kill(hung.proc.pid, signal.SIGSTOP)
        try:
            served = []
            for i in range(2):  # round robin: one of the two lands on the hung pod first
                t0 = time.monotonic()
                r = httpx.post(
                    rt.url + "/v1/completions",
                    json={"model": MODEL, "prompt": words(f"nh{i}", 5), "max_tokens": 3},
                    timeout=30,
                )
                assert r.status_code == 200, r.text
                assert time.monotonic() - t0 < 8.0  # not the 600 s request timeout
                served.append(r.headers["x-llmd-endpoint"])
            assert served == [good.address(), good.address()]
        finally:
            os.kill(hung.proc.pid, signal.SIGCONT)


def test_a_client_that_stalls_while_sending_its_body_gets_408():
    import json
    import socket

    with sim_pods(1, events=False) as pod, router(pod.endpoint_entries(), args=["--client-body-timeout", "1"]) as rt:
        _ready(rt)
        host, port = rt.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(
                b"POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                b'content-length: 100\r\n\r\n{"model": '
            )  # 10 of 100 bytes, then nothing (slowloris)
            t0 = time.monotonic()
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            took = time.monotonic() - t0
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), data[:200]
        assert json.loads(body)["error"]["code"] == "body_timeout"
        assert took < 5
