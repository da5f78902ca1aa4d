"""The paged KV block pool with automatic prefix caching, after vLLM v1's BlockPool.

Blocks live in one of two places: held by requests (ref count > 0) or in the free queue. A freed block keeps
its content hash and stays findable by it (a prefix-cache hit "touches" it back out of the free queue); it
is only evicted — hash dropped, `BlockRemoved` emitted — when the free queue hands it out again. The free
queue is LRU: allocation pops the front; requests free their blocks tail-first so a request's last blocks are
evicted before its (more shareable) first ones; freed blocks that never got a hash (partial blocks) go to the
front, since nothing can hit them (this is what reproduces the eviction order of the real vLLM capture).
Block 0 is the null block and is never handed out, as in vLLM, so `num_blocks` includes it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from kvtiers.hashing import to_event_hash, to_event_hashes
from kvtiers.kvevents import AllBlocksCleared, BlockRemoved, BlockStored


class KVBlock:
    """One KV block: its id, how many requests hold it, and its content hash once full."""

    __slots__ = ("block_id", "ref_cnt", "block_hash")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: bytes | None = None

    def __repr__(self) -> str:
        h = self.block_hash.hex()[-8:] if self.block_hash else None
        return f"KVBlock({self.block_id}, ref={self.ref_cnt}, hash={h})"


class BlockPool:
    """Free queue + hash -> block map + ref counts, emitting vLLM KV events into a queue."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_caching: bool = True,
        enable_events: bool = True,
        event_hash_int: bool = True,
    ) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_gpu_blocks: expected >= 2 (block 0 is reserved), got {num_blocks!r}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.enable_events = enable_events
        self.event_hash_int = event_hash_int
        self.null_block = KVBlock(0)
        self.null_block.ref_cnt = 1
        # The free queue, front (next handed out) to back, in three parts so that a pool of 100k blocks costs
        # nothing until used: freed hashless blocks, never-used blocks (ids _next_fresh..num_blocks-1, made
        # on demand), then freed blocks in LRU order. OrderedDicts give O(1) pop, append and removal.
        self._front: OrderedDict[int, KVBlock] = OrderedDict()
        self._next_fresh = 1
        self._back: OrderedDict[int, KVBlock] = OrderedDict()
        self._cached: dict[bytes, dict[int, KVBlock]] = {}
        # digest -> the first block of its _cached entry (the one a prefix hit takes): prefix matching looks a
        # whole chain up in one C-level map() over it instead of a Python loop over the entries.
        self._first: dict[bytes, KVBlock] = {}
        self._events: list[Any] = []
        # Digests evicted, in order (absolute position evict_base + i), and an epoch bumped by a cache reset:
        # lets KVCacheManager re-validate a waiting request's prefix hits without re-probing them all.
        self.evict_log: list[bytes] = []
        self.evict_base = 0
        self.cache_epoch = 0
        # Lower KV tiers (kvtiers.engine_hook.EngineTiers) or None: evicted blocks are offered to them and
        # their CPU/DISK events follow the pool's. Set by kvtiers.engine_hook.attach_tiers.
        self.tiers: Any = None

    # ---- queries -----------------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks no request holds (cached-but-free blocks included), as vLLM counts them."""
        return len(self._front) + (self.num_blocks - self._next_fresh) + len(self._back)

    def usage(self) -> float:
        """Fraction of usable blocks held by requests (vllm:kv_cache_usage_perc)."""
        total = self.num_blocks - 1
        return 1.0 - self.num_free_blocks / total if total else 0.0

    def get_cached_block(self, block_hash: bytes) -> KVBlock | None:
        return self._first.get(block_hash)

    def num_cached_blocks(self) -> int:
        return sum(len(v) for v in self._cached.values())

    def free_queue_ids(self) -> list[int]:
        """Block ids in eviction order (front first); for tests and debugging."""
        return list(self._front) + list(range(self._next_fresh, self.num_blocks)) + list(self._back)

    def event_hash(self, digest: bytes) -> int | bytes:
        return to_event_hash(digest, self.event_hash_int)

    # ---- allocation --------------------------------------------------------------------------------------

    def get_new_blocks(self, n: int) -> list[KVBlock]:
        """Hand out `n` blocks from the front of the free queue, evicting any cached content they hold."""
        free = self.num_free_blocks
        if n > free:
            raise ValueError(f"cannot allocate {n} blocks: only {free} free")
        out: list[KVBlock] = []
        front = self._front
        while front and len(out) < n:
            out.append(front.popitem(last=False)[1])
        fresh = min(n - len(out), self.num_blocks - self._next_fresh)
        if fresh > 0:
            start = self._next_fresh
            out.extend(KVBlock(i) for i in range(start, start + fresh))
            self._next_fresh = start + fresh
        popitem = self._back.popitem
        while len(out) < n:
            out.append(popitem(last=False)[1])
        for block in out:
            if block.block_hash is not None:
                self._evict(block)
            block.ref_cnt = 1
        return out

    def get_new_block(self) -> KVBlock:
        """`get_new_blocks(1)[0]` without the lists (a decode crossing a block boundary: the hot case)."""
        block = self.take_block()
        if block is None:
            raise ValueError("cannot allocate 1 blocks: only 0 free")
        return block

    def take_block(self) -> KVBlock | None:
        """`get_new_block()`, or None when no block is free (the caller preempts and asks again)."""
        front = self._front
        if front:
            block = front.popitem(last=False)[1]
        elif self._next_fresh < self.num_blocks:
            block = KVBlock(self._next_fresh)
            self._next_fresh += 1
        elif self._back:
            block = self._back.popitem(last=False)[1]
        else:
            return None
        if block.block_hash is not None:
            self._evict(block)
        block.ref_cnt = 1
        return block

    def _evict(self, block: KVBlock) -> None:
        h = block.block_hash
        entry = self._cached.get(h)  # type: ignore[arg-type]
        if entry is not None:
            entry.pop(block.block_id, None)
            if not entry:
                del self._cached[h]  # type: ignore[arg-type]
                del self._first[h]  # type: ignore[arg-type]
            elif self._first[h] is block:  # type: ignore[index]
                self._first[h] = next(iter(entry.values()))  # type: ignore[index]
        block.block_hash = None
        log = self.evict_log
        log.append(h)  # type: ignore[arg-type]
        if len(log) > 8192:
            del log[:4096]
            self.evict_base += 4096
        if self.enable_events:
            self._events.append(BlockRemoved(block_hashes=[to_event_hash(h, self.event_hash_int)]))  # type: ignore[arg-type]
        if self.tiers is not None:
            self.tiers.on_gpu_evict(h)

    def touch(self, blocks: Iterable[KVBlock]) -> None:
        """A prefix hit takes these blocks: pull free ones out of the free queue, bump ref counts."""
        back_pop, front = self._back.pop, self._front
        for block in blocks:
            rc = block.ref_cnt
            if rc == 0:
                bid = block.block_id
                if back_pop(bid, None) is None:
                    del front[bid]
            block.ref_cnt = rc + 1

    def free_blocks(self, ordered_blocks: Iterable[KVBlock]) -> None:
        """Drop one reference from each block; blocks nobody holds return to the free queue in this order
        (hashed ones at the back, hashless ones at the front)."""
        front, back, null = self._front, self._back, self.null_block
        for block in ordered_blocks:
            rc = block.ref_cnt = block.ref_cnt - 1
            if rc == 0 and block is not null:
                if block.block_hash is None:
                    front[block.block_id] = block
                    front.move_to_end(block.block_id, last=False)
                else:
                    back[block.block_id] = block

    def cache_full_blocks(
        self,
        blocks: Sequence[KVBlock],
        block_hashes: Sequence[bytes],
        num_cached: int,
        num_full: int,
        all_token_ids: Sequence[int],
        cache_salt: str | None = None,
        lora_name: str | None = None,
        lora_id: int | None = None,
        token_offset: int = 0,
    ) -> None:
        """Register blocks[num_cached:num_full] under their hashes and emit one BlockStored for them (with the
        request's LoRA adapter, as vLLM names it in the event: lora_id, lora_name, the name in extra_keys).
        `all_token_ids` may start at token `token_offset` (a caller that holds only the blocks' tokens)."""
        if num_full <= num_cached:
            return
        new_hashes: list[Any] = []
        first = -1
        cached = self._cached
        first_of = self._first
        events = self.enable_events
        for i in range(num_cached, num_full):
            block = blocks[i]
            if block.block_hash is not None:
                continue  # already cached (e.g. a hit block of a recomputed request)
            h = block_hashes[i]
            block.block_hash = h
            entry = cached.get(h)
            if entry is None:
                cached[h] = {block.block_id: block}
                first_of[h] = block
            else:
                entry[block.block_id] = block
            if first < 0:
                first = i
            if events:
                new_hashes.append(h)
        if not events or first < 0:
            return
        if self.event_hash_int:
            new_hashes = to_event_hashes(new_hashes)
        # vLLM's extra_keys per block: the adapter's name on every block of a LoRA request, the salt on the first
        extra: list[Any] = [None] * len(new_hashes) if lora_name is None else [[lora_name] for _ in new_hashes]
        if first == 0 and cache_salt:
            extra[0] = [cache_salt] if lora_name is None else [lora_name, cache_salt]
        bs = self.block_size
        parent = to_event_hash(block_hashes[first - 1], self.event_hash_int) if first > 0 else None
        a, b = first * bs - token_offset, num_full * bs - token_offset
        if a == 0 and b == len(all_token_ids) and type(all_token_ids) is list:
            token_ids = all_token_ids  # the caller's slice of exactly these blocks: no second copy
        else:
            token_ids = list(all_token_ids[a:b])
        self._events.append(
            BlockStored(
                block_hashes=new_hashes,
                parent_block_hash=parent,
                token_ids=token_ids,
                block_size=bs,
                lora_id=lora_id,
                medium="GPU",
                lora_name=lora_name,
                extra_keys=extra,
            )
        )

    def cache_decode_block(self, block: KVBlock, digest: bytes, parent: bytes, token_ids: list[int]) -> None:
        """`cache_full_blocks` for one block after the first, of a request without LoRA (no extra keys, no salt):
        a decode filling its block, the hot case."""
        if block.block_hash is not None:
            return  # already cached
        block.block_hash = digest
        entry = self._cached.get(digest)
        if entry is None:
            self._cached[digest] = {block.block_id: block}
            self._first[digest] = block
        else:
            entry[block.block_id] = block
        if self.enable_events:
            as_int = self.event_hash_int
            self._events.append(
                BlockStored(
                    block_hashes=[to_event_hash(digest, as_int)],
                    parent_block_hash=to_event_hash(parent, as_int),
                    token_ids=token_ids,
                    block_size=self.block_size,
                    lora_id=None,
                    medium="GPU",
                    lora_name=None,
                    extra_keys=[None],
                )
            )

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash (AllBlocksCleared); refused (False) while any request holds blocks."""
        if self.num_free_blocks != self.num_blocks - 1:
            return False
        for entry in self._cached.values():
            for block in entry.values():
                block.block_hash = None
        self._cached.clear()
        self._first.clear()
        self.cache_epoch += 1
        if self.enable_events:
            self._events.append(AllBlocksCleared())
        return True

    def take_events(self) -> list[Any]:
        """KV events since the last call, in the order they happened."""
        events, self._events = self._events, []
        if self.tiers is not None:
            events.extend(self.tiers.after_step(events))
        return events
