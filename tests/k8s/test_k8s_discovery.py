"""router_lite's Kubernetes pod discovery: the pure pod -> endpoints rule, and list+watch through the real
kubernetes client against a small fake API server on loopback (no cluster can run here)."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from router_lite.datalayer.discovery import DiscoveryError, KVEventsSpec
from router_lite.datalayer.k8s_discovery import KubernetesWatcher, parse_ports, parse_selector, specs_from_pods

SELECTOR = "llm-d.ai/inferenceServing=true,llmd.ai/stack=s"


def pod(name, ip="10.0.0.1", ready=True, role="decode", ports=(8000, 5557), phase="Running", deleting=False):
    meta = {
        "name": name,
        "namespace": "llmd",
        "labels": {"llm-d.ai/role": role, "llmd.ai/stack": "s"},
        "resourceVersion": "1",
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "server", "image": "x", "ports": [{"containerPort": p} for p in ports]}]},
        "status": {
            "phase": phase,
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_only_ready_running_pods_with_an_ip_become_endpoints():
    pods = [
        pod("a", "10.0.0.1"),
        pod("b", "10.0.0.2", ready=False),
        pod("c", "10.0.0.3", phase="Pending"),
        pod("d", "10.0.0.4", deleting=True),
        pod("e", ""),
    ]
    specs = specs_from_pods(pods, [8000], kv_events_port=5557)
    assert [s.address for s in specs] == ["10.0.0.1:8000"]
    s = specs[0]
    assert s.name == "a" and dict(s.labels)["llm-d.ai/role"] == "decode" and s.dp_rank is None
    assert s.kv_events == KVEventsSpec("tcp://10.0.0.1:5557", "", bind=False)
    assert s.to_endpoint().role == "decode"


def test_data_parallel_ranks_are_one_endpoint_each_with_their_own_event_port():
    p = pod("ep-0", ports=(8000, 8001, 8002, 8003, 5557, 5558, 5559, 5560))
    single = pod("one", "10.0.0.9", ports=(8000,))
    specs = specs_from_pods([p, single], [8000, 8001, 8002, 8003], kv_events_port=5557)
    assert [(s.address, s.dp_rank, s.kv_events.endpoint if s.kv_events else None) for s in specs] == [
        ("10.0.0.1:8000", 0, "tcp://10.0.0.1:5557"),
        ("10.0.0.1:8001", 1, "tcp://10.0.0.1:5558"),
        ("10.0.0.1:8002", 2, "tcp://10.0.0.1:5559"),
        ("10.0.0.1:8003", 3, "tcp://10.0.0.1:5560"),
        ("10.0.0.9:8000", None, None),  # declares rank 0 only, and no event port
    ]
    assert [s.name for s in specs[:2]] == ["ep-0-r0", "ep-0-r1"]


def test_flag_parsing_is_strict():
    assert parse_selector(" a=b , c==d ") == "a=b,c=d"
    assert parse_ports("8000,8001") == [8000, 8001]
    for bad in ("a", "=b", ""):
        with pytest.raises(DiscoveryError, match="--selector"):
            parse_selector(bad)
    with pytest.raises(DiscoveryError, match="--target-ports"):
        parse_ports("80x")


class FakeAPI:
    """Enough of the API server for list + watch of pods in one namespace."""

    def __init__(self, pods):
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.rv = 10
        self.selectors: list[str] = []
        self.watches: list[queue.Queue] = []
        self.closing = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # watch responses are chunked, as the real API server's are

            def log_message(self, *a):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != "/api/v1/namespaces/llmd/pods":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                api.selectors.append(q.get("labelSelector", ""))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if q.get("watch") in ("true", "1", "True"):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    events: queue.Queue = queue.Queue()
                    api.watches.append(events)
                    deadline = time.monotonic() + float(q.get("timeoutSeconds", 5))
                    while time.monotonic() < deadline and not api.closing.is_set():
                        try:
                            ev = events.get(timeout=0.05)
                        except queue.Empty:
                            continue
                        data = (json.dumps(ev) + "\n").encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.close_connection = True
                    return
                body = json.dumps(
                    {
                        "apiVersion": "v1",
                        "kind": "PodList",
                        "metadata": {"resourceVersion": str(api.rv)},
                        "items": list(api.pods.values()),
                    }
                ).encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def emit(self, kind, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        for w in self.watches:
            w.put({"type": kind, "object": obj})

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api():
    api = FakeAPI([pod("p0", "10.0.0.1"), pod("p1", "10.0.0.2", ready=False)])
    yield api
    api.close()


def _client(url):
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = url
    return client.ApiClient(cfg)


def test_watcher_lists_then_follows_pods_through_the_kubernetes_client(fake_api):
    async def scenario():
        seen: list[list[str]] = []
        watcher = KubernetesWatcher(
            "llmd",
            SELECTOR,
            lambda specs: seen.append([s.address for s in specs]),
            [8000],
            kv_events_port=5557,
            api_client=_client(fake_api.url),
            watch_timeout_s=5,
        )
        watcher.start()

        async def until(cond, what):
            for _ in range(200):
                if cond():
                    return
                await asyncio.sleep(0.025)
            raise AssertionError(f"timed out waiting for {what}; seen={seen} errors={watcher.errors}")

        try:
            await until(lambda: seen == [["10.0.0.1:8000"]] and fake_api.watches, "the first list and a watch")
            fake_api.emit("MODIFIED", pod("p1", "10.0.0.2", ready=True))
            await until(lambda: seen[-1] == ["10.0.0.1:8000", "10.0.0.2:8000"], "p1 ready")
            fake_api.emit("MODIFIED", pod("p1", "10.0.0.2", ready=True))  # no change: no callback
            fake_api.emit("DELETED", pod("p0", "10.0.0.1"))
            await until(lambda: seen[-1] == ["10.0.0.2:8000"], "p0 deleted")
            assert len(seen) == 3
        finally:
            await watcher.stop()
        assert set(fake_api.selectors) == {SELECTOR}  # the selector reached the API on list and watch
        assert watcher.errors == 0

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_watcher_survives_an_unreachable_api():
    seen = []
    watcher = KubernetesWatcher("llmd", SELECTOR, seen.append, [8000], api_client=_client("http://127.0.0.1:9"))
    watcher.start()
    deadline = time.monotonic() + 5
    while watcher.errors == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    watcher.stop_sync()
    assert watcher.errors >= 1 and seen == []
