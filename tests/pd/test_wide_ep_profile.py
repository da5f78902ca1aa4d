"""`llmdctl up wide-ep` end to end on loopback: 2 DeepSeek-R1 pods x 4 data-parallel ranks, each rank its own
port, KV-event stream and router endpoint. Prefix groups stick to a rank (the rank's events land on that rank's
endpoint in the router's index), distinct requests spread over the ranks, and the decision stream says which
rank served each request and why."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.pd.stack import profile_up

pytestmark = pytest.mark.timeout(180)

MODEL = "sim-model"
PODS, DP = 2, 4


def words(tag: str, n: int) -> str:
    return " ".join(f"{tag}w{i}" for i in range(n))


@pytest.fixture(scope="module")
def wep(tmp_path_factory):
    with profile_up("wide-ep", tmp_path_factory.mktemp("wep-home")) as stack:
        yield stack


def _post(url: str, rid: str, prompt: str, max_tokens: int = 4) -> httpx.Response:
    r = httpx.post(
        url + "/v1/completions",
        json={"model": MODEL, "prompt": prompt, "max_tokens": max_tokens},
        headers={"x-request-id": rid},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r


def test_every_rank_is_an_endpoint(wep):
    pods = wep.pods()
    assert len(pods) == PODS * DP
    ports = [int(p["url"].rsplit(":", 1)[1]) for p in pods]
    assert ports == list(range(ports[0], ports[0] + PODS * DP))  # pod i rank r on base + i*DP + r
    assert [p["rank"] for p in pods] == [r for _ in range(PODS) for r in range(DP)]
    eps = {e["endpoint"]: e for e in httpx.get(wep.url + "/debug/endpoints").json()["endpoints"]}
    assert len(eps) == PODS * DP
    events = []
    for p in pods:
        e = eps[p["url"].removeprefix("http://")]
        assert e["dp_rank"] == p["rank"] and e["name"] == p["name"] and e["healthy"]
        events.append(int(e["kv_events"]["endpoint"].rsplit(":", 1)[1]))
    assert events == list(range(events[0], events[0] + PODS * DP))  # one KV-event stream per rank, same offsets
    # The simulator pods run expert parallelism over their ranks (the profile passes vLLM's flag).
    state = json.loads((wep.home / "state.json").read_text())
    argv = next(c["argv"] for c in state["components"] if c["name"] == "sim-ep")
    assert "--enable-expert-parallel" in argv and argv[argv.index("--data-parallel-size") + 1] == str(DP)


def test_prefix_groups_stick_to_their_rank(wep):
    groups = 6
    name_of = {p["url"].removeprefix("http://"): p["name"] for p in wep.pods()}
    rank_of = {p["url"].removeprefix("http://"): p["rank"] for p in wep.pods()}
    home: dict[int, str] = {}
    for g in range(groups):  # first request of each group: lands somewhere, its blocks get published
        r = _post(wep.url, f"wep-g{g}-0", words(f"grp{g}sys", 200) + " first question")
        home[g] = r.headers["x-llmd-endpoint"]
    time.sleep(0.5)  # KV events from the ranks reach the router's index
    jobs = [(g, i) for i in (1, 2) for g in range(groups)]
    with ThreadPoolExecutor(6) as ex:
        served = list(
            ex.map(
                lambda a: (
                    a,
                    _post(wep.url, f"wep-g{a[0]}-{a[1]}", words(f"grp{a[0]}sys", 200) + f" question {a[1]}").headers[
                        "x-llmd-endpoint"
                    ],
                ),
                jobs,
            )
        )
    for (g, i), addr in served:
        assert addr == home[g], f"group {g} request {i} left its rank {name_of[home[g]]} for {name_of[addr]}"
    for g in range(groups):
        d = wep.decision(f"wep-g{g}-1")
        assert d["chosen"]["decode"] == home[g]
        assert d["chosen_rank"]["decode"] == {"rank": rank_of[home[g]], "name": name_of[home[g]]}
        hits = {c["endpoint"]: c["prefix_match_blocks"] for c in d["candidates"]}
        # The rank's own KV events credited the prefix to that rank's endpoint only, not to its pod's others.
        assert hits[home[g]] >= 200 * 2 // 16 - 1
        assert all(v == 0 for k, v in hits.items() if k != home[g])
        assert "prefix hit" in d["reason"]
        assert all("dp_rank" in c and c["name"] == name_of[c["endpoint"]] for c in d["candidates"])


def test_load_spreads_over_ranks(wep):
    """Distinct prompts (no prefix to follow) in waves: each wave sees the ranks the earlier ones keep busy."""
    n, wave = 16, 4
    futures = []
    with ThreadPoolExecutor(n) as ex:
        for i in range(n):
            futures.append(ex.submit(_post, wep.url, f"wep-spread-{i}", words(f"spread{i}", 150), 400))
            if i % wave == wave - 1:
                time.sleep(0.25)  # a few scrapes: the router sees the running requests per rank
        served = [f.result().headers["x-llmd-endpoint"] for f in futures]
    counts: dict[str, int] = {}
    for a in served:
        counts[a] = counts.get(a, 0) + 1
    # Within a wave ties break at random, so a few may share a rank; across waves the busy ranks are avoided.
    assert len(counts) >= PODS * DP - 1, f"16 requests used {len(counts)} of {PODS * DP} ranks: {counts}"
    assert max(counts.values()) <= 5, counts
    late = wep.decision(f"wep-spread-{n - 1}")
    assert {c["name"].rsplit("-r", 1)[0] for c in late["candidates"]} == {"ep-0", "ep-1"}
    assert "queue-scorer" in late["reason"]
