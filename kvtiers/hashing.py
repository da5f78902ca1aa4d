"""vLLM's prefix-cache block hashes, reproduced exactly.

vLLM identifies a full KV block by a chained hash: ``h_i = H((h_{i-1}, tuple(block_tokens), extra_keys))``
with ``h_{-1} = NONE_HASH = H(seed)``; the seed is ``$PYTHONHASHSEED`` when set, else ``"vllm-none-hash"``.
``H`` is sha256 over a pickle (``sha256``, vLLM's default) or over canonical CBOR (``sha256_cbor``). The
cache salt enters block 0's extra keys as ``("cache_salt", salt)`` and a LoRA adapter every block's as
``("lora", name)`` (vLLM 0.32 tags both so that an adapter name can never alias a salt; the capture in
../shared/vectors confirms the salt's tag). KV events carry either the full digest or, by default, its last 8
bytes as an unsigned integer. Engine and router both hash here, so a block id means the same on both sides.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cbor2

HashAlgo = Literal["sha256", "sha256_cbor"]
HASH_ALGOS: tuple[str, ...] = ("sha256", "sha256_cbor")
DEFAULT_SEED = "vllm-none-hash"
_UINT64_MASK = 0xFFFFFFFFFFFFFFFF
_LAST8 = struct.Struct(">Q")  # the low 64 bits of a big-endian digest are its last 8 bytes
_CHAIN_TOKENS = 2_000_000  # tokens the memo's remembered chains may hold (references to the callers' ints)
_CHAINS_LOCK = threading.Lock()


def _sha256_pickle(obj: Any) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def _sha256_cbor(obj: Any) -> bytes:
    return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()


_HASH_FUNCTIONS = {"sha256": _sha256_pickle, "sha256_cbor": _sha256_cbor}


def seed_from_env(env: dict[str, str] | None = None) -> str:
    """The NONE_HASH seed vLLM would use in an environment: PYTHONHASHSEED if set, else vLLM's default."""
    value = (os.environ if env is None else env).get("PYTHONHASHSEED")
    return value if value not in (None, "") else DEFAULT_SEED


def to_event_hash(digest: bytes, use_int: bool = True) -> int | bytes:
    """How a digest appears in a KV event: low 64 bits as uint64 (vLLM's default) or the full bytes."""
    return int.from_bytes(digest, "big") & _UINT64_MASK if use_int else digest


def to_event_hashes(digests: Sequence[bytes]) -> list[int]:
    """`to_event_hash(d)` (uint64 form) of each digest, in one pass: the router converts a whole prompt's."""
    last8 = _LAST8.unpack_from
    return [last8(d, len(d) - 8)[0] for d in digests]


# A multimodal item in a prompt: (identifier, offset of its first placeholder token, placeholder count).
MMItem = tuple[str, int, int]


def mm_block_keys(start: int, end: int, items: Sequence[MMItem]) -> list[tuple[str, int]]:
    """vLLM's multimodal extra keys of the block of tokens [start, end): `(identifier, item offset - start)` for
    every item whose placeholders overlap it (negative when the item began in an earlier block)."""
    return [(ident, off - start) for ident, off, n in items if off < end and off + n > start]


def block_extra_keys(
    block_index: int,
    cache_salt: str | None = None,
    lora_name: str | None = None,
    mm: Sequence[tuple[str, int]] = (),
) -> tuple | None:
    """Extra keys of one block as vLLM builds them: the tagged LoRA name on every block, the block's
    multimodal keys, then the tagged cache salt on block 0 (vLLM's order: LoRA, multimodal, salt)."""
    keys: list[Any] = []
    if lora_name:
        keys.append(("lora", lora_name))
    keys.extend(mm)
    if cache_salt and block_index == 0:
        keys.append(("cache_salt", cache_salt))
    return tuple(keys) if keys else None


