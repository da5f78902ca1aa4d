"""KV tiers in a running stack: `llmdctl up kv-offload` / `semantic-kv` with real simulator and router processes.

Small GPU and CPU tiers (via --set) so a handful of requests pushes blocks down the tiers in a second.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Cli, _kill_leftovers
from tests.conftest import free_port, free_port_block

BS = 16
MODEL = "sim-model"


@contextmanager
def stack(tmp_path: Path, profile: str, replicas: int, sets: list[str]) -> Iterator[tuple[Cli, dict]]:
    """`llmdctl up PROFILE` on free ports in its own LLMDCTL_HOME; always brought down (and killed if need be)."""
    cli = Cli(tmp_path / f"home-{profile}")
    ports = [
        "--port",
        str(free_port()),
        "--pod-port",
        str(free_port_block(replicas)),
        "--events-port",
        str(free_port_block(replicas)),
    ]
    args = [a for s in sets for a in ("--set", s)]
    try:
        r = cli("up", profile, "--replicas", str(replicas), *ports, *args, "--json")
        assert r.code == 0, r.out + r.err
        doc = json.loads(r.out)
        wait_for(
            lambda: httpx.get(f"{doc['router_url']}/health", timeout=5).json()["healthy_endpoints"] == replicas,
            what="the router to see every pod healthy",
        )
        yield cli, doc
    finally:
        state = cli.state()
        if state is not None:
            try:
                cli("down", timeout=30)
            finally:
                _kill_leftovers(state)


def tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1000, 30000) for _ in range(n)]


def complete(client: httpx.Client, url: str, prompt, max_tokens: int = 1, **extra) -> httpx.Response:
    r = client.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, **extra})
    assert r.status_code == 200, r.text
    return r


def cached(r: httpx.Response) -> int:
    return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]


def tier_metric(client: httpx.Client, pod_url: str, name: str, medium: str | None = None) -> float:
    text = client.get(f"{pod_url}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{") and (medium is None or f'medium="{medium}"' in line):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{medium={medium}}} not in {pod_url}/metrics")


def wait_for(predicate, timeout_s: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def index_media(client: httpx.Client, router: str) -> dict[str, int]:
    return client.get(f"{router}/debug/endpoints").json()["indexes"]["precise"]["blocks_by_medium"]


class DecisionTap:
    """Follows the router's decision stream in a thread (decisions rendered as they are made)."""

    def __init__(self, router: str) -> None:
        self.decisions: list[dict] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(router,), daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "decision stream did not open"

    def _run(self, router: str) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(5.0, read=0.5)) as c,
            c.stream("GET", f"{router}/debug/decisions") as resp,
        ):
            self._ready.set()
            while not self._stop.is_set():
                try:
                    for line in resp.iter_lines():
                        if line.startswith("data:"):
                            self.decisions.append(json.loads(line[5:]))
                except httpx.ReadTimeout:
                    continue
                except httpx.HTTPError:
                    return

    def find(self, request_id: str) -> dict:
        return wait_for(
            lambda: next(
                (d for d in self.decisions if request_id in (d.get("client_request_id"), d["request_id"])), None
            ),
            what=f"decision {request_id}",
        )

    def close(self) -> None:
        self._stop.set()


