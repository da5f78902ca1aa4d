"""KV blocks: the tokenizer and block hashing router and pods share, vLLM's event wire format, tiered block store."""

from kvtiers.fs_tier import FsTier, KVTierWarning
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
from kvtiers.policy import PolicyConfig, TypePolicy
from kvtiers.store import CostModel, FilesystemTier, MemoryTier, TieredStore, TierLookup
from kvtiers.tokenizer import BuiltinTokenizer, HFTokenizer, TokenizerError, load_tokenizer
from kvtiers.types import BlockType, request_block_types

__all__ = [
    "AllBlocksCleared",
    "BlockHasher",
    "BlockRemoved",
    "BlockStored",
    "BlockType",
    "BuiltinTokenizer",
    "HFTokenizer",
    "TokenizerError",
    "load_tokenizer",
    "CostModel",
    "FilesystemTier",
    "FsTier",
    "KVTierWarning",
    "MemoryTier",
    "PolicyConfig",
    "TierLookup",
    "TieredStore",
    "TypePolicy",
    "request_block_types",
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