@dataclass
class BlockHasher:
    """Hashes token sequences into vLLM block digests for one (algorithm, seed, block size) setting.

    With `memo_blocks` > 0 it remembers that many (parent, block, extra) -> digest entries: shared prefixes
    (system prompts, earlier turns) then cost a dict lookup per block instead of a serialisation and a sha256.
    It also keeps the latest plain chain (no salt, LoRA or multimodal keys) per first block: a prompt that
    shares a prefix with it takes those digests after a few C-speed slice comparisons, not a lookup per block.
    """

    block_size: int
    algo: str = "sha256"
    seed: str = DEFAULT_SEED
    memo_blocks: int = 0
    _fn: Any = field(init=False, repr=False)
    _memo: dict[Any, bytes] | None = field(init=False, repr=False, default=None)
    _chains: dict[tuple, tuple[tuple, tuple[bytes, ...]]] = field(init=False, repr=False, default_factory=dict)
    _chain_tokens: int = field(init=False, repr=False, default=0)
    none_hash: bytes = field(init=False)

    def __post_init__(self) -> None:
        if self.algo not in _HASH_FUNCTIONS:
            raise ValueError(
                f"prefix-caching hash algorithm: expected one of {', '.join(HASH_ALGOS)}, got {self.algo!r}"
            )
        if self.block_size <= 0:
            raise ValueError(f"block_size: expected a positive integer, got {self.block_size!r}")
        self._fn = _HASH_FUNCTIONS[self.algo]
        self.none_hash = self._fn(self.seed)
        if self.memo_blocks > 0:
            self._memo = {}

    def hash_block(self, parent: bytes | None, tokens: Sequence[int], extra_keys: tuple | None = None) -> bytes:
        """Digest of one full block given its parent's digest (None for the first block)."""
        return self._fn((self.none_hash if parent is None else parent, tuple(tokens), extra_keys))

    def hash_next(self, parent: bytes | None, tokens: Sequence[int]) -> bytes:
        """`hash_blocks(tokens, parent=parent)[0]` for one full block without extra keys (no salt past block 0,
        no LoRA): a decode filling its next block, the hot case. Through the memo when there is one."""
        key = (parent, tuple(tokens), None)
        memo = self._memo
        digest = None if memo is None else memo.get(key)
        if digest is None:
            digest = self._fn((self.none_hash if parent is None else parent, key[1], None))
            if memo is not None:
                if len(memo) >= self.memo_blocks:
                    memo.clear()
                memo[key] = digest
        return digest

    def hash_blocks(
        self,
        token_ids: Sequence[int],
        cache_salt: str | None = None,
        lora_name: str | None = None,
        parent: bytes | None = None,
        start_block: int = 0,
        mm_items: Sequence[MMItem] = (),
    ) -> list[bytes]:
        """Digests of every full block of `token_ids` (a trailing partial block is not hashed).

        `parent`/`start_block` continue a chain, e.g. for blocks that fill during decode (`token_ids` then
        start at block `start_block`; `mm_items` offsets count from the prompt's start).
        """
        digests: list[bytes] = []
        bs = self.block_size
        memo = self._memo
        if memo is not None:
            return self._hash_blocks_memo(memo, token_ids, cache_salt, lora_name, parent, start_block, mm_items)
        for i in range(len(token_ids) // bs):
            b = start_block + i
            mm = mm_block_keys(b * bs, (b + 1) * bs, mm_items) if mm_items else ()
            extra = block_extra_keys(b, cache_salt, lora_name, mm)
            parent = self.hash_block(parent, token_ids[i * bs : (i + 1) * bs], extra)
            digests.append(parent)
        return digests

    def _hash_blocks_memo(
        self,
        memo: dict[Any, bytes],
        token_ids: Sequence[int],
        cache_salt: str | None,
        lora_name: str | None,
        parent: bytes | None,
        start_block: int,
        mm_items: Sequence[MMItem] = (),
    ) -> list[bytes]:
        """hash_blocks through the memo: a hit costs a tuple and a dict lookup instead of a serialisation and
        a sha256 (about a quarter of the time)."""
        if len(memo) >= self.memo_blocks:
            memo.clear()  # bounded: a cleared memo only costs re-hashing
        bs = self.block_size
        fn, none_hash = self._fn, self.none_hash
        plain = not cache_salt and not lora_name and not mm_items
        toks = token_ids if type(token_ids) is tuple else tuple(token_ids)  # slices are then the keys' tuples
        n = len(toks) // bs
        digests: list[bytes] = []
        first = None
        if plain and parent is None and start_block == 0 and n:
            first = toks[:bs]
            prev = self._chains.get(first)
            if prev is not None:  # the digests of the prefix it shares with the latest chain of this first block
                digests = list(prev[1][: _common_blocks(toks, prev[0], bs)])
                parent = digests[-1]
        for i in range(len(digests), n):
            if plain:
                extra = None
            else:
                b = start_block + i
                mm = mm_block_keys(b * bs, (b + 1) * bs, mm_items) if mm_items else ()
                extra = block_extra_keys(b, cache_salt, lora_name, mm)
            key = (parent, toks[i * bs : (i + 1) * bs], extra)
            digest = memo.get(key)
            if digest is None:
                digest = memo[key] = fn((none_hash if parent is None else parent, key[1], extra))
            parent = digest
            digests.append(digest)
        if first is not None:
            self._remember(first, toks, tuple(digests))
        return digests

    def _remember(self, first: tuple, toks: tuple, digests: tuple[bytes, ...]) -> None:
        """Keep a chain as the latest one starting with `first` (bounded by the tokens all chains hold). Under a
        lock: the gateway hashes long prompts in worker threads, and the count must match the chains held."""
        with _CHAINS_LOCK:
            chains = self._chains
            old = chains.pop(first, None)
            if old is not None:
                self._chain_tokens -= len(old[0])
            if self._chain_tokens + len(toks) > _CHAIN_TOKENS:
                chains.clear()
                self._chain_tokens = 0
            chains[first] = (toks, digests)
            self._chain_tokens += len(toks)


def _common_blocks(a: tuple, b: tuple, bs: int) -> int:
    """Leading full blocks of `a` and `b` that are equal, given that their first blocks are: a binary search
    over slice comparisons, each comparing only blocks not yet known equal (C speed, no per-block lookup)."""
    lo, hi = 1, min(len(a), len(b)) // bs  # blocks [0, lo) are equal; the answer is at most hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo * bs : mid * bs] == b[lo * bs : mid * bs]:
            lo = mid
        else:
            hi = mid - 1
    return lo
