"""Routing quality and resilience end to end: a router process over real simulator pods on loopback.

Workload: 8 prefix groups (a long shared prefix + a unique suffix per request). The first request of every
group is sent concurrently, so load-aware scoring spreads the groups over the pods; then each group's
other requests follow in a shuffled order. Cache-aware profiles must keep each group on its pod; round-robin
must not.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.router.procs import (
    APPROX_CONFIG,
    MODEL,
    PRECISE_CONFIG,
    ROUND_ROBIN_CONFIG,
    router,
    sim_group,
    sim_pods,
    wait_until,
    words,
)

pytestmark = pytest.mark.timeout(180)

GROUPS = 8
FOLLOWERS = 4
PODS = 4


@pytest.fixture(scope="module")
def pods():
    # time scale 1: a request takes ~100 ms of simulated H100 time, so concurrent requests overlap.
    with sim_pods(PODS, time_scale=1.0) as p:
        yield p


def _prompt(tag: str, g: int, j: int) -> str:
    return words(f"{tag}g{g}p", 120) + " " + words(f"{tag}g{g}u{j}x", 6)


def _run_groups(url: str, tag: str) -> dict[int, list[str]]:
    """group -> endpoints that served its requests (first request first)."""
    served: dict[int, list[str]] = defaultdict(list)
    lock = threading.Lock()

    def send(c: httpx.Client, g: int, j: int) -> None:
        # First requests decode longer so they are all in flight together even on a busy machine.
        r = c.post(
            "/v1/completions", json={"model": MODEL, "prompt": _prompt(tag, g, j), "max_tokens": 64 if j == 0 else 12}
        )
        assert r.status_code == 200, r.text
        with lock:
            served[g].append(r.headers["x-llmd-endpoint"])

    with (
        httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=16)) as c,
        ThreadPoolExecutor(GROUPS) as pool,
    ):
        list(pool.map(lambda g: send(c, g, 0), range(GROUPS)))
        order = [(g, j) for g in range(GROUPS) for j in range(1, FOLLOWERS + 1)]
        random.Random(7).shuffle(order)
        list(pool.map(lambda gj: send(c, *gj), order))
    return served


def _assert_locality_and_balance(served: dict[int, list[str]]) -> None:
    for g, eps in served.items():
        assert len(set(eps)) == 1, f"group {g} was scattered over {Counter(eps)}"
    per_pod = Counter(eps[0] for eps in served.values())
    assert len(per_pod) == PODS, f"groups not spread over every pod: {per_pod}"
    assert max(per_pod.values()) <= 3, f"unbalanced: {per_pod}"


def test_precise_profile_keeps_groups_on_their_pod(pods):
    with router(pods.endpoint_entries(), PRECISE_CONFIG) as rt:
        served = _run_groups(rt.url, "pr")
        _assert_locality_and_balance(served)
        d = httpx.get(rt.url + "/debug/endpoints").json()
        assert d["indexes"]["precise"]["events"] > 0 and d["indexes"]["precise"]["gaps"] == 0
        # The cache-aware choice shows up as prefix hits on the chosen pods.
        assert rt.metric("llmd_router_prefix_hit_blocks_total") >= GROUPS * FOLLOWERS * 20


def test_approximate_profile_keeps_groups_on_their_pod_without_events(pods):
    entries = [{k: v for k, v in e.items() if k != "kvEvents"} for e in pods.endpoint_entries()]
    with router(entries, APPROX_CONFIG) as rt:
        served = _run_groups(rt.url, "ap")
        _assert_locality_and_balance(served)
        assert httpx.get(rt.url + "/debug/endpoints").json()["indexes"]["precise"]["events"] == 0


def test_round_robin_scatters_groups(pods):
    with router(pods.endpoint_entries(), ROUND_ROBIN_CONFIG) as rt:
        served = _run_groups(rt.url, "rr")
        scattered = sum(1 for eps in served.values() if len(set(eps)) > 1)
        assert scattered >= GROUPS - 2, served


LOAD_CONFIG = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: active-request-scorer
  - type: queue-scorer
schedulingProfiles:
  - name: default
    plugins:
      - {pluginRef: active-request-scorer, weight: 1}
      - {pluginRef: queue-scorer, weight: 1}
"""


def _running(address: str) -> float:
    try:
        text = httpx.get(f"http://{address}/metrics", timeout=1).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("vllm:num_requests_running"))


def test_killing_a_pod_mid_load_loses_no_unstarted_request():
    with (
        sim_group(3, events=False, time_scale=1.0) as sims,
        router([e for s in sims for e in s.endpoint_entries()], LOAD_CONFIG) as rt,
    ):
        victim = sims[1].address()
        done = 0
        lock = threading.Lock()
        killed = threading.Event()
        results: list[tuple[int, str, bool]] = []

        def kill_when_busy() -> None:
            # Kill while the pod is computing a request: that request has sent no byte yet and must be retried.
            wait_until(lambda: _running(victim) >= 1, timeout=5, interval=0.005)
            sims[1].kill()
            killed.set()

        def send(i: int) -> None:
            nonlocal done
            started_after_kill = killed.is_set()
            with httpx.Client(base_url=rt.url, timeout=30) as c:
                r = c.post("/v1/completions", json={"model": MODEL, "prompt": words(f"k{i}", 30), "max_tokens": 24})
            with lock:
                results.append((r.status_code, r.headers.get("x-llmd-endpoint", ""), started_after_kill))
                done += 1
                start_killer = done == 6
            if start_killer:
                threading.Thread(target=kill_when_busy, daemon=True).start()

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(send, range(24)))
        assert killed.is_set()
        assert [s for s, _, _ in results] == [200] * 24, results
        assert rt.metric("llmd_router_retries_total") >= 1
        # No request sent after the kill was answered by the dead pod.
        assert not [ep for s, ep, after in results if after and ep == victim]
        wait_until(
            lambda: (
                not next(
                    e for e in httpx.get(rt.url + "/debug/endpoints").json()["endpoints"] if e["endpoint"] == victim
                )["healthy"]
            )
        )


def test_streaming_is_relayed_as_it_is_generated(pods):
    """Tokens reach the client while the pod is still decoding (no buffering in the router)."""
    import time

    with router(pods.endpoint_entries()[:1], ROUND_ROBIN_CONFIG) as rt, rt.client() as c:
        body = {"model": MODEL, "prompt": words("stream", 20), "max_tokens": 48, "stream": True}
        arrivals = []
        t0 = time.perf_counter()
        with c.stream("POST", "/v1/completions", json=body) as s:
            assert s.status_code == 200
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.perf_counter() - t0)
        assert len(arrivals) == 48
        # 48 decode steps of simulated H100 time: the first token is out long before the last.
        assert arrivals[-1] - arrivals[0] > 0.1
        assert len({round(a, 2) for a in arrivals}) > 10
