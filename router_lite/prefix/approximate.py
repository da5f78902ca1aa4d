"""The approximate prefix index: what the router itself sent where, as llm-d's prefix-cache-scorer keeps it.

No events: after each routing decision the chosen endpoint is credited with the request's block hashes, in
a per-endpoint LRU bounded by `capacity_per_server` (an estimate of how many blocks the pod's cache holds).
Hashes are router-local (Python's tuple hash chained over token or character chunks, model name in the
first block), so they never need to agree with the engine's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence

CHARS_PER_TOKEN = 4  # llm-d's estimate when a prompt is not tokenized


def token_block_hashes(model: str, token_ids: Sequence[int], block_size: int, max_blocks: int) -> list[int]:
    """Chained hashes of full `block_size`-token chunks (at most `max_blocks`)."""
    n = min(len(token_ids) // block_size, max_blocks)
    out: list[int] = []
    h = hash(model)
    for i in range(n):
        h = hash((h, tuple(token_ids[i * block_size : (i + 1) * block_size])))
        out.append(h)
    return out


class LazyBlockHashes:
    """Chained block hashes computed on demand and kept: a lookup hashes only up to its first miss."""

    __slots__ = ("_chunks", "_n", "done", "_h")

    def __init__(self, model: str, chunks: Sequence, block: int, max_blocks: int) -> None:
        self._chunks = chunks
        self._n = min(len(chunks) // block, max_blocks)
        self.done: list[int] = []
        self._h = (hash(model), block)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[int]:
        yield from self.done
        chunks, done = self._chunks, self.done
        h, bs = self._h
        h = done[-1] if done else h
        if not isinstance(chunks, (str, tuple)):
            chunks = self._chunks = tuple(chunks)  # once: its slices are the tuples hashed
        for i in range(len(done), self._n):
            h = hash((h, chunks[i * bs : (i + 1) * bs]))
            done.append(h)
            yield h

    def all(self) -> list[int]:
        for _ in self:
            pass
        return self.done


def text_block_hashes(model: str, text: str, block_chars: int, max_blocks: int) -> list[int]:
    """Chained hashes of full `block_chars`-character chunks of the prompt text (at most `max_blocks`)."""
    n = min(len(text) // block_chars, max_blocks)
    out: list[int] = []
    h = hash(model)
    for i in range(n):
        h = hash((h, text[i * block_chars : (i + 1) * block_chars]))
        out.append(h)
    return out


class ApproximatePrefixIndex:
    """hash -> endpoints that were sent it, with a per-endpoint LRU of at most `capacity_per_server` blocks."""

    def __init__(self, capacity_per_server: int = 31250) -> None:
        if capacity_per_server <= 0:
            raise ValueError(f"capacity_per_server: expected a positive integer, got {capacity_per_server!r}")
        self.capacity_per_server = capacity_per_server
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self._idx: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self.evictions = 0

    def add(self, endpoint_key: str, block_hashes: Sequence[int]) -> None:
        """Credit `endpoint_key` with `block_hashes` (most recent use), evicting its oldest beyond capacity."""
        with self._lock:
            lru = self._lru.get(endpoint_key)
            if lru is None:
                lru = self._lru[endpoint_key] = OrderedDict()
            idx = self._idx
            for h in block_hashes:
                if h in lru:
                    lru.move_to_end(h)
                    continue
                lru[h] = None
                holders = idx.get(h)
                if holders is None:
                    idx[h] = {endpoint_key}
                else:
                    holders.add(endpoint_key)
            over = len(lru) - self.capacity_per_server
            for _ in range(max(0, over)):
                old, _v = lru.popitem(last=False)
                self.evictions += 1
                holders = idx.get(old)
                if holders is not None:
                    holders.discard(endpoint_key)
                    if not holders:
                        del idx[old]

    def match(self, block_hashes: Iterable[int]) -> dict[str, int]:
        """Per endpoint: how many blocks from the start of `block_hashes` it was sent, consecutively.

        `block_hashes` may be a lazy iterator: it is consumed only up to the first block nobody holds.
        """
        it = iter(block_hashes)
        first_hash = next(it, None)
        if first_hash is None:
            return {}
        with self._lock:
            idx = self._idx
            first = idx.get(first_hash)
            if not first:
                return {}
            active = set(first)
            out: dict[str, int] = {}
            i = 1
            for h in it:
                holders = idx.get(h)
                if holders is None:
                    break
                if not active <= holders:
                    for k in active - holders:
                        out[k] = i
                    active &= holders
                    if not active:
                        return out
                i += 1
            for k in active:
                out[k] = i
            return out

    def remove_endpoint(self, endpoint_key: str) -> None:
        with self._lock:
            for h in self._lru.pop(endpoint_key, {}):
                holders = self._idx.get(h)
                if holders is not None:
                    holders.discard(endpoint_key)
                    if not holders:
                        del self._idx[h]

    def blocks_of(self, endpoint_key: str) -> int:
        return len(self._lru.get(endpoint_key, ()))

    def stats(self) -> dict[str, int]:
        return {"blocks": len(self._idx), "endpoints": len(self._lru), "evictions": self.evictions}
