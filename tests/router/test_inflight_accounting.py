"""The router's in-flight accounting stays exact on real processes: a retry after a pod dies on arrival, a
client that aborts mid-stream, a P/D two-step request and a pod lost mid-stream. While each request runs,
`/debug/endpoints` is polled; every load it shows must be one the request can really be in (its uncached
prompt tokens before the first token, one decode after it, nothing on a pod it left), and nothing remains
once it ended."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import yaml

from tests.router.procs import MODEL, router, sim_group, wait_until, words

pytestmark = pytest.mark.timeout(120)

ZERO = {"requests": 0, "tokens": 0, "decoding": 0}
# active-request-scorer alone: the idle pod wins, ties at random; no prefix plugin, so a leg's uncached tokens
# are the whole prompt and the expected load is known exactly from the decision's prompt_tokens.
LOAD_ONLY = {
    "plugins": [
        {"type": "inflight-load-producer"},
        {"type": "active-request-scorer"},
        {"type": "max-score-picker"},
        {"type": "single-profile-handler"},
    ],
    "schedulingProfiles": [
        {"name": "default", "plugins": [{"pluginRef": "active-request-scorer"}, {"pluginRef": "max-score-picker"}]}
    ],
}
PD = {
    "plugins": [
        {"type": "inflight-load-producer"},
        {"type": "prefill-filter"},
        {"type": "decode-filter"},
        {"type": "active-request-scorer"},
        {"type": "max-score-picker"},
        {"type": "always-disagg-pd-decider"},
        {"type": "disagg-profile-handler", "parameters": {"prefillDeciderPluginName": "always-disagg-pd-decider"}},
    ],
    "schedulingProfiles": [
        {
            "name": "prefill",
            "plugins": [
                {"pluginRef": "prefill-filter"},
                {"pluginRef": "active-request-scorer"},
                {"pluginRef": "max-score-picker"},
            ],
        },
        {
            "name": "decode",
            "plugins": [
                {"pluginRef": "decode-filter"},
                {"pluginRef": "active-request-scorer"},
                {"pluginRef": "max-score-picker"},
            ],
        },
    ],
}


class LoadWatch:
    """Polls the router's per-endpoint in-flight load on a thread: every distinct (endpoint, load) seen."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: set[tuple[str, tuple[int, int, int]]] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as c:
            while not self._stop.is_set():
                for e in c.get(self.url + "/debug/endpoints").json()["endpoints"]:
                    i = e["inflight"]
                    self.seen.add((e["endpoint"], (i["requests"], i["tokens"], i["decoding"])))
                time.sleep(0.01)

    def __enter__(self) -> LoadWatch:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(10)

    def busy(self) -> dict[str, set[tuple[int, int, int]]]:
        out: dict[str, set[tuple[int, int, int]]] = {}
        for ep, load in self.seen:
            if load != (0, 0, 0):
                out.setdefault(ep, set()).add(load)
        return out


def _loads(c: httpx.Client) -> dict[str, dict]:
    """Endpoint -> its in-flight requests, uncached prompt tokens and decodes (the measured rate left out)."""
    return {e["endpoint"]: {k: e["inflight"][k] for k in ZERO} for e in c.get("/debug/endpoints").json()["endpoints"]}


def _last_decision(c: httpx.Client) -> dict:
    with c.stream("GET", "/debug/decisions", params={"history": 1}) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                return yaml.safe_load(line[5:])
    raise AssertionError("no decision")