def test_kv_offload_pod_b_hits_through_shared_fs_what_pod_a_computed(tmp_path):
    sets = ["pools.0.num_gpu_blocks=32", "kv_tiers.cpu_blocks=8", "pools.0.max_model_len=512"]
    with stack(tmp_path, "kv-offload", 2, sets) as (cli, up), httpx.Client(timeout=20) as client:
        router = up["router_url"]
        pod_a, pod_b = (p["url"] for p in up["pods"])
        key_a, key_b = (u.removeprefix("http://") for u in (pod_a, pod_b))
        rng = random.Random(7)
        prompt = tokens(rng, 8 * BS + 3)  # 8 full blocks

        assert cached(complete(client, pod_a, prompt)) == 0  # pod A computes it
        for _ in range(20):  # one-off requests push it GPU -> CPU -> shared filesystem on pod A
            complete(client, pod_a, tokens(rng, 4 * BS + 3))
        shared_dir = cli.home / "run" / "kv-shared"
        assert len([p for p in shared_dir.iterdir() if not p.name.startswith(".")]) >= 8
        # The router's precise index learns the lower tiers from the pods' events (medium CPU / DISK).
        media = wait_for(
            lambda: (m := index_media(client, router)).get("DISK", 0) >= 8 and m.get("CPU", 0) > 0 and m,
            what="CPU and DISK blocks in the router's index",
        )
        assert media["GPU"] > 0

        # Pod A is busy (a long decode), pod B idle: with the prefix equally reachable from the shared tier,
        # the router sends the request to B, which loads it from the filesystem pod A wrote.
        tap = DecisionTap(router)
        busy = threading.Thread(
            target=lambda: httpx.post(
                f"{pod_a}/v1/completions",
                timeout=60,
                json={"model": MODEL, "prompt": tokens(rng, 4 * BS), "max_tokens": 300, "ignore_eos": True},
            ),
            daemon=True,
        )
        busy.start()  # a client that waits for the whole answer keeps pod A busy for ~2 simulated=wall seconds
        wait_for(
            lambda: any(
                e["endpoint"] == key_a and (e["running"] or e["kv_cache_usage"] > 0)
                for e in client.get(f"{router}/debug/endpoints").json()["endpoints"]
            ),
            timeout_s=15,
            what="router sees pod A busy",
        )
        r = client.post(
            f"{router}/v1/completions",
            json={"model": MODEL, "prompt": prompt, "max_tokens": 1},
            headers={"x-request-id": "fs-hit"},
        )
        assert r.status_code == 200, r.text
        busy.join(timeout=60)
        assert r.headers["x-llmd-endpoint"] == key_b
        assert cached(r) == 8 * BS
        assert tier_metric(client, pod_b, "llmd_sim:kv_tier_hits_total", "DISK") == 8 * BS
        assert tier_metric(client, pod_a, "llmd_sim:kv_tier_hits_total", "DISK") == 0

        # The decision stream says where each candidate's prefix hit would come from.
        d = tap.find("fs-hit")
        tap.close()
        by_ep = {c["endpoint"]: c for c in d["candidates"]}
        assert by_ep[key_b]["prefix_tiers"] == {"DISK": 8} and by_ep[key_b]["prefix_match_blocks"] == 8
        assert by_ep[key_a]["prefix_tiers"] == {"DISK": 8}

        r = cli("status", "--json")
        pods = {p["url"]: p["metrics"] for p in json.loads(r.out)["pods"]}
        assert pods[pod_b]["tier_disk_hits"] == 8 * BS  # B read what A wrote to the shared tier
        assert pods[pod_a]["tier_cpu_usage"] == 1.0  # 8 of 8 CPU blocks hold pod A's evictions
        out = cli("status").out
        assert "CPU used·hits" in out and "DISK used·hits" in out


