"""KV events from a real simulator process over ZMQ: bind/connect, topics, sequences, ranks, and the real-vLLM
capture: the same token ids through HTTP give the same hashes, parents and event sequence as vLLM 0.32 sent."""

from __future__ import annotations

import base64
import time
import uuid

import httpx
import pytest
import zmq

from kvtiers import AllBlocksCleared, BlockRemoved, BlockStored, decode_frames
from tests.conftest import free_port_block
from tests.sim.simproc import sim_server

_client = httpx.Client(timeout=20)


def _sub_bind(n: int = 1) -> tuple[zmq.Socket, str]:
    """A SUB socket bound on `n` consecutive loopback ports (pod i connects to port + i); the first endpoint."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = free_port_block(n)
    for i in range(n):
        sub.bind(f"tcp://127.0.0.1:{port + i}")
    return sub, f"tcp://127.0.0.1:{port}"


def _drain(sub: zmq.Socket, quiet_ms: int = 150, first_ms: int = 2000) -> list[tuple[str, int, object]]:
    out = []
    wait = first_ms
    while sub.poll(wait):
        out.append(decode_frames(sub.recv_multipart()))
        wait = quiet_ms
    return out


def _drain_events(sub: zmq.Socket, n_events: int, timeout_ms: int = 3000, quiet_ms: int = 60) -> list:
    """Messages until `n_events` events arrived (or the timeout), then any stragglers within `quiet_ms`."""
    out, count = [], 0
    deadline = time.monotonic() + timeout_ms / 1000
    while count < n_events and sub.poll(max(1, int((deadline - time.monotonic()) * 1000))):
        msg = decode_frames(sub.recv_multipart())
        out.append(msg)
        count += len(msg[2].events)
    while sub.poll(quiet_ms):
        out.append(decode_frames(sub.recv_multipart()))
    return out


def _warm_up(sub: zmq.Socket, base: str) -> None:
    """Wait until the PUB->SUB connection carries messages (ZMQ's slow joiner), using a throwaway prompt."""
    deadline = time.monotonic() + 10
    salt = uuid.uuid4().hex
    while time.monotonic() < deadline:
        _client.post(
            base + "/v1/completions",
            timeout=10,
            json={"prompt": list(range(3, 3 + 32)), "max_tokens": 1, "cache_salt": salt},
        )
        if sub.poll(300):
            _drain(sub, first_ms=300)
            return
        salt = uuid.uuid4().hex
    raise AssertionError("no KV events from the simulator")


def test_connect_mode_two_pods_topics_and_sequences():
    sub, endpoint = _sub_bind(2)
    try:
        with sim_server(
            "--model",
            "m",
            "--time-scale",
            "0",
            "--pods",
            "2",
            "--block-size",
            "16",
            "--num-gpu-blocks",
            "64",
            "--kv-events-endpoint",
            endpoint,
            ports=2,
        ) as s:
            # connect mode: pod i connects to the collector's port + i
            _warm_up(sub, s.url(0))
            _warm_up(sub, s.url(1))
            for i in (0, 1):
                _client.post(
                    s.url(i) + "/v1/completions", json={"prompt": list(range(50, 82)), "max_tokens": 1}, timeout=10
                )
            msgs = _drain_events(sub, 2)
            by_topic = {t: (seq, batch) for t, seq, batch in msgs}
            assert set(by_topic) == {f"kv@127.0.0.1:{s.ports[0]}@m", f"kv@127.0.0.1:{s.ports[1]}@m"}
            for seq, batch in by_topic.values():
                assert seq >= 1  # the warm-up used sequence 0 (and maybe more) on each publisher
                stored = [e for e in batch.events if isinstance(e, BlockStored)]
                assert stored and stored[0].block_size == 16 and len(stored[0].block_hashes) == 2
                assert batch.data_parallel_rank == 0
            # same tokens, same hash on both pods
            hashes = [tuple(b.events[0].block_hashes) for _, b in by_topic.values()]
            assert hashes[0] == hashes[1]
    finally:
        sub.close(0)


def test_bind_mode_data_parallel_ranks(tmp_path):
    endpoint = f"ipc://{tmp_path}/kv"
    with sim_server(
        "--time-scale",
        "0",
        "--data-parallel-size",
        "2",
        "--kv-events-endpoint",
        endpoint,
        "--kv-events-topic",
        "kv@{host}:{port}@{model}-rank{rank}",
        "--kv-events-form",
        "positional",
        "--num-gpu-blocks",
        "64",
        "--block-size",
        "16",
        ports=2,
    ) as s:
        subs = []
        try:
            for suffix in ("", "-1"):  # the server bound one endpoint per rank
                sub = zmq.Context.instance().socket(zmq.SUB)
                sub.setsockopt(zmq.LINGER, 0)
                sub.setsockopt(zmq.SUBSCRIBE, b"")
                sub.connect(endpoint + suffix)
                subs.append(sub)
            for rank, sub in enumerate(subs):
                _warm_up(sub, s.url(rank))
                _client.post(
                    s.url(rank) + "/v1/completions", json={"prompt": list(range(9, 41)), "max_tokens": 1}, timeout=10
                )
                (topic, _seq, batch), *_ = _drain(sub)
                assert topic == f"kv@127.0.0.1:{s.ports[rank]}@sim-model-rank{rank}"
                assert batch.data_parallel_rank == rank
        finally:
            for sub in subs:
                sub.close(0)


def _events(frames_b64: list[str]):
    return decode_frames([base64.b64decode(f) for f in frames_b64])[2].events


def _canon(event) -> tuple:
    if isinstance(event, BlockStored):
        return ("stored", tuple(event.block_hashes), event.parent_block_hash, tuple(event.token_ids), event.block_size)
    if isinstance(event, BlockRemoved):
        return ("removed", tuple(event.block_hashes))
    assert isinstance(event, AllBlocksCleared)
    return ("cleared",)


CAPTURE_FLAGS = {
    "sha256_int": [],
    "sha256_cbor_bytes": ["--prefix-caching-hash-algo", "sha256_cbor", "--no-kv-events-int-hashes"],
    "sha256_int_PYTHONHASHSEED42": ["--hash-seed", "42"],
}


@pytest.mark.parametrize("label", list(CAPTURE_FLAGS))
def test_real_vllm_capture_end_to_end(capture, label):
    entry = next(c for c in capture["captures"] if c["label"] == label)
    sub, endpoint = _sub_bind()
    try:
        with sim_server(
            "--model",
            "tinyllama",
            "--time-scale",
            "0",
            "--block-size",
            "32",
            "--num-gpu-blocks",
            "96",
            "--max-model-len",
            "2048",
            "--max-num-seqs",
            "8",
            "--kv-events-endpoint",
            endpoint,
            *CAPTURE_FLAGS[label],
        ) as s:
            # slow joiner: the first request's events must not be lost, so wait for a probe round trip first,
            # then clear the probe's blocks (its AllBlocksCleared goes out with the next step, see below).
            _warm_up(sub, s.base)
            assert _client.post(s.base + "/reset_prefix_cache", timeout=5).status_code == 200
            pending_clear = True
            topic_seen = None
            last_seq = None
            for step in entry["steps"]:
                if step["request"] is None:
                    assert _client.post(s.base + "/reset_prefix_cache", timeout=5).status_code == 200
                    continue
                body = {
                    "model": "tinyllama",
                    "prompt": step["prompt_token_ids"],
                    "max_tokens": len(step["output_token_ids"]),
                    "ignore_eos": True,
                    "return_token_ids": True,
                    "sim_output_token_ids": step["output_token_ids"],
                }
                if step["request"].get("cache_salt"):
                    body["cache_salt"] = step["request"]["cache_salt"]
                r = _client.post(s.base + "/v1/completions", json=body, timeout=20)
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["token_ids"] == step["output_token_ids"]
                want = [_canon(e) for m in step["messages"] for e in _events(m["frames_b64"])]
                got_msgs = _drain_events(sub, len(want) + (1 if pending_clear else 0))
                got = [_canon(e) for _, _, b in got_msgs for e in b.events]
                if pending_clear:  # the reset after the warm-up rides on the next step's batch, as in vLLM
                    assert got and got[0] == ("cleared",), got[:1]
                    got = got[1:]
                    pending_clear = False
                assert got == want, f"{label}/{step['name']}: events differ"
                for t, seq, batch in got_msgs:
                    topic_seen = topic_seen or t
                    assert t == topic_seen == f"kv@127.0.0.1:{s.port}@tinyllama"
                    assert last_seq is None or seq == last_seq + 1
                    last_seq = seq
                    assert batch.data_parallel_rank == 0
    finally:
        sub.close(0)
