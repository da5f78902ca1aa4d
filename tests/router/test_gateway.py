"""The gateway's HTTP surface against real simulator pods on loopback: pass-through, errors, decisions,
live config switch, API key, admission, endpoint discovery."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import yaml

from tests.helpers_configs import shipped_configs_dir
from tests.router.procs import MODEL, PRECISE_CONFIG, ROUND_ROBIN_CONFIG, router, sim_pods, wait_until, words

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pods():
    with sim_pods(2) as p:
        yield p


@pytest.fixture(scope="module")
def rt(pods):
    with router(pods.endpoint_entries(), PRECISE_CONFIG, ["--max-body-bytes", "65536"]) as r:
        yield r


def _error_ok(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


def test_completion_and_chat_pass_through(rt, pods):
    addrs = {pods.address(0), pods.address(1)}
    with rt.client() as c:
        r = c.post("/v1/completions", json={"model": MODEL, "prompt": words("a", 40), "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert r.headers["x-llmd-endpoint"] in addrs
        assert r.json()["choices"][0]["text"]
        assert r.json()["usage"]["completion_tokens"] == 4
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": words("b", 30)}],
            "max_tokens": 5,
            "stream": True,
        }
        with c.stream("POST", "/v1/chat/completions", json=body) as s:
            assert s.status_code == 200
            assert s.headers["x-llmd-endpoint"] in addrs
            assert s.headers["content-type"].startswith("text/event-stream")
            events = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        assert chunks[0]["object"] == "chat.completion.chunk"
        assert sum(1 for ch in chunks if ch["choices"] and ch["choices"][0]["delta"].get("content")) == 5
        raw = json.dumps({"model": MODEL, "prompt": "no content type", "max_tokens": 1}).encode()
        assert c.post("/v1/completions", content=raw, headers={"expect": "100-continue"}).status_code == 200
        models = c.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == [MODEL]
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["healthy_endpoints"] == 2
        metrics = c.get("/metrics").text
        assert 'llmd_router_requests_total{route="/v1/completions",status="200"}' in metrics
        assert "llmd_router_scheduling_latency_seconds_bucket" in metrics


def test_malformed_input_gets_openai_400s(rt):
    bad = [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (json.dumps({"prompt": "x"}).encode(), "model"),
        (json.dumps({"model": "", "prompt": "x"}).encode(), "model"),
        (json.dumps({"model": MODEL}).encode(), "prompt"),
        (json.dumps({"model": MODEL, "prompt": {"a": 1}}).encode(), "prompt"),
        (json.dumps({"model": MODEL, "prompt": "x", "stream": "yes"}).encode(), "stream"),
        (b"\xff\xfe\x00garbage", None),
        (b'{"model": "m", "prompt": "x", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),  # issue 18: was a 500
        (
            json.dumps({"model": MODEL, "prompt": "x", "n": 1_000_000_000}).encode(),
            "n",
        ),  # issue 18: never reaches a pod
    ]
    with rt.client() as c:
        for raw, param in bad:
            err = _error_ok(c.post("/v1/completions", content=raw, headers={"content-type": "application/json"}), 400)
            if param:
                assert err["param"] == param, (raw, err)
        for body, param in [
            ({"model": MODEL}, "messages"),
            ({"model": MODEL, "messages": []}, "messages"),
            ({"model": MODEL, "messages": ["hi"]}, "messages"),
        ]:
            assert _error_ok(c.post("/v1/chat/completions", json=body), 400)["param"] == param
        huge = {"model": MODEL, "prompt": "x" * 70_000}
        assert "limit" in _error_ok(c.post("/v1/completions", json=huge), 413)["message"]
        err = _error_ok(
            c.post("/v1/completions", json={"model": MODEL, "prompt": "x"}, headers={"x-llmd-priority": "high"}), 400
        )
        assert err["param"] == "x-llmd-priority"
        _error_ok(c.get("/v1/nothing-here"), 404)
        _error_ok(c.get("/v1/completions"), 405)
        # Still serving after all that.
        assert (
            c.post("/v1/completions", json={"model": MODEL, "prompt": "still alive", "max_tokens": 1}).status_code
            == 200
        )
    assert rt.proc.poll() is None


def test_decisions_stream_publishes_each_decision(rt):
    from router_lite.decisions import iter_decisions

    got: list[dict] = []

    def follow() -> None:
        for d in iter_decisions(rt.url, timeout_s=10):
            got.append(d)
            if len(got) >= 3:
                return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    wait_until(lambda: httpx.get(rt.url + "/debug/endpoints").json()["decisions"]["subscribers"] >= 1)
    sent = {}
    with rt.client() as c:
        for i in range(3):
            r = c.post("/v1/completions", json={"model": MODEL, "prompt": words(f"d{i}", 50), "max_tokens": 2})
            assert r.status_code == 200
            sent[r.headers["x-request-id"]] = r.headers["x-llmd-endpoint"]
    t.join(10)
    assert len(got) == 3
    for d in got:
        assert sent[d["request_id"]] == d["chosen"]["decode"] == d["served_by"]
        assert d["model"] == MODEL and d["prompt_tokens"] > 0 and d["status"] == 200
        assert d["profiles_run"] == ["default"]
        assert d["scheduling_ms"] >= 0
        scorers = {name for c in d["candidates"] for name in c["scores"]}
        assert {"precise-prefix-cache-scorer", "active-request-scorer", "queue-scorer"} <= scorers
        assert all("prefix_match_blocks" in c for c in d["candidates"])
    # History replay for late readers.
    late = []
    for d in iter_decisions(rt.url, history=2, timeout_s=1):
        late.append(d)
        if len(late) == 2:
            break
    assert [d["request_id"] for d in late] == [d["request_id"] for d in got[-2:]]
    endpoints = httpx.get(rt.url + "/debug/endpoints").json()
    assert {e["endpoint"] for e in endpoints["endpoints"]} == set(sent.values()) | {
        e["endpoint"] for e in endpoints["endpoints"]
    }
    assert endpoints["indexes"]["precise"]["blocks"] > 0  # the pods' KV events arrived
    assert endpoints["hashing"]["block_size"] == 16


def test_live_config_switch(pods, tmp_path):
    key_file = tmp_path / "admin.key"
    key_file.write_text("admin-key-for-the-test-0123456789\n")
    admin = {"authorization": "Bearer admin-key-for-the-test-0123456789"}
    args = ["--admin-key-file", str(key_file), "--named-configs", str(shipped_configs_dir())]
    with router(pods.endpoint_entries(), PRECISE_CONFIG, args) as rt, rt.client(headers=admin) as c:
        r = c.post("/admin/config", content=ROUND_ROBIN_CONFIG, headers={"content-type": "application/yaml"})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2
        served = [
            c.post(
                "/v1/completions", json={"model": MODEL, "prompt": "same prompt every time " * 20, "max_tokens": 1}
            ).headers["x-llmd-endpoint"]
            for _ in range(6)
        ]
        assert all(a != b for a, b in zip(served, served[1:])), served  # round-robin alternates over 2 pods
        assert c.get("/admin/config").json()["config"]["plugins"][0]["type"] == "round-robin"
        err = _error_ok(
            c.post(
                "/admin/config",
                content="plugins:\n  - type: no-such-scorer\n",
                headers={"content-type": "application/yaml"},
            ),
            400,
        )
        assert "no-such-scorer" in err["message"]
        _error_ok(
            c.post("/admin/config", content="/etc/passwd.yaml", headers={"content-type": "application/yaml"}), 400
        )  # never read as a path
        r = c.post("/admin/profile", json={"config": yaml.safe_load(PRECISE_CONFIG)})
        assert r.status_code == 200 and r.json()["version"] == 3
        r = c.post("/admin/profile", json={"profile": "round-robin"})  # a shipped profile, by name (what the TUI sends)
        assert r.status_code == 200 and r.json()["profile"] == "round-robin" and r.json()["version"] == 4
        _error_ok(c.post("/admin/profile", json={"profile": "no-such-profile"}), 400)
        _error_ok(c.post("/admin/profile", json={}), 400)


def test_api_key_guards_the_api(pods):
    with router(pods.endpoint_entries(), None, ["--api-key", "s3cret"]) as rt, rt.client() as c:
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 1}
        _error_ok(c.post("/v1/completions", json=body), 401)
        _error_ok(c.post("/v1/completions", json=body, headers={"authorization": "Bearer wrong"}), 401)
        _error_ok(
            c.post("/admin/config", content=ROUND_ROBIN_CONFIG, headers={"content-type": "application/yaml"}), 401
        )
        assert c.post("/v1/completions", json=body, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200


def test_no_healthy_endpoint_is_503():
    from tests.conftest import free_port_block

    dead = free_port_block(2)
    entries = [{"address": f"127.0.0.1:{dead}"}, {"address": f"127.0.0.1:{dead + 1}"}]
    with router(entries) as rt, rt.client() as c:
        for _ in range(2):  # before and after the scraper has noticed
            err = _error_ok(c.post("/v1/completions", json={"model": MODEL, "prompt": "hi"}), 503)
            assert err["type"] == "service_unavailable"
        wait_until(lambda: c.get("/health").json()["healthy_endpoints"] == 0)
        assert c.get("/health").status_code == 200


def test_saturated_pool_sheds_sheddable_requests_and_queue_expires(pods):
    # Metrics older than 1 us count as no capacity: the pool always looks saturated.
    config = ROUND_ROBIN_CONFIG + "saturationDetector:\n  metricsStalenessThreshold: 0.000001\n"
    args = ["--objective", "batch-model=-1", "--queue-size", "4", "--queue-ttl", "0.3"]
    with router(pods.endpoint_entries(), config, args) as rt, rt.client() as c:
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 1}
        r = c.post("/v1/completions", json=body, headers={"x-llmd-priority": "-1"})
        _error_ok(r, 429)
        assert r.headers["retry-after"] == "1"
        _error_ok(c.post("/v1/completions", json={**body, "model": "batch-model"}), 429)  # objective by model name
        r = c.post("/v1/completions", json=body)  # priority 0: queued, then expires
        assert "TTL" in _error_ok(r, 429)["message"]
        assert rt.metric("llmd_router_shed_requests_total", 'reason="saturated"') == 2
        assert rt.metric("llmd_router_shed_requests_total", 'reason="ttl"') == 1


def test_endpoints_file_is_watched(pods):
    entries = pods.endpoint_entries()
    with router(entries[:1]) as rt, rt.client() as c:
        assert [e["endpoint"] for e in c.get("/debug/endpoints").json()["endpoints"]] == [pods.address(0)]
        rt.write_endpoints(entries)
        wait_until(lambda: len(c.get("/debug/endpoints").json()["endpoints"]) == 2, timeout=5)
        rt.write_endpoints(entries[1:])
        wait_until(
            lambda: [e["endpoint"] for e in c.get("/debug/endpoints").json()["endpoints"]] == [pods.address(1)],
            timeout=5,
        )
        r = c.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 1})
        assert r.headers["x-llmd-endpoint"] == pods.address(1)
        errors = c.get("/debug/endpoints").json()["discovery"]["errors"]
        rt.endpoints_file.write_text("endpoints: [{adress: oops}]\n")  # a bad edit keeps the last good set
        rt.endpoints_file.touch()
        # wait until the watcher has read (and rejected) the bad file, then check the set is unchanged
        wait_until(lambda: c.get("/debug/endpoints").json()["discovery"]["errors"] > errors, timeout=10)
        assert [e["endpoint"] for e in c.get("/debug/endpoints").json()["endpoints"]] == [pods.address(1)]
