"""The precise prefix index: block hash -> {endpoint: tier weight}, fed by the engines' own KV events.

Each endpoint (a pod, or one data-parallel rank of it) publishes BlockStored / BlockRemoved /
AllBlocksCleared with a per-publisher sequence number. The index applies them idempotently, treats a
sequence going backwards as a restart (the engine's cache is empty again, so its blocks are dropped),
counts gaps, and credits a chosen endpoint speculatively with a request's blocks until its events confirm
them or a TTL passes. `match` walks a request's chained block hashes and reports, per endpoint, the length
of the consecutive cached prefix and its tier-weighted score (GPU 1.0, CPU 0.8 by default).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from functools import reduce
from itertools import filterfalse, islice
from operator import add, itemgetter, methodcaller
from typing import Callable

from kvtiers.kvevents import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch

BlockHash = int | bytes
DEFAULT_TIER_WEIGHTS: dict[str, float] = {"GPU": 1.0, "CPU": 0.8, "DISK": 0.5}
SHARED = "*"  # holder key for blocks in a shared tier: any endpoint can load them
SPECULATIVE = "SPECULATIVE"


# Per endpoint (or shared tier) and medium: bounds the index whatever a publisher sends (~300 B a block, so
# ~80 MB at most per pod and medium). A real pod is far below it: an H200 holds ~60k blocks of an 8B model.
MAX_BLOCKS_PER_ENDPOINT = 262_144


def rank_endpoint_key(endpoint_key: str, dp_rank: int | None) -> str:
    """The endpoint a data-parallel rank's events belong to: rank r of a pod listens on port + r."""
    if not dp_rank:
        return endpoint_key
    host, _, port = endpoint_key.rpartition(":")
    return f"{host}:{int(port) + dp_rank}"