def _system_prompt_hits_after_flood(tmp_path: Path, profile: str) -> tuple[int, float, str]:
    """(cached tokens of a second request with the same system prompt after a flood, CPU tier hits, router)."""
    # One pod, GPU 32 blocks, CPU 16 (pin budget 25% = 4 blocks), no filesystem: what survives is what CPU kept.
    sets = [
        "pools.0.num_gpu_blocks=32",
        "kv_tiers.cpu_blocks=16",
        "kv_tiers.filesystem=null",
        "pools.0.max_model_len=512",
    ]
    with stack(tmp_path, profile, 1, sets) as (cli, up), httpx.Client(timeout=20) as client:
        router = up["router_url"]
        rng = random.Random(3)
        words = [f"w{rng.randrange(10**6)}" for _ in range(400)]
        system = " ".join(words[:40])

        def chat(user: str) -> httpx.Response:
            r = client.post(
                f"{router}/v1/chat/completions",
                json={
                    "model": MODEL,
                    "max_tokens": 1,
                    "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                },
            )
            assert r.status_code == 200, r.text
            return r

        assert cached(chat("hello there")) == 0
        for i in range(30):  # one-off requests, 4x the GPU and CPU capacity together
            complete(client, router, " ".join(rng.choice(words) for _ in range(60)) + f" {i}")
        again = chat("a different question")
        hits = tier_metric(client, up["pods"][0]["url"], "llmd_sim:kv_tier_hits_total", "CPU")
        # A bad block-type override is the client's error, named (checked while the stack is up).
        r = client.post(
            f"{router}/v1/chat/completions",
            json={
                "model": MODEL,
                "max_tokens": 1,
                "kv_block_type": "durable",
                "messages": [{"role": "user", "content": "x"}],
            },
        )
        assert r.status_code == 400 and "kv_block_type" in r.json()["error"]["message"]
        return cached(again), hits, router


def test_semantic_kv_pins_the_system_prompt_through_a_flood_lru_loses_it(tmp_path):
    typed, typed_hits, _ = _system_prompt_hits_after_flood(tmp_path, "semantic-kv")
    assert typed >= 2 * BS and typed_hits == typed  # the pinned system prompt came back from the CPU tier
    lru, lru_hits, _ = _system_prompt_hits_after_flood(tmp_path, "kv-offload")  # same tiers, blind LRU
    assert lru == 0 and lru_hits == 0


def test_kv_tiers_flag_takes_json_or_a_file_and_names_bad_keys(tmp_path):
    import subprocess
    import sys

    from sim_gpu.tiers import parse_spec

    spec, base = parse_spec('{"cpu_blocks": 4, "filesystem": {"path": "kv"}}')
    assert base is None and spec["filesystem"] == {"path": "kv", "capacity_mb": 1024, "bandwidth_gbps": 5.0}
    f = tmp_path / "tiers.yaml"
    f.write_text("cpu_blocks: 8\npolicies:\n  system_prompt: {pin: true}\n")
    spec, base = parse_spec(str(f))
    assert spec["cpu_blocks"] == 8 and base == str(tmp_path.resolve())
    bad = {
        '{"cpu_blocks": -1}': "--kv-tiers.cpu_blocks",
        '{"filesystem": {"path": "x", "size": 1}}': "--kv-tiers.filesystem.size: unknown key",
        '{"cpu_blocks": 4, "policies": {"durable": {}}}': "--kv-tiers.policies",
        '{"cpu_blocks": 0}': "names no tier",
        str(tmp_path / "missing.yaml"): "no such file",
    }
    for value, message in bad.items():
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            parse_spec(value)
    # The CLI turns them into one line and exit status 2, before binding anything.
    r = subprocess.run(
        [sys.executable, "-m", "sim_gpu", "serve", "--port", str(free_port()), "--kv-tiers", '{"cpu_blocks": "x"}'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--kv-tiers.cpu_blocks" in r.stderr


def _scratchpads_offloaded(tmp_path: Path, profile: str) -> tuple[float, float, float]:
    """Agentic chat traffic through one pod: (blocks kept out of the lower tiers, blocks stored in the CPU
    tier, prompt tokens served from the CPU tier). Each agent step: a `<think>` scratchpad the server continues
    (typed reasoning_branch), then the step itself (system prompt, tools, conversation)."""
    sets = [
        "pools.0.num_gpu_blocks=96",
        "kv_tiers.cpu_blocks=32",
        "kv_tiers.filesystem=null",
        "pools.0.max_model_len=1024",
        # Sizes below are counted in the built-in tokenizer's tokens (one per "w123456" word; the default BPE
        # splits each into several, and the prompts would outgrow max_model_len): what is tested is the typing.
        "tokenizer=builtin",
    ]
    with stack(tmp_path, profile, 1, sets) as (cli, up), httpx.Client(timeout=20) as client:
        router, pod = up["router_url"], up["pods"][0]["url"]
        rng = random.Random(5)
        words = lambda n: " ".join(f"w{rng.randrange(10**6)}" for _ in range(n))  # noqa: E731
        system = words(40)
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "search",
                    "description": words(30),
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ]
        for step in range(6):
            task = words(40)
            base = [{"role": "system", "content": system}, {"role": "user", "content": task}]
            r = client.post(
                f"{router}/v1/chat/completions",
                json={
                    "model": MODEL,
                    "max_tokens": 1,
                    "tools": tools,
                    "tool_choice": "none",  # vLLM without a tool-call parser refuses the default "auto"
                    "continue_final_message": True,
                    "add_generation_prompt": False,
                    "messages": base + [{"role": "assistant", "content": "<think>" + words(120)}],
                },
            )
            assert r.status_code == 200, r.text
            r = client.post(
                f"{router}/v1/chat/completions",
                json={"model": MODEL, "max_tokens": 1, "tools": tools, "tool_choice": "none", "messages": base},
            )
            assert r.status_code == 200, r.text
        return (
            tier_metric(client, pod, "llmd_sim:kv_tier_skipped_blocks_total"),
            tier_metric(client, pod, "llmd_sim:kv_tier_stored_blocks_total", "CPU"),
            tier_metric(client, pod, "llmd_sim:kv_tier_hits_total", "CPU"),
        )


def test_semantic_kv_keeps_finished_scratchpads_out_of_the_cpu_tier_lru_offloads_them(tmp_path):
    """Chat structure reaches the pod's tiers: the typed pod never offloads a finished `<think>` scratchpad
    (its blocks are evicted first and dropped), the LRU pod offloads them like any other block."""
    skipped, stored, _ = _scratchpads_offloaded(tmp_path, "semantic-kv")
    lru_skipped, lru_stored, _ = _scratchpads_offloaded(tmp_path, "kv-offload")
    assert (
        skipped >= 5 * 10
    )  # a 120-word scratchpad is ~25 blocks: most of every finished one never left the GPU for the CPU tier
    assert lru_skipped == 0
    assert lru_stored > stored
