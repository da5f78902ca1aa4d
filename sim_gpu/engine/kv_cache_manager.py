"""Per-request KV bookkeeping over the block pool, after vLLM v1's KVCacheManager.

It finds a request's longest cached prefix (full blocks only, and never the whole prompt: the last token is
always recomputed so the model has logits to sample from), allocates the slots a step needs, registers blocks
as cached as soon as they are scheduled full (prompt blocks at prefill, blocks filled by output tokens during
decode), and frees a request's blocks tail-first.
"""

from __future__ import annotations

from kvtiers.hashing import BlockHasher
from sim_gpu.engine.block_pool import BlockPool, KVBlock
from sim_gpu.engine.request import Request

# One memoised BlockHasher per hash setting, shared by every engine in the process: requests that share a
# system prompt (the common case, and the point of prefix caching) re-hash the same chain otherwise, and
# sha256 over a pickle costs ~10x a dict lookup. Bounded: its memo is cleared when full.
_MEMO_MAX = 200_000
_HASHERS: dict[tuple[str, str, int], BlockHasher] = {}


def _memo_hasher(hasher: BlockHasher) -> BlockHasher:
    key = (hasher.algo, hasher.seed, hasher.block_size)
    h = _HASHERS.get(key)
    if h is None:
        h = _HASHERS[key] = BlockHasher(hasher.block_size, hasher.algo, hasher.seed, memo_blocks=_MEMO_MAX)
    return h


