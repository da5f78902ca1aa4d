"""A burst of one prefix group on real processes: the router keeps it on the warm pod while that is faster,
and spreads it once the warm pod's queued prefill would make the next request slower than a cold prefill
elsewhere. The same burst under prefix affinity alone piles onto one pod (the failure this guards against)."""

from __future__ import annotations

import json
import threading

import httpx
import yaml

from tests.router.procs import MODEL, router, sim_pods, wait_until

PREFIX = list(range(1000, 2024))  # 64 blocks of 16
SUFFIX_TOKENS = 512


def _config(load_aware: bool) -> str:
    plugins = [
        {"type": "precise-prefix-cache-scorer", "parameters": {"speculativeIndexing": True}},
        {"type": "max-score-picker"},
        {"type": "single-profile-handler"},
    ]
    refs = [{"pluginRef": "precise-prefix-cache-scorer", "weight": 1}]
    if load_aware:
        plugins += [
            {"type": "inflight-load-producer"},
            {
                "type": "prefix-cache-affinity-filter",
                "parameters": {"affinityThreshold": 0.5, "ttftSource": "measured", "maxTTFTPenaltyMs": 0},
            },
            {"type": "estimated-ttft-scorer"},
        ]
        refs = [
            {"pluginRef": "prefix-cache-affinity-filter"},
            {"pluginRef": "estimated-ttft-scorer", "weight": 3},
            *refs,
        ]
    return yaml.safe_dump(
        {
            "apiVersion": "llm-d.ai/v1alpha1",
            "kind": "EndpointPickerConfig",
            "plugins": plugins,
            "schedulingProfiles": [{"name": "default", "plugins": refs}],
        }
    )


def _send(client: httpx.Client, i: int, out: dict[int, str]) -> None:
    base = 3000 + (i % 40) * 520  # a distinct tail per request, inside the simulated vocabulary
    body = {"model": MODEL, "prompt": PREFIX + list(range(base, base + SUFFIX_TOKENS)), "max_tokens": 2, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        out[i] = r.headers["x-llmd-endpoint"]
        for _ in r.iter_bytes():
            pass


def _burst(load_aware: bool) -> tuple[str, list[str], dict]:
    # 50x slower than the simulated GPU: a 1.5k-token prefill takes ~2 s of wall time, so the whole burst is
    # dispatched while the first requests still prefill, even on a loaded machine.
    with sim_pods(2, time_scale=0.02) as sims, router(sims.endpoint_entries(), config=_config(load_aware)) as rt:
        with rt.client() as c:
            wait_until(lambda: c.get("/health", params={"min_healthy": 2}).status_code == 200, timeout=20)
            warm: dict[int, str] = {}
            for i in (100, 101):  # two requests of the group: the index learns the prefix, the router a rate
                _send(c, i, warm)
            home = warm[100]
            wait_until(lambda: c.get("/debug/endpoints").json()["indexes"]["precise"]["blocks"] >= 64, timeout=10)
            served: dict[int, str] = {}
            threads = [threading.Thread(target=_send, args=(c, i, served)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            after = c.get("/debug/endpoints").json()
        return home, [served[i] for i in sorted(served)], after


def test_burst_spreads_once_a_cold_prefill_is_faster():
    home, served, after = _burst(load_aware=True)
    assert len(served) == 6
    # The warm pod takes the burst while its queue costs less than a cold prefill (512-token tails against a
    # 1536-token prompt: three fit), then it spills over: the rest go where the first token comes sooner.
    assert 3 <= served.count(home) <= 4 and len(set(served)) == 2, served
    assert all(e["inflight"] == {"requests": 0, "tokens": 0, "decoding": 0} for e in after["endpoints"]), json.dumps(
        after["endpoints"]
    )


def test_affinity_alone_piles_the_burst_onto_one_pod():
    home, served, _ = _burst(load_aware=False)
    assert served == [home] * 6, served


def test_a_sticky_request_whose_warm_pod_died_is_retried_on_a_pod_the_filter_set_aside():
    from tests.router.procs import sim_group

    with sim_group(2, 1, time_scale=0.0) as sims:
        entries = [e for s in sims for e in s.endpoint_entries()]
        with router(entries, config=_config(True)) as rt, rt.client() as c:
            wait_until(lambda: c.get("/health", params={"min_healthy": 2}).status_code == 200, timeout=20)
            warm: dict[int, str] = {}
            _send(c, 7, warm)
            wait_until(lambda: c.get("/debug/endpoints").json()["indexes"]["precise"]["blocks"] >= 64, timeout=10)
            home = next(s for s in sims if s.address() == warm[7])
            home.kill()  # the only pod the affinity filter keeps for this prefix
            again: dict[int, str] = {}
            _send(c, 8, again)
            assert again[8] != warm[7]
