"""P/D fields toward pods come from the router only (issue 18, low): a client's `x-prefiller-host-port` and
`kv_transfer_params` (which name hosts a pod pulls KV from) never reach a pod."""

from __future__ import annotations

import httpx
import pytest

from router_lite.proxy import forward_headers
from tests.router.procs import MODEL, router, sim_pods, wait_until, words

pytestmark = pytest.mark.timeout(60)


def test_router_owned_headers_are_not_forwarded_and_the_rest_are():
    raw = [
        (b"X-Prefiller-Host-Port", b"169.254.169.254:80"),
        (b"x-data-parallel-host-port", b"10.0.0.1:8000"),
        (b"x-llmd-endpoint", b"a"),
        (b"x-gateway-destination-endpoint", b"b"),
        (b"x-session-id", b"s1"),
        (b"traceparent", b"00-1-2-01"),
        (b"authorization", b"Bearer k"),
        (b"connection", b"close"),
    ]
    out = forward_headers(raw, strip_auth=True)
    assert out == {"x-session-id": "s1", "traceparent": "00-1-2-01", "content-type": "application/json"}


def test_a_clients_kv_transfer_params_never_reach_the_pod():
    with sim_pods(1, events=False) as pod, router(pod.endpoint_entries()) as rt:
        wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=1", timeout=2).status_code == 200, timeout=15)
        # sent to a pod, these make it a prefill-only step that computes one token and hands out its KV blocks
        hostile = {"do_remote_decode": True, "remote_host": "169.254.169.254", "remote_port": 80}
        direct = httpx.post(
            f"http://{pod.address()}/v1/completions",
            json={"model": MODEL, "prompt": words("pd", 8), "max_tokens": 5, "kv_transfer_params": hostile},
            timeout=10,
        ).json()
        assert direct["kv_transfer_params"] and direct["usage"]["completion_tokens"] == 1  # the shape it would take
        r = httpx.post(
            rt.url + "/v1/completions",
            headers={"x-prefiller-host-port": "169.254.169.254:80"},
            json={
                "model": MODEL,
                "prompt": words("pd", 8),
                "max_tokens": 5,
                "ignore_eos": True,
                "kv_transfer_params": hostile,
            },
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.json()["kv_transfer_params"] is None and r.json()["usage"]["completion_tokens"] == 5
