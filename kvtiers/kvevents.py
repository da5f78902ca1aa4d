"""vLLM's KV-cache event wire format (ZMQ multipart, msgpack), encoded and decoded with msgspec as vLLM does.

A message is three frames: ``[topic, seq as 8-byte big-endian, payload]``; the payload is the array
``[ts, events, data_parallel_rank]``. Current vLLM tags each event as a map with a ``type`` key; older vLLM
(and llm-d's decoder) use positional arrays ``["BlockStored", hashes, parent, tokens, block_size, lora_id,
medium]``. Both are decoded; either can be encoded. Hashes are uint64 or full digest bytes.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

EventForm = Literal["map", "positional"]
BlockHashT = Union[int, bytes]


class BlockStored(msgspec.Struct, tag=True, tag_field="type", kw_only=True):
    block_hashes: list[BlockHashT]
    parent_block_hash: BlockHashT | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int = 0
    kv_cache_spec_kind: str = "full_attention"


class BlockRemoved(msgspec.Struct, tag=True, tag_field="type", kw_only=True):
    block_hashes: list[BlockHashT]
    medium: str | None = "GPU"
    group_idx: int = 0


class AllBlocksCleared(msgspec.Struct, tag=True, tag_field="type", kw_only=True):
    pass


KVEvent = Union[BlockStored, BlockRemoved, AllBlocksCleared]


class KVEventBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[KVEvent]
    data_parallel_rank: int | None = None


# Older vLLM / llm-d positional forms.
class _PosBlockStored(msgspec.Struct, tag="BlockStored", array_like=True):
    block_hashes: list[BlockHashT]
    parent_block_hash: BlockHashT | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"


class _PosBlockRemoved(msgspec.Struct, tag="BlockRemoved", array_like=True):
    block_hashes: list[BlockHashT]
    medium: str | None = "GPU"


class _PosAllBlocksCleared(msgspec.Struct, tag="AllBlocksCleared", array_like=True):
    pass


class _PosBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[Union[_PosBlockStored, _PosBlockRemoved, _PosAllBlocksCleared]]
    data_parallel_rank: int | None = None


_map_encoder = msgspec.msgpack.Encoder()
_map_decoder = msgspec.msgpack.Decoder(KVEventBatch)
_pos_decoder = msgspec.msgpack.Decoder(_PosBatch)


class KVEventDecodeError(ValueError):
    """A payload that is neither form of vLLM's KV event batch."""


# A payload larger than this is refused before decoding: one 18 MB frame once added 2M blocks (+626 MB) to the
# router's index. A real batch (one engine step) is far smaller: a 32k-token prefill is ~2k blocks, ~150 KB.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024


def _to_positional(event: KVEvent) -> msgspec.Struct:
    if isinstance(event, BlockStored):
        return _PosBlockStored(
            event.block_hashes, event.parent_block_hash, event.token_ids, event.block_size, event.lora_id, event.medium
        )
    if isinstance(event, BlockRemoved):
        return _PosBlockRemoved(event.block_hashes, event.medium)
    return _PosAllBlocksCleared()


def _from_positional(event: msgspec.Struct) -> KVEvent:
    if isinstance(event, _PosBlockStored):
        return BlockStored(
            block_hashes=event.block_hashes,
            parent_block_hash=event.parent_block_hash,
            token_ids=event.token_ids,
            block_size=event.block_size,
            lora_id=event.lora_id,
            medium=event.medium,
        )
    if isinstance(event, _PosBlockRemoved):
        return BlockRemoved(block_hashes=event.block_hashes, medium=event.medium)
    return AllBlocksCleared()


def encode_payload(batch: KVEventBatch, form: EventForm = "map") -> bytes:
    """The msgpack payload frame for `batch` in current (`map`) or older (`positional`) vLLM form."""
    if form == "positional":
        return _map_encoder.encode(
            _PosBatch(batch.ts, [_to_positional(e) for e in batch.events], batch.data_parallel_rank)
        )
    return _map_encoder.encode(batch)


def decode_payload(payload: bytes) -> KVEventBatch:
    """Decode a payload frame in either form; raises KVEventDecodeError on anything else."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise KVEventDecodeError(f"payload of {len(payload)} bytes is over the limit of {MAX_PAYLOAD_BYTES} bytes")
    try:
        return _map_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):  # msgspec raises RecursionError on hostile nesting (extra_keys)
        pass
    try:
        pos = _pos_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise KVEventDecodeError(f"not a vLLM KV event batch: {type(exc).__name__}: {exc}") from None
    return KVEventBatch(pos.ts, [_from_positional(e) for e in pos.events], pos.data_parallel_rank)


def encode_frames(topic: str, seq: int, batch: KVEventBatch, form: EventForm = "map") -> list[bytes]:
    """The three ZMQ frames of one message."""
    return [topic.encode(), seq.to_bytes(8, "big"), encode_payload(batch, form)]


def decode_frames(frames: list[bytes]) -> tuple[str, int, KVEventBatch]:
    """(topic, sequence number, batch) from the three frames of one message."""
    if len(frames) != 3 or len(frames[1]) != 8:
        raise KVEventDecodeError(f"expected 3 frames [topic, 8-byte seq, payload], got {len(frames)} frames")
    return frames[0].decode(errors="replace"), int.from_bytes(frames[1], "big"), decode_payload(frames[2])
