"""KV blocks: vLLM-compatible block hashing and event wire format, tiered block store and global index."""

from kvtiers.hashing import BlockHasher, block_extra_keys, seed_from_env, to_event_hash
from kvtiers.kvevents import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEvent,
    KVEventBatch,
    KVEventDecodeError,
    decode_frames,
    decode_payload,
    encode_frames,
    encode_payload,
)

__all__ = [
    "AllBlocksCleared",
    "BlockHasher",
    "BlockRemoved",
    "BlockStored",
    "KVEvent",
    "KVEventBatch",
    "KVEventDecodeError",
    "block_extra_keys",
    "decode_frames",
    "decode_payload",
    "encode_frames",
    "encode_payload",
    "seed_from_env",
    "to_event_hash",
]
