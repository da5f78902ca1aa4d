"""The KV event publisher on real ZMQ sockets: vLLM's bind/connect rule, topic, sequence, rank, hash forms."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
import zmq

from kvtiers import AllBlocksCleared, BlockRemoved, BlockStored, decode_frames, to_event_hash
from kvtiers.kvevents import decode_payload
from sim_gpu.kv_publisher import KVEventPublisher, offset_endpoint, render_topic, should_bind, validate_endpoint
from tests.conftest import free_port

DIGEST_A = hashlib.sha256(b"a").digest()
DIGEST_B = hashlib.sha256(b"b").digest()


def _stored() -> BlockStored:
    return BlockStored(
        block_hashes=[DIGEST_A, DIGEST_B], parent_block_hash=None, token_ids=list(range(32)), block_size=16
    )


def _recv_after_probe(sub: zmq.Socket, pub: KVEventPublisher, timeout: float = 5.0) -> list[bytes]:
    """Publish probes until the subscription is live (ZMQ's slow joiner), then return the first message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish([AllBlocksCleared()])
        if sub.poll(50):
            last = sub.recv_multipart()
            while sub.poll(100):  # drain late probes
                last = sub.recv_multipart()
            return last
    raise AssertionError("no KV event arrived")


def test_vllm_bind_rule():
    assert should_bind("tcp://*:5557")
    assert should_bind("tcp://[::]:5557") and should_bind("ipc:///tmp/x") and should_bind("inproc://x")
    assert not should_bind("tcp://127.0.0.1:5557")
    assert not should_bind("tcp://router:5557")


def test_offsets_and_topics():
    assert offset_endpoint("tcp://*:5557", 0) == "tcp://*:5557"
    assert offset_endpoint("tcp://*:5557", 3) == "tcp://*:5560"
    assert offset_endpoint("tcp://10.0.0.1:6000", 2) == "tcp://10.0.0.1:6002"
    assert offset_endpoint("ipc:///tmp/kv", 1) == "ipc:///tmp/kv-1"
    assert render_topic(None, "127.0.0.1", 8102, "tinyllama") == "kv@127.0.0.1:8102@tinyllama"
    assert render_topic("kv@{host}@{model}-r{rank}", "h", 1, "m", rank=2) == "kv@h@m-r2"
    with pytest.raises(ValueError, match="--kv-events-topic"):
        render_topic("{nope}", "h", 1, "m")
    with pytest.raises(ValueError, match="--kv-events-endpoint"):
        validate_endpoint("http://x:1")
    with pytest.raises(ValueError, match="missing port"):
        validate_endpoint("tcp://localhost")


def test_bind_mode_topic_seq_rank_and_uint64_hashes(tmp_path):
    ctx = zmq.Context.instance()
    endpoint = f"ipc://{tmp_path}/kv-{uuid.uuid4().hex[:8]}"
    pub = KVEventPublisher(endpoint, "kv@h:1@m", data_parallel_rank=3)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    try:
        probe = _recv_after_probe(sub, pub)
        probe_seq = decode_frames(probe)[1]
        seq = pub.publish([_stored(), BlockRemoved(block_hashes=[DIGEST_A])])
        topic, got_seq, batch = decode_frames(sub.recv_multipart())
        assert topic == "kv@h:1@m"
        assert got_seq == seq == probe_seq + 1
        assert batch.data_parallel_rank == 3
        stored, removed = batch.events
        assert stored.block_hashes == [to_event_hash(DIGEST_A), to_event_hash(DIGEST_B)]
        assert all(isinstance(h, int) and 0 <= h < 2**64 for h in stored.block_hashes)
        assert removed.block_hashes == [to_event_hash(DIGEST_A)]
        # sequence numbers are consecutive per publisher
        s2 = pub.publish([AllBlocksCleared()])
        assert decode_frames(sub.recv_multipart())[1] == s2 == seq + 1
        assert pub.publish([]) is None  # nothing to send, no sequence number used
    finally:
        sub.close(0)
        pub.close()


def test_connect_mode_full_digests_positional_form():
    ctx = zmq.Context.instance()
    port = free_port()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(f"tcp://127.0.0.1:{port}")
    pub = KVEventPublisher(f"tcp://127.0.0.1:{port}", "t", form="positional", int_hashes=False)
    try:
        _recv_after_probe(sub, pub)
        pub.publish([_stored()])
        frames = sub.recv_multipart()
        assert frames[0] == b"t"
        batch = decode_payload(frames[2])
        assert batch.events[0].block_hashes == [DIGEST_A, DIGEST_B]
        assert batch.data_parallel_rank == 0
        # positional form: the event is an array starting with its type name, not a map
        import msgspec

        raw = msgspec.msgpack.decode(frames[2])
        assert raw[1][0][0] == "BlockStored"
    finally:
        sub.close(0)
        pub.close()


def test_bind_failure_is_one_line_error():
    with pytest.raises(ValueError, match="cannot bind"):
        KVEventPublisher(f"ipc:///nonexistent-dir-{uuid.uuid4().hex}/x", "t")
