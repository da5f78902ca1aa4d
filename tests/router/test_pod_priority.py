"""The request's priority reaches the pods (issue 18): the router forwards its objective's priority as vLLM's
`priority` field (negated: lower first), so a pod started with `--scheduling-policy priority` serves a critical
request ahead of its own queue; a pod on fcfs serves arrival order. Real router and simulator processes."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from router_lite.gateway import Gateway
from tests.router.procs import MODEL, router, sim_pods, wait_until, words

pytestmark = pytest.mark.timeout(90)


def _finish_order(policy: str) -> list[str]:
    extra = ["--max-num-seqs", "1", "--scheduling-policy", policy]
    args = ["--objective", "critical=1", "--objective", "standard=0"]
    with sim_pods(1, events=False, time_scale=1.0, extra=extra) as pod, router(pod.endpoint_entries(), args=args) as rt:
        wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=1", timeout=2).status_code == 200, timeout=15)
        done: list[str] = []
        lock = threading.Lock()

        def send(name: str, objective: str, max_tokens: int) -> None:
            r = httpx.post(
                rt.url + "/v1/completions",
                headers={"x-gateway-inference-objective": objective},
                json={"model": MODEL, "prompt": words(name, 8), "max_tokens": max_tokens, "ignore_eos": True},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            with lock:
                done.append(name)

        # the one seat is taken by a long request; three standard requests queue at the pod, then a critical one
        plan = [("hold", "standard", 150), ("s1", "standard", 4), ("s2", "standard", 4), ("s3", "standard", 4)]
        plan.append(("crit", "critical", 4))
        threads = []
        for name, objective, n in plan:
            t = threading.Thread(target=send, args=(name, objective, n))
            t.start()
            threads.append(t)
            time.sleep(0.15)
        for t in threads:
            t.join(70)
        return done


def test_a_priority_pod_serves_the_critical_request_before_its_queue():
    order = _finish_order("priority")
    assert order[0] == "hold" and order[1] == "crit", order


def test_a_fcfs_pod_serves_arrival_order():
    order = _finish_order("fcfs")
    assert order == ["hold", "s1", "s2", "s3", "crit"], order


@pytest.mark.parametrize(
    ("body", "priority", "expected"),
    [
        ({"model": "m"}, 0, None),  # untouched: no field added
        ({"model": "m"}, 1, -1),  # critical: lower first in vLLM
        ({"model": "m"}, -1, 1),
        ({"model": "m", "priority": -100}, 0, None),  # a client cannot jump the pods' queues by itself
        ({"model": "m", "priority": 5}, -1, 1),
    ],
)
def test_the_forwarded_priority_is_the_objectives_negated(body: dict, priority: int, expected: int | None):
    import json

    raw = json.dumps(body).encode()
    out = json.loads(Gateway._with_pod_priority(dict(body), raw, priority))
    assert out.get("priority") == expected and out["model"] == "m"