def _stream(c: httpx.Client, tag: str, max_tokens: int, stop_after: int | None = None) -> tuple[str, list[str]]:
    """One streamed completion; reads `stop_after` data lines then drops the connection (None: to the end)."""
    body = {"model": MODEL, "prompt": words(tag, 120), "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    lines: list[str] = []
    with c.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200, r.read()
        served = r.headers["x-llmd-endpoint"]
        try:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    lines.append(line)
                    if stop_after is not None and len(lines) >= stop_after:
                        break
        except httpx.HTTPError:
            lines.append("broken")
    return served, lines


def _config(doc: dict) -> str:
    return yaml.safe_dump({"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig", **doc})


def test_a_retry_moves_the_whole_leg_and_leaves_nothing_on_the_dead_pod():
    # the first process serves one request (sent to it directly), then dies as the next arrives: a request the
    # router sends there fails before any response byte and is retried on the other pod.
    with (
        sim_group(2, events=False, time_scale=0.02, extras=[["--crash-after", "1"], []]) as (fragile, steady),
        router(fragile.endpoint_entries() + steady.endpoint_entries(), config=_config(LOAD_ONLY)) as rt,
        rt.client() as c,
    ):
        wait_until(lambda: c.get("/health", params={"min_healthy": 2}).status_code == 200, timeout=20)
        httpx.post(
            f"http://{fragile.address()}/v1/completions",
            json={"model": MODEL, "prompt": "x", "max_tokens": 1},
            timeout=10,
        )
        dead, alive = fragile.address(), steady.address()
        for i in range(12):  # ties break at random: bounded tries until one lands on the fragile pod
            with LoadWatch(rt.url) as watch:
                served, lines = _stream(c, f"retry{i}", max_tokens=3)
            d = _last_decision(c)
            assert served == alive and lines[-1] == "data: [DONE]"
            if d["retries"]:
                break
        else:
            pytest.skip("12 random tie-breaks never picked the fragile pod (p = 1/4096)")
        assert [a["endpoint"] for a in d["attempts"]][:1] == [dead]
        n = d["prompt_tokens"]
        busy = watch.busy()
        assert busy.get(dead, set()) <= {(1, n, 0)}, busy  # at most the leg that failed before its first byte
        assert busy[alive] <= {(1, n, 0), (1, 0, 1)} and (1, 0, 1) in busy[alive], (n, busy)
        wait_until(lambda: all(v == ZERO for v in _loads(c).values()), timeout=5)


def test_an_abort_mid_stream_and_a_pod_lost_mid_stream_release_everything():
    with (
        sim_group(2, events=False, time_scale=0.02) as sims,
        router([e for s in sims for e in s.endpoint_entries()], config=_config(LOAD_ONLY)) as rt,
        rt.client() as c,
    ):
        wait_until(lambda: c.get("/health", params={"min_healthy": 2}).status_code == 200, timeout=20)
        with LoadWatch(rt.url) as watch:
            served, lines = _stream(c, "abort", max_tokens=200, stop_after=2)  # the client leaves after 2 events
        n = _last_decision(c)["prompt_tokens"]
        busy = watch.busy()
        assert len(lines) == 2 and set(busy) == {served}, busy
        assert busy[served] <= {(1, n, 0), (1, 0, 1)} and (1, 0, 1) in busy[served], (n, busy)
        wait_until(lambda: _loads(c)[served] == ZERO, timeout=5)

        # pod loss: a stream in flight on a pod whose process is killed
        result: dict = {}

        def run() -> None:
            result["served"], result["lines"] = _stream(c, "lost", max_tokens=200)

        t = threading.Thread(target=run)
        t.start()
        wait_until(lambda: any(v["decoding"] == 1 for v in _loads(c).values()), timeout=20)
        loads = _loads(c)
        victim = next(k for k, v in loads.items() if v["decoding"] == 1)
        assert loads[victim] == {"requests": 1, "tokens": 0, "decoding": 1}
        assert all(v == ZERO for k, v in loads.items() if k != victim), loads
        next(s for s in sims if s.address() == victim).kill()
        t.join(30)
        assert result["served"] == victim and result["lines"][-1] != "data: [DONE]"  # the stream was cut
        wait_until(lambda: all(v == ZERO for v in _loads(c).values()), timeout=5)


def test_a_pd_request_counts_its_prefill_leg_then_its_decode_leg():
    with (
        sim_group(2, events=False, role=["prefill", "decode"], time_scale=0.02) as (prefill, decode),
        router(prefill.endpoint_entries() + decode.endpoint_entries(), config=_config(PD)) as rt,
        rt.client() as c,
    ):
        wait_until(lambda: c.get("/health", params={"min_healthy": 2}).status_code == 200, timeout=20)
        with LoadWatch(rt.url) as watch:
            resp_headers = {}
            body = {"model": MODEL, "prompt": words("pd", 120), "max_tokens": 4, "ignore_eos": True, "stream": True}
            with c.stream("POST", "/v1/completions", json=body) as r:
                resp_headers.update(r.headers)
                events = [line for line in r.iter_lines() if line.startswith("data:")]
        assert resp_headers["x-llmd-prefill-endpoint"] == prefill.address() and events[-1] == "data: [DONE]"
        n = _last_decision(c)["prompt_tokens"]
        busy = watch.busy()
        # the prefill pod holds the whole prompt until its leg ends; the decode pod prefills nothing (the KV arrives)
        assert busy[prefill.address()] == {(1, n, 0)}, busy
        assert busy[decode.address()] <= {(1, 0, 0), (1, 0, 1)} and (1, 0, 1) in busy[decode.address()], busy
        wait_until(lambda: all(v == ZERO for v in _loads(c).values()), timeout=5)
