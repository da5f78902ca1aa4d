"""The router's KV event path end to end over real ZMQ: real vLLM frames replayed on a socket, decoded by the
subscriber, applied to the precise index, and matched against block hashes the router's own tokenization
path derives from the same token ids."""

from __future__ import annotations

import asyncio
import base64
import time

import msgspec
import zmq
import zmq.asyncio

from kvtiers.kvevents import BlockStored, KVEventBatch, decode_frames, encode_frames
from router_lite.datalayer import EndpointSpec, KVEventsSpec
from router_lite.kv_subscriber import KVEventSubscriber
from router_lite.prefix import PrecisePrefixIndex
from router_lite.tokenization import HashSettings, RequestTokenizer
from router_lite.types import LLMRequest
from tests.conftest import free_port

POD = "127.0.0.1:8102"  # the address in the capture's topic


def _frames(message: dict) -> list[bytes]:
    return [base64.b64decode(f) for f in message["frames_b64"]]


async def _wait(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def _wait_subscribed(xpub: zmq.asyncio.Socket, n: int = 1) -> None:
    """XPUB sees each SUB's subscription: no slow-joiner sleep needed."""
    for _ in range(n):
        msg = await asyncio.wait_for(xpub.recv(), 5.0)
        assert msg[:1] == b"\x01"


def _settings(entry: dict) -> HashSettings:
    cfg = entry["config"]
    return HashSettings(32, cfg["prefix_caching_hash_algo"], cfg.get("PYTHONHASHSEED") or "vllm-none-hash")


async def _replay_capture(entry: dict) -> None:
    ctx = zmq.asyncio.Context()
    port = free_port()
    xpub = ctx.socket(zmq.XPUB)
    xpub.bind(f"tcp://127.0.0.1:{port}")
    index = PrecisePrefixIndex()
    sub = KVEventSubscriber(index.apply, context=ctx)
    topic = entry["steps"][1]["messages"][0]["topic"]
    spec = EndpointSpec(POD, kv_events=KVEventsSpec(f"tcp://*:{port}", topic=topic, bind=False))
    await sub.start([spec])
    tok = RequestTokenizer(None, lambda: _settings(entry))
    try:
        await _wait_subscribed(xpub)
        earlier: list[int] = []
        for step in entry["steps"]:
            seqs = []
            for message in step["messages"]:
                frames = _frames(message)
                await xpub.send_multipart(frames)
                seqs.append(decode_frames(frames)[1])
            if seqs:
                await _wait(lambda: index.last_seq(POD) == seqs[-1])
            if step["prompt_token_ids"] is None:
                continue
            # The router's own path: the token ids as a completion prompt (tokens in), hashed as the engine does.
            req = LLMRequest("r", "tinyllama", cache_salt=step["request"].get("cache_salt"))
            await tok.prepare(req, "completions", {"model": "tinyllama", "prompt": step["prompt_token_ids"]})
            hashes = req.block_hashes
            assert hashes is not None and len(hashes) == len(step["prompt_token_ids"]) // 32
            for h in hashes:
                assert POD in index.holders(h), f"{entry['label']}/{step['name']}: block {h} not indexed for the pod"
            if hashes:
                assert index.match(hashes)[POD][0] == len(hashes)
            if step["name"] == "after_reset":
                # AllBlocksCleared arrived with this step's batch: nothing from before survives.
                assert not any(POD in index.holders(h) for h in earlier if h not in hashes)
            earlier.extend(hashes)
        assert sub.errors == 0
        assert sub.stats[POD].batches == sum(len(s["messages"]) for s in entry["steps"])
    finally:
        await sub.stop()
        xpub.close(0)
        ctx.term()


def test_capture_replayed_over_zmq_matches_router_hashes(capture):
    """All three hash settings (uint64 sha256, full-digest sha256_cbor, PYTHONHASHSEED=42)."""
    for entry in capture["captures"]:
        asyncio.run(_replay_capture(entry))


async def _bind_mode_and_topics() -> None:
    """The router binds one SUB; two pods connect to it and are told apart by topic; garbage is survived."""
    ctx = zmq.asyncio.Context()
    port = free_port()
    index = PrecisePrefixIndex()
    sub = KVEventSubscriber(index.apply, context=ctx)
    url = f"tcp://127.0.0.1:{port}"
    a = EndpointSpec("127.0.0.1:9001", kv_events=KVEventsSpec(url, topic="kv@127.0.0.1:9001@m", bind=True))
    b = EndpointSpec("127.0.0.1:9002", kv_events=KVEventsSpec(url, topic="kv@127.0.0.1:9002@m", bind=True))
    await sub.start([a, b])
    pub = ctx.socket(zmq.XPUB)
    pub.connect(url)
    try:
        await _wait_subscribed(pub, 2)

        def stored(hs: list[int]) -> KVEventBatch:
            return KVEventBatch(
                time.time(),
                [
                    BlockStored(
                        block_hashes=hs, parent_block_hash=None, token_ids=list(range(16 * len(hs))), block_size=16
                    )
                ],
            )

        await pub.send_multipart([b"kv@127.0.0.1:9001@m", b"\x00", b"garbage"])  # bad seq frame
        await pub.send_multipart([b"kv@127.0.0.1:9001@m", (0).to_bytes(8, "big"), b"\xc1\xc1"])  # bad msgpack
        await pub.send_multipart(encode_frames("kv@127.0.0.1:9001@m", 0, stored([11, 12])))
        await pub.send_multipart(encode_frames("kv@127.0.0.1:9002@m", 0, stored([21]), form="positional"))
        await _wait(lambda: index.last_seq("127.0.0.1:9001") == 0 and index.last_seq("127.0.0.1:9002") == 0)
        assert set(index.holders(11)) == {"127.0.0.1:9001"}
        assert set(index.holders(21)) == {"127.0.0.1:9002"}
        assert sub.errors == 2
        # A pod leaving discovery stops being routed; the other keeps working.
        sub.remove(a)
        await pub.send_multipart(encode_frames("kv@127.0.0.1:9002@m", 1, stored([22])))
        await _wait(lambda: index.last_seq("127.0.0.1:9002") == 1)
        assert set(index.holders(22)) == {"127.0.0.1:9002"}
    finally:
        await sub.stop()
        pub.close(0)
        ctx.term()


def test_bind_mode_routes_by_topic_and_survives_garbage():
    asyncio.run(_bind_mode_and_topics())


async def _dp_ranks() -> None:
    """A wide-EP pod publishing all ranks on one socket: each batch lands on its rank's endpoint."""
    ctx = zmq.asyncio.Context()
    port = free_port()
    xpub = ctx.socket(zmq.XPUB)
    xpub.bind(f"tcp://127.0.0.1:{port}")
    index = PrecisePrefixIndex()
    sub = KVEventSubscriber(index.apply, context=ctx)
    kv = KVEventsSpec(f"tcp://127.0.0.1:{port}", topic="kv@127.0.0.1:7000@m")
    ranks = [EndpointSpec(f"127.0.0.1:{7000 + r}", kv_events=kv, dp_rank=r) for r in range(2)]
    await sub.start(ranks)
    try:
        await _wait_subscribed(xpub)
        for r, h in ((0, 100), (1, 101)):
            batch = KVEventBatch(
                time.time(),
                [BlockStored(block_hashes=[h], parent_block_hash=None, token_ids=list(range(16)), block_size=16)],
                r,
            )
            await xpub.send_multipart(encode_frames("kv@127.0.0.1:7000@m", 0, batch))
        await _wait(lambda: index.last_seq("127.0.0.1:7001") == 0 and index.last_seq("127.0.0.1:7000") == 0)
        assert set(index.holders(100)) == {"127.0.0.1:7000"}
        assert set(index.holders(101)) == {"127.0.0.1:7001"}
    finally:
        await sub.stop()
        xpub.close(0)
        ctx.term()


def test_data_parallel_ranks_on_one_socket():
    asyncio.run(_dp_ranks())


def test_full_digest_events_normalise_to_router_hashes():
    from kvtiers.hashing import BlockHasher, to_event_hash
    from router_lite.kv_subscriber import normalise_batch

    digests = BlockHasher(16).hash_blocks(list(range(48)))
    batch = KVEventBatch(
        0.0, [BlockStored(block_hashes=digests, parent_block_hash=None, token_ids=list(range(48)), block_size=16)]
    )
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(normalise_batch(batch)))
    assert back[1][0]["block_hashes"] == [to_event_hash(d) for d in digests]