class KVCacheManager:
    """Prefix matching, slot allocation and caching for requests, through one BlockPool."""

    def __init__(self, pool: BlockPool, hasher: BlockHasher, max_model_len: int, lora_name: str | None = None) -> None:
        self.pool = pool
        self.hasher = hasher
        self.block_size = pool.block_size
        self.max_model_len = max_model_len
        self.lora_name = lora_name
        self.lora_ids: dict[str, int] = {}  # adapter name -> lora_int_id, for KV events (SimEngine.enable_lora)
        self.enable_caching = pool.enable_caching
        self._memo_hasher = _memo_hasher(hasher)

    # ---- hashing -----------------------------------------------------------------------------------------

    def ensure_hashes(self, req: Request, num_blocks: int) -> list[bytes]:
        """Extend req.block_hashes to cover its first `num_blocks` full blocks (hashing is per block, lazily)."""
        hashes = req.block_hashes
        bs = self.block_size
        limit = min(num_blocks, req.num_tokens // bs)
        start = len(hashes)
        # one block filled by decode, and no extra keys (an adapter tags every block; images the blocks they touch)
        if start + 1 == limit and start and not (req.lora_name or self.lora_name or req.mm_items):
            hashes.append(self._memo_hasher.hash_next(hashes[-1], req.tokens(start * bs, limit * bs)))
        elif start < limit:
            hashes += self._memo_hasher.hash_blocks(
                req.tokens(start * bs, limit * bs),
                req.cache_salt,
                req.lora_name or self.lora_name,
                parent=hashes[-1] if hashes else None,
                start_block=start,
                mm_items=req.mm_items,
            )
        return hashes

    # ---- prefix hits -------------------------------------------------------------------------------------

    def get_computed_blocks(self, req: Request) -> tuple[list[KVBlock], int]:
        """The request's longest run of cached full blocks and how many tokens they cover.

        A waiting request blocked on free blocks asks again every step; its previous answer is kept
        (`req.hit_memo`) and re-validated: hits only shrink when one of their blocks is evicted (checked
        against the pool's eviction log) and only grow at the first missing digest.
        """
        if not self.enable_caching:
            return [], 0
        max_blocks = (req.num_tokens - 1) // self.block_size
        if max_blocks <= 0:
            return [], 0
        hashes = self.ensure_hashes(req, max_blocks)
        pool = self.pool
        log = pool.evict_log
        memo = req.hit_memo
        hits: list[KVBlock] | None = None
        chain: set[bytes] | None = None  # the digests checked against evictions, built on the first re-ask
        if memo is not None and memo[0] == pool.cache_epoch and memo[1] >= pool.evict_base and memo[2] == max_blocks:
            hits = memo[3]
            chain = memo[4]
            start = memo[1] - pool.evict_base
            if start < len(log):
                if chain is None:
                    chain = set(hashes[:max_blocks])
                if not chain.isdisjoint(log[start:]):
                    hits = None
        if hits is None:
            hits = []
        k = len(hits)
        first = pool._first
        if k < max_blocks and hashes[k] in first:  # (a re-ask whose next block is still missing stops here)
            # The first block holding each digest (BlockPool._first, i.e. get_cached_block), up to the first miss.
            found = list(map(first.get, hashes[k:max_blocks]))
            try:
                found = found[: found.index(None)]
            except ValueError:
                pass
            hits += found
            k += len(found)
        req.hit_memo = (pool.cache_epoch, pool.evict_base + len(log), max_blocks, hits, chain)
        return list(hits), k * self.block_size

    # ---- allocation --------------------------------------------------------------------------------------

    def allocate_slots(
        self,
        req: Request,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: list[KVBlock] | None = None,
        delay_cache_blocks: bool = False,
    ) -> list[KVBlock] | None:
        """Make room for `num_new_tokens` more tokens after the computed ones (+ new prefix hits).

        Returns the newly allocated blocks, or None when the pool cannot supply them (caller preempts).
        """
        blocks = req.blocks
        hits = new_computed_blocks or ()
        num_computed = req.num_computed_tokens + num_new_computed_tokens
        need_blocks = self._blocks_needed(req, num_computed + num_new_tokens, hits)
        if need_blocks is None:
            return None
        if hits:
            self.pool.touch(hits)
            blocks.extend(hits)
            req.num_cached_blocks = len(blocks)
        new_blocks = self.pool.get_new_blocks(need_blocks) if need_blocks > 0 else []
        if new_blocks:
            blocks.extend(new_blocks)
        if self.enable_caching and not delay_cache_blocks:
            self.cache_blocks(req, min(num_computed + num_new_tokens, req.num_tokens))
        return new_blocks

    def _blocks_needed(self, req: Request, num_tokens: int, hits: list[KVBlock] | tuple) -> int | None:
        """New blocks `req` needs to hold `num_tokens` tokens after taking `hits`, or None when the pool cannot
        supply them (hit blocks sitting in the free queue stop counting as free once touched)."""
        need = -(-min(num_tokens, self.max_model_len) // self.block_size) - len(req.blocks) - len(hits)
        free = self.pool.num_free_blocks
        if max(need, 0) + len(hits) <= free:
            return need  # fits even if every hit were an evictable block (no need to count them)
        evictable_hits = sum(1 for b in hits if b.ref_cnt == 0)
        if max(need, 0) + evictable_hits > free:
            return None
        return need

    def can_allocate(
        self, req: Request, num_new_tokens: int, num_new_computed_tokens: int, hits: list[KVBlock]
    ) -> bool:
        """Whether `allocate_slots` with these arguments would succeed (nothing is changed)."""
        return (
            self._blocks_needed(req, req.num_computed_tokens + num_new_computed_tokens + num_new_tokens, hits)
            is not None
        )

    def cache_blocks(self, req: Request, num_tokens: int) -> None:
        """Register the request's blocks that `num_tokens` tokens fill completely (emits BlockStored)."""
        num_full = num_tokens // self.block_size
        num_cached = req.num_cached_blocks
        if num_full <= num_cached:
            return
        hashes = self.ensure_hashes(req, num_full)
        lora = req.lora_name or self.lora_name
        lora_id = self.lora_ids.get(lora) if lora else None
        bs = self.block_size
        self.pool.cache_full_blocks(
            req.blocks,
            hashes,
            num_cached,
            num_full,
            req.tokens(num_cached * bs, num_full * bs),
            req.cache_salt,
            lora,
            lora_id,
            token_offset=num_cached * bs,
        )
        req.num_cached_blocks = num_full

    def cache_decode_block(self, req: Request) -> None:
        """`cache_blocks(req, (req.num_cached_blocks + 1) * block_size)` for a decode that just filled the block
        after its cached ones (the hot case): no extra keys, one digest, one BlockStored; else the general path."""
        i = req.num_cached_blocks
        bs = self.block_size
        hashes = req.block_hashes
        p = req.prompt_len
        end = (i + 1) * bs
        if (
            not i
            or len(hashes) < i
            or req.lora_name
            or self.lora_name
            or req.mm_items
            or i * bs < p  # a block holding prompt tokens too (`tokens` joins the two lists)
            or req.num_tokens < end
        ):
            self.cache_blocks(req, end)
            return
        block_toks = req.output_token_ids[i * bs - p : end - p]
        if len(hashes) == i:
            hashes.append(self._memo_hasher.hash_next(hashes[-1], block_toks))
        self.pool.cache_decode_block(req.blocks[i], hashes[i], hashes[i - 1], block_toks)
        req.num_cached_blocks = i + 1

    def free(self, req: Request) -> None:
        """Release the request's blocks, last block first (so its tail is evicted before its prefix)."""
        blocks = req.blocks
        req.blocks = []
        req.num_cached_blocks = 0
        if blocks:
            self.pool.free_blocks(reversed(blocks))