class PrecisePrefixIndex:
    """Global KV block locality from KV events. Thread-safe (one lock) so a ZMQ thread can feed it."""

    def __init__(
        self,
        tier_weights: dict[str, float] | None = None,
        default_weight: float = 0.5,
        shared_media: Iterable[str] = (),
        speculative_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_blocks_per_endpoint: int = MAX_BLOCKS_PER_ENDPOINT,
    ) -> None:
        self.max_blocks_per_endpoint = max_blocks_per_endpoint
        self.quota_drops = 0  # block hashes refused because their endpoint (per medium) was at its quota
        self.tier_weights = {k.upper(): float(v) for k, v in {**DEFAULT_TIER_WEIGHTS, **(tier_weights or {})}.items()}
        self.default_weight = default_weight
        self.shared_media = {m.upper() for m in shared_media}
        self.speculative_ttl_s = speculative_ttl_s
        self._defaults = (dict(self.tier_weights), set(self.shared_media), speculative_ttl_s)
        self.clock = clock
        self._lock = threading.RLock()
        self._idx: dict[BlockHash, dict[str, float]] = {}
        self._held: dict[str, dict[str, set[BlockHash]]] = {}  # endpoint -> medium -> hashes
        self._spec: dict[str, dict[BlockHash, float]] = {}  # endpoint -> hash -> expiry
        self._spec_queue: deque[tuple[float, str, tuple[BlockHash, ...]]] = deque()
        self._last_seq: dict[str, int] = {}
        self._rank_keys: dict[tuple[str, int | None], str] = {}
        self.events = 0
        self.batches = 0
        self.gaps = 0
        self.missed = 0
        self.restarts = 0
        self.duplicates = 0
        self.confirmed = 0
        self.on_gap: Callable[[str, int, int], None] | None = None  # (endpoint, expected seq, got seq)
        self.tiered = False  # set once any event names a medium other than GPU (KV tiers below the GPU)

    # ---- weights -------------------------------------------------------------------------------------

    def configure(
        self, tier_weights: dict[str, float], speculative_ttl_s: float | None, shared_media: Iterable[str]
    ) -> None:
        """Apply a config's index settings over the defaults this index was built with: a config swap never
        inherits the weights or sharing of the config before it."""
        weights, media, ttl = self._defaults
        with self._lock:
            self.tier_weights = {**weights, **{k.upper(): float(v) for k, v in tier_weights.items()}}
            self.shared_media = set(media) | {m.upper() for m in shared_media}
            self.speculative_ttl_s = ttl if speculative_ttl_s is None else speculative_ttl_s

    def weight(self, medium: str | None) -> float:
        return self.tier_weights.get((medium or "GPU").upper(), self.default_weight)

    @property
    def _spec_weight(self) -> float:
        return self.tier_weights.get("GPU", 1.0)

    # ---- feeding -------------------------------------------------------------------------------------
    def apply(self, endpoint_key: str, seq: int, batch: KVEventBatch) -> str:
        """Apply one KV event message; returns 'applied', 'duplicate', 'restart' or 'gap' (both: the pod's
        entries were dropped first, then the message applied)."""
        rk = (endpoint_key, batch.data_parallel_rank)
        key = self._rank_keys.get(rk)
        if key is None:
            key = self._rank_keys[rk] = rank_endpoint_key(endpoint_key, batch.data_parallel_rank)
        with self._lock:
            if self._spec_queue and self._spec_queue[0][0] <= self.clock():
                self._expire(self.clock())
            outcome = "applied"
            last = self._last_seq.get(key)
            if last is not None:
                if seq == last:
                    self.duplicates += 1
                    return "duplicate"
                if seq < last:
                    self.restarts += 1
                    self._clear_endpoint(key)
                    outcome = "restart"
                elif seq > last + 1:
                    # Lost messages may have removed blocks: what we hold for this pod can no longer be trusted,
                    # and a stale entry sends requests to a pod for a prefix it evicted. Start over from here.
                    self.gaps += 1
                    self.missed += seq - last - 1
                    self._clear_endpoint(key)
                    outcome = "gap"
                    if self.on_gap is not None:
                        self.on_gap(key, last + 1, seq)
            self._last_seq[key] = seq
            self.batches += 1
            self.events += len(batch.events)
            for event in batch.events:
                if isinstance(event, BlockStored):
                    self._store(key, event.block_hashes, event.medium)
                elif isinstance(event, BlockRemoved):
                    self._remove(key, event.block_hashes, event.medium)
                elif isinstance(event, AllBlocksCleared):
                    self._clear_endpoint(key)
            return outcome

    def _holder(self, key: str, medium: str) -> str:
        return SHARED if medium in self.shared_media else key

    def _store(self, key: str, hashes: list[BlockHash], medium: str | None) -> None:
        m = medium.upper() if medium and medium != "GPU" else "GPU"  # (GPU: the hot case, no upper())
        if m != "GPU":
            self.tiered = True
        holder = SHARED if m in self.shared_media else key
        w = self.tier_weights.get(m, self.default_weight)
        media = self._held.get(holder)
        if media is None:
            media = self._held[holder] = {}
        held = media.get(m)
        if held is None:
            held = media[m] = set()
        spec = self._spec.get(holder)
        idx = self._idx
        quota = self.max_blocks_per_endpoint
        for h in hashes:
            if len(held) >= quota and h not in held:
                self.quota_drops += 1
                continue
            held.add(h)
            entry = idx.get(h)
            if entry is None:
                idx[h] = {holder: w}
                continue
            if spec and h in spec:
                del spec[h]
                self.confirmed += 1
                # its best weight now: this medium's when the holder has no other (_best, without the walk)
                entry[holder] = (w if w > 0.0 else 0.0) if len(media) == 1 else self._best(holder, h)
            elif entry.get(holder, -1.0) < w:
                entry[holder] = w

    def _best(self, holder: str, h: BlockHash) -> float:
        """Best weight `holder` has for block `h` across its media and speculation (0.0 = none)."""
        best = 0.0
        for m, hs in self._held.get(holder, {}).items():
            if h in hs:
                w = self.weight(m)
                if w > best:
                    best = w
        spec = self._spec.get(holder)
        if spec and h in spec and self._spec_weight > best:
            best = self._spec_weight
        return best

    def _refresh(self, holder: str, h: BlockHash) -> None:
        entry = self._idx.get(h)
        if entry is None:
            return
        best = self._best(holder, h)
        if best > 0.0:
            entry[holder] = best
        else:
            entry.pop(holder, None)
            if not entry:
                del self._idx[h]

    def _remove(self, key: str, hashes: list[BlockHash], medium: str | None) -> None:
        m = medium.upper() if medium and medium != "GPU" else "GPU"
        holder = SHARED if m in self.shared_media else key
        media = self._held.get(holder, {})
        held = media.get(m)
        if not held:
            return
        # Only this medium held and the block not speculated: the holder's best weight for it is none now.
        single = len(media) == 1
        spec = self._spec.get(holder)
        idx = self._idx
        for h in hashes:
            if h in held:
                held.discard(h)
                if single and not (spec and h in spec):
                    entry = idx.get(h)
                    if entry is not None and entry.pop(holder, None) is not None and not entry:
                        del idx[h]
                else:
                    self._refresh(holder, h)

    def _clear_endpoint(self, key: str) -> None:
        media = self._held.pop(key, {})
        spec = self._spec.pop(key, {})
        idx = self._idx
        for hs in (*media.values(), spec):
            for h in hs:
                entry = idx.get(h)
                if entry is not None and entry.pop(key, None) is not None and not entry:
                    del idx[h]

    def remove_endpoint(self, endpoint_key: str) -> None:
        """Forget an endpoint entirely (it left discovery): its blocks and its sequence state."""
        with self._lock:
            self._clear_endpoint(endpoint_key)
            self._last_seq.pop(endpoint_key, None)

    # ---- speculation ---------------------------------------------------------------------------------
    def add_speculative(self, endpoint_key: str, block_hashes: list[BlockHash], ttl_s: float | None = None) -> int:
        """Credit `endpoint_key` with blocks it is about to compute, until events confirm them or TTL ends."""
        ttl = self.speculative_ttl_s if ttl_s is None else ttl_s
        if ttl <= 0 or not block_hashes:
            return 0
        with self._lock:
            now = self.clock()
            self._expire(now)
            expiry = now + ttl
            spec = self._spec.setdefault(endpoint_key, {})
            gpu = self._held.get(endpoint_key, {}).get("GPU", ())
            w = self._spec_weight
            added = list(filterfalse(gpu.__contains__, block_hashes)) if gpu else list(block_hashes)
            spec.update(dict.fromkeys(added, expiry))
            idx = self._idx
            for h in added:
                entry = idx.get(h)
                if entry is None:
                    idx[h] = {endpoint_key: w}
                elif entry.get(endpoint_key, -1.0) < w:
                    entry[endpoint_key] = w
            if added:
                self._spec_queue.append((expiry, endpoint_key, tuple(added)))
            return len(added)

    def _expire(self, now: float) -> None:
        q = self._spec_queue
        while q and q[0][0] <= now:
            expiry, key, hashes = q.popleft()
            spec = self._spec.get(key)
            if not spec:
                continue
            for h in hashes:
                if spec.get(h) == expiry:
                    del spec[h]
                    self._refresh(key, h)

    # ---- lookup --------------------------------------------------------------------------------------
    def match(
        self, block_hashes: list[BlockHash], endpoints: Iterable[str] | None = None, max_blocks: int | None = None
    ) -> dict[str, tuple[int, float]]:
        """Per endpoint: (consecutive cached blocks from the start, tier-weighted score of those blocks).

        Blocks in a shared tier count for every endpoint in `endpoints` (when given).
        """
        n = len(block_hashes) if max_blocks is None else min(len(block_hashes), max_blocks)
        if n == 0:
            return {}
        with self._lock:
            q = self._spec_queue
            if q and q[0][0] <= self.clock() - self.speculative_ttl_s:
                self._expire(self.clock())  # idle router: nothing wrote for a TTL, purge before reading
            if self._held.get(SHARED):
                return self._match_shared(block_hashes, n, endpoints)
            idx = self._idx
            first = idx.get(block_hashes[0])
            if not first:
                return {}
            if len(first) == 1:  # the common case: one endpoint holds the prefix (walked in C: map, index)
                ((k, w0),) = first.items()
                entries = list(map(idx.get, islice(block_hashes, 1, n)))
                if None in entries:
                    del entries[entries.index(None) :]
                ws = list(map(methodcaller("get", k), entries))
                if None in ws:
                    del ws[ws.index(None) :]
                return {k: (1 + len(ws), float(reduce(add, ws, w0)))}  # summed in order, as a loop would
            # Phase 1 (set operations in C): how far each holder of block 0 stays in the chain.
            entries = [first]
            active = set(first)
            counts: dict[str, int] = {}
            i = 1
            for h in islice(block_hashes, 1, n):
                entry = idx.get(h)
                if entry is None:
                    break
                if not entry.keys() >= active:
                    gone = active - entry.keys()
                    for k in gone:
                        counts[k] = i
                    active -= gone
                    if not active:
                        break
                entries.append(entry)
                i += 1
            for k in active:
                counts[k] = i
            # Phase 2: tier-weighted sums over each holder's consecutive blocks.
            out: dict[str, tuple[int, float]] = {}
            for k, c in counts.items():
                out[k] = (c, float(sum(map(itemgetter(k), entries[:c]))))
            return out

    def _match_shared(
        self, block_hashes: list[BlockHash], n: int, endpoints: Iterable[str] | None
    ) -> dict[str, tuple[int, float]]:
        """The general walk, used when a shared tier exists: shared blocks count for every endpoint."""
        idx = self._idx
        first = idx.get(block_hashes[0])
        if not first:
            return {}
        shared_w = first.get(SHARED)
        active: dict[str, float] = {k: w for k, w in first.items() if k != SHARED}
        if shared_w is not None and endpoints is not None:
            for k in endpoints:
                if active.get(k, 0.0) < shared_w:
                    active[k] = shared_w
        out: dict[str, tuple[int, float]] = {}
        i = 1
        while i < n:
            entry = idx.get(block_hashes[i])
            if entry is None:
                break
            shared_w = entry.get(SHARED)
            dropped = []
            for k in active:
                w = entry.get(k)
                if shared_w is not None and (w is None or w < shared_w):
                    w = shared_w
                if w is None:
                    dropped.append(k)
                else:
                    active[k] += w
            for k in dropped:
                out[k] = (i, active.pop(k))
            if not active:
                return out
            i += 1
        for k, sc in active.items():
            out[k] = (i, sc)
        return out

    def prefix_media(
        self, block_hashes: list[BlockHash], endpoint_key: str, max_blocks: int | None = None
    ) -> dict[str, int]:
        """Per medium, the blocks of `endpoint_key`'s consecutive cached prefix it would read from there.

        Each block counts at its best tier for that endpoint (own media and shared tiers); a block only
        credited speculatively counts as `speculative`. For the decision stream: which tier a hit comes from.
        """
        n = len(block_hashes) if max_blocks is None else min(len(block_hashes), max_blocks)
        out: dict[str, int] = {}
        with self._lock:
            sources = [self._held.get(endpoint_key, {}), self._held.get(SHARED, {})]
            spec = self._spec.get(endpoint_key)
            for h in islice(block_hashes, n):
                best, best_w = None, -1.0
                for media in sources:
                    for m, hs in media.items():
                        if h in hs and self.weight(m) > best_w:
                            best, best_w = m, self.weight(m)
                if best is None and spec and h in spec:
                    best = SPECULATIVE.lower()
                if best is None:
                    break
                out[best] = out.get(best, 0) + 1
        return out

    # ---- inspection ----------------------------------------------------------------------------------
    def blocks_of(self, endpoint_key: str, medium: str | None = None) -> set[BlockHash]:
        """Blocks the events say `endpoint_key` holds (one medium, or all); speculation excluded."""
        with self._lock:
            media = self._held.get(endpoint_key, {})
            if medium is not None:
                return set(media.get(medium.upper(), ()))
            out: set[BlockHash] = set()
            for hs in media.values():
                out |= hs
            return out

    def _blocks_by_medium(self) -> dict[str, int]:
        """(endpoint or shared tier, block) pairs per medium, from events."""
        out: dict[str, int] = {}
        for media in self._held.values():
            for m, hs in media.items():
                if hs:
                    out[m] = out.get(m, 0) + len(hs)
        return out

    def holders(self, block_hash: BlockHash) -> dict[str, float]:
        with self._lock:
            return dict(self._idx.get(block_hash, {}))

    def last_seq(self, endpoint_key: str) -> int | None:
        return self._last_seq.get(endpoint_key)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "blocks": len(self._idx),
                "endpoints": sum(1 for k, media in self._held.items() if k != SHARED and any(media.values())),
                "shared_blocks": sum(len(hs) for hs in self._held.get(SHARED, {}).values()),
                "blocks_by_medium": self._blocks_by_medium(),
                "speculative": sum(len(s) for s in self._spec.values()),
                "events": self.events,
                "batches": self.batches,
                "gaps": self.gaps,
                "missed_messages": self.missed,
                "restarts": self.restarts,
                "duplicates": self.duplicates,
                "confirmed_speculative": self.confirmed,
                "quota_drops": self.quota_drops,
            }