def _deeply_nested_frames(topic: str, seq: int, depth: int) -> list[bytes]:
    """A BlockStored whose extra_keys nest `depth` arrays deep (msgpack 0x91 = array of one)."""
    ev = BlockStored(
        block_hashes=[1], parent_block_hash=None, token_ids=list(range(16)), block_size=16, extra_keys=["SENTINEL"]
    )
    frames = encode_frames(topic, seq, KVEventBatch(time.time(), [ev], 0))
    sentinel = msgspec.msgpack.encode("SENTINEL")
    assert frames[2].count(sentinel) == 1
    frames[2] = frames[2].replace(sentinel, b"\x91" * depth + b"\xc0")
    return frames


async def _hostile_frames() -> None:
    """Issue 18: nested extra_keys, a foreign DP rank and garbage are each one counted error; the loop lives on
    and no other pod's entries move."""
    ctx = zmq.asyncio.Context()
    ports = [free_port(), free_port()]
    xa, xb = ctx.socket(zmq.XPUB), ctx.socket(zmq.XPUB)
    xa.bind(f"tcp://127.0.0.1:{ports[0]}")
    xb.bind(f"tcp://127.0.0.1:{ports[1]}")
    index = PrecisePrefixIndex()
    sub = KVEventSubscriber(index.apply, context=ctx)
    a = EndpointSpec("127.0.0.1:9100", kv_events=KVEventsSpec(f"tcp://127.0.0.1:{ports[0]}", topic="kv@a@m"), dp_rank=0)
    b = EndpointSpec("127.0.0.1:9101", kv_events=KVEventsSpec(f"tcp://127.0.0.1:{ports[1]}", topic="kv@b@m"))
    await sub.start([a, b])

    def stored(hs: list[int], rank: int = 0) -> KVEventBatch:
        return KVEventBatch(
            time.time(),
            [BlockStored(block_hashes=hs, parent_block_hash=None, token_ids=list(range(16 * len(hs))), block_size=16)],
            rank,
        )

    try:
        await _wait_subscribed(xa)
        await _wait_subscribed(xb)
        await xb.send_multipart(encode_frames("kv@b@m", 0, stored([500])))
        await _wait(lambda: index.last_seq("127.0.0.1:9101") == 0)
        await xa.send_multipart(_deeply_nested_frames("kv@a@m", 0, 200_000))
        # pod a claims rank 1 = port 9101 = pod b, and clears "its" blocks: must not touch b
        from kvtiers.kvevents import AllBlocksCleared

        await xa.send_multipart(encode_frames("kv@a@m", 1, KVEventBatch(time.time(), [AllBlocksCleared()], 1)))
        await xa.send_multipart(encode_frames("kv@a@m", 2, stored([7])))
        await _wait(lambda: index.last_seq("127.0.0.1:9100") == 2)
        assert set(index.holders(7)) == {"127.0.0.1:9100"}
        assert set(index.holders(500)) == {"127.0.0.1:9101"}
        snap = sub.snapshot()
        assert sub.errors == 2 and snap["per_endpoint"]["127.0.0.1:9100"]["errors"] == 1
        sock_a = next(s for s in snap["sockets"] if s["endpoints"] == ["127.0.0.1:9100"])
        assert sock_a["decode_errors"] == 1 and sock_a["foreign_rank"] == 1 and sock_a["receiving"]
    finally:
        await sub.stop()
        xa.close(0)
        xb.close(0)
        ctx.term()


def test_hostile_frames_are_counted_and_survived():
    asyncio.run(_hostile_frames())


def test_decoder_refuses_oversized_and_deep_payloads():
    import pytest

    from kvtiers.kvevents import MAX_PAYLOAD_BYTES, KVEventDecodeError, decode_payload

    with pytest.raises(KVEventDecodeError, match="over the limit"):
        decode_payload(b"\x93" + b"\x00" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(KVEventDecodeError, match="not a vLLM KV event batch"):
        decode_payload(_deeply_nested_frames("t", 0, 200_000)[2])
