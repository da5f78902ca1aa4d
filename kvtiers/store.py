"""The tiered block store below the GPU: write-behind offload GPU -> CPU -> filesystem, tier-aware lookup.

A pure core driven by its caller's clock (the simulator's engine, a benchmark, a test): nothing sleeps,
transfers cost seconds from a `CostModel`. The engine's block pool is the GPU tier; it calls

- ``offer(hashes, types, now)`` when it evicts blocks (only blocks no running request uses reach here);
  they are queued and land in the first lower tier once the device-to-host copy has had time to finish,
  and a full tier demotes its victims to the next one (CPU -> filesystem);
- ``lookup(hashes)`` after a GPU prefix miss: how many consecutive blocks the lower tiers hold, the
  highest tier of each, and the seconds loading them costs (instead of recomputing them);
- ``load(hashes, now)`` to take those blocks: filesystem reads are verified (a bad file ends the run of
  hits), blocks found on disk are promoted into CPU memory;
- ``on_computed(hashes, types, now)`` when it computes blocks: types with ``replicate`` are written through
  to the shared tier at once so every pod can load them;
- ``take_events()`` for the KV events to publish (``medium`` CPU / DISK, as vLLM's offloading connector).

Tiers are inclusive: a block loaded back to the GPU keeps its lower-tier copy, so evicting it again costs
no transfer.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kvtiers.fs_tier import FsTier, PutStatus
from kvtiers.kvevents import BlockRemoved, BlockStored, KVEvent
from kvtiers.policy import EvictionQueue, PolicyConfig
from kvtiers.types import BlockType

BlockKey = Hashable  # a block hash as the engine's KV events carry it: uint64 int or digest bytes
MEDIA: tuple[str, ...] = ("GPU", "CPU", "DISK")


def key_hex(h: BlockKey) -> str:
    """A block hash as a filesystem tier name: 16 hex digits for uint64 hashes, the digest in hex else."""
    if isinstance(h, int):
        if h < 0:
            raise ValueError(f"block hash: expected an unsigned integer, got {h}")
        return format(h, "016x")
    if isinstance(h, (bytes, bytearray)):
        return bytes(h).hex()
    raise ValueError(f"block hash: expected int or bytes, got {type(h).__name__}")


def key_from_hex(name: str) -> BlockKey:
    """The inverse of `key_hex`."""
    return int(name, 16) if len(name) == 16 else bytes.fromhex(name)


def kv_bytes_per_block(num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype_bytes: int = 2) -> int:
    """Bytes of K and V for one block of one model (all layers)."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes * block_size


@dataclass(frozen=True)
class CostModel:
    """Transfer times of blocks between tiers, from bandwidths (GB/s = 1e9 bytes/s) and per-batch latency."""

    block_bytes: int
    pcie_gbps: float = 32.0
    disk_read_gbps: float = 5.0
    disk_write_gbps: float = 5.0
    disk_latency_s: float = 100e-6

    def __post_init__(self) -> None:
        for name in ("block_bytes", "pcie_gbps", "disk_read_gbps", "disk_write_gbps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"cost model {name}: expected a positive number, got {getattr(self, name)!r}")

    def load_seconds(self, media: Iterable[str]) -> float:
        """Seconds to bring blocks held in `media` (one entry per block) into GPU memory.

        CPU blocks cross PCIe; disk blocks stream from storage through host memory, pipelined, so they
        move at the slower of the two links, plus one storage round trip per batch.
        """
        n_cpu = n_disk = 0
        for m in media:
            if m == "CPU":
                n_cpu += 1
            elif m == "DISK":
                n_disk += 1
        s = n_cpu * self.block_bytes / (self.pcie_gbps * 1e9)
        if n_disk:
            s += self.disk_latency_s + n_disk * self.block_bytes / (min(self.disk_read_gbps, self.pcie_gbps) * 1e9)
        return s

    def store_seconds(self, medium: str, n: int = 1) -> float:
        """Seconds to write `n` blocks into `medium` (GPU -> CPU over PCIe, CPU -> disk at write bandwidth)."""
        bw = self.pcie_gbps if medium == "CPU" else self.disk_write_gbps
        return n * self.block_bytes / (bw * 1e9)


READ_AHEAD = 8  # blocks of a run a slow tier may queue ahead of the one being read (2 MiB each: 16 MiB)


class Tier(Protocol):
    """A lower tier as the store sees it."""

    medium: str
    shared: bool

    def contains(self, h: BlockKey) -> bool: ...
    def read(self, h: BlockKey, then: Sequence[BlockKey] = ()) -> bool:
        """Read `h` (verified); `then`: the blocks the caller reads next, which a slow tier may queue now."""
        ...

    def write(self, h: BlockKey, btype: BlockType | None) -> tuple[bool, list[tuple[BlockKey, BlockType | None]]]:
        """Store `h`; (stored?, [(evicted block, its type)])."""
        ...

    def touch(self, h: BlockKey) -> None: ...
    def finish(self, hashes: Iterable[BlockKey]) -> None: ...
    def __len__(self) -> int: ...


class MemoryTier:
    """Blocks in memory (a pod's CPU tier, or a simulated shared tier), capacity in blocks, typed eviction.

    Holds membership only: simulated KV has no bytes worth keeping. Share one instance between stores to
    model a shared tier in a single process.
    """

    def __init__(
        self, medium: str, capacity_blocks: int, policy: PolicyConfig | None = None, shared: bool = False
    ) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"{medium} tier capacity: expected blocks >= 0, got {capacity_blocks!r}")
        self.medium = medium
        self.shared = shared
        self.capacity = capacity_blocks
        self.queue = EvictionQueue(capacity_blocks, policy)

    def contains(self, h: BlockKey) -> bool:
        return h in self.queue

    def read(self, h: BlockKey, then: Sequence[BlockKey] = ()) -> bool:
        if h not in self.queue:
            return False
        self.queue.touch(h)
        return True

    def write(self, h: BlockKey, btype: BlockType | None) -> tuple[bool, list[tuple[BlockKey, BlockType | None]]]:
        if self.capacity == 0:
            return False, []
        evicted: list[tuple[BlockKey, BlockType | None]] = []
        if h not in self.queue:
            while len(self.queue) >= self.capacity:
                v = self.queue.victim()
                if v is None:
                    return False, evicted
                evicted.append((v, self.queue.type_of(v)))
                self.queue.remove(v)
        self.queue.add(h, btype)
        return True, evicted

    def touch(self, h: BlockKey) -> None:
        if h in self.queue:
            self.queue.touch(h)

    def finish(self, hashes: Iterable[BlockKey]) -> None:
        self.queue.finish(hashes)

    def type_of(self, h: BlockKey) -> BlockType | None:
        return self.queue.type_of(h)

    def __len__(self) -> int:
        return len(self.queue)


def synthetic_payload(size: int) -> Callable[[BlockKey], bytes]:
    """Deterministic stand-in bytes for a simulated block (the simulator has no real KV)."""

    def make(h: BlockKey) -> bytes:
        seed = hashlib.blake2b(key_hex(h).encode(), digest_size=64).digest()
        return (seed * (size // 64 + 1))[:size]

    return make


class FilesystemTier:
    """The shared filesystem tier as a store tier: real files via `FsTier`, membership is the directory.

    Types act here as in memory: a pinned type's files are written pinned (evicted after every unpinned file,
    within the FsTier's `pin_budget`), and an evict-on-finish type is never written (the GPU let it go because
    its request finished)."""

    shared = True

    def __init__(
        self,
        fs: FsTier,
        payload: Callable[[BlockKey], bytes],
        medium: str = "DISK",
        policy: PolicyConfig | None = None,
    ) -> None:
        self.fs = fs
        self.payload = payload
        self.medium = medium
        self.policy = policy or PolicyConfig()
        self.paused_drops = 0
        self.skipped_eager = 0

    def contains(self, h: BlockKey) -> bool:
        return self.fs.contains(key_hex(h))

    def read(self, h: BlockKey, then: Sequence[BlockKey] = ()) -> bool:
        # verified in one of the tier's read buffers (no copy per hit); the next blocks' files read meanwhile
        return self.fs.read(key_hex(h), [key_hex(n) for n in then]) is not None

    def write(self, h: BlockKey, btype: BlockType | None) -> tuple[bool, list[tuple[BlockKey, BlockType | None]]]:
        rule = self.policy.of(btype)
        if rule.evict_on_finish:
            self.skipped_eager += 1
            return False, []
        status, evicted = self.fs.put(key_hex(h), self.payload(h), pinned=rule.pin)
        if status is PutStatus.PAUSED:
            self.paused_drops += 1
        return status in (PutStatus.STORED, PutStatus.EXISTS), [(key_from_hex(n), None) for n in evicted]

    def touch(self, h: BlockKey) -> None:
        pass  # reads bump mtime; offers of blocks already on disk need no write

    def finish(self, hashes: Iterable[BlockKey]) -> None:
        pass

    def __len__(self) -> int:
        return len(self.fs._scan()[1])


@dataclass(frozen=True)
class TierLookup:
    """Consecutive blocks found below the GPU, the medium each is read from, and the load cost."""

    num_blocks: int
    media: tuple[str, ...]
    load_s: float


@dataclass
class StoreStats:
    offered: int = 0
    skipped_eager: int = 0
    dropped: int = 0  # a tier refused the block (full of protected blocks, disk paused, I/O error)
    stored: dict[str, int] = field(default_factory=dict)
    evicted: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    bad_reads: int = 0  # a lookup said yes, the verified read said no (corrupt/truncated/raced away)
    loads: int = 0
    load_s: float = 0.0
    promoted: int = 0
    replicated: int = 0
    prewarmed: int = 0

    def as_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


class TieredStore:
    """One pod's view of its lower tiers (ordered fastest first), with write-behind and tier events."""

    def __init__(
        self,
        tiers: Sequence[Tier],
        cost: CostModel,
        *,
        policy: PolicyConfig | None = None,
        block_size: int = 16,
        write_behind: bool = True,
    ) -> None:
        # A memory tier of capacity 0 is no tier at all (e.g. `cpu_blocks: 0`): blocks go past it.
        self.tiers = [t for t in tiers if not (isinstance(t, MemoryTier) and t.capacity == 0)]
        if not self.tiers:
            raise ValueError("tiered store: expected at least one tier below the GPU with capacity > 0")
        self.cost = cost
        self.policy = policy or PolicyConfig()
        self.block_size = block_size
        self.write_behind = write_behind
        self.stats = StoreStats()
        self.peers: list[TieredStore] = []  # other pods' stores to pre-warm (in-process clusters)
        self._pending: list[deque[tuple[float, BlockKey, BlockType | None]]] = [deque() for _ in self.tiers]
        self._pending_keys: list[set[BlockKey]] = [set() for _ in self.tiers]
        self._busy_until = [0.0 for _ in self.tiers]
        self._events: list[KVEvent] = []

    # -- events -------------------------------------------------------------------------------------------

    def _emit(self, removed: bool, medium: str, h: BlockKey) -> None:
        last = self._events[-1] if self._events else None
        if removed:
            if isinstance(last, BlockRemoved) and last.medium == medium:
                last.block_hashes.append(h)
            else:
                self._events.append(BlockRemoved(block_hashes=[h], medium=medium))
        else:
            if isinstance(last, BlockStored) and last.medium == medium:
                last.block_hashes.append(h)
            else:
                self._events.append(
                    BlockStored(
                        block_hashes=[h],
                        parent_block_hash=None,
                        token_ids=[],
                        block_size=self.block_size,
                        medium=medium,
                    )
                )

    def take_events(self) -> list[KVEvent]:
        """KV events since the last call (BlockStored / BlockRemoved with medium CPU or DISK)."""
        out, self._events = self._events, []
        return out

    # -- writes -------------------------------------------------------------------------------------------

    def _shared_index(self) -> int | None:
        for i, t in enumerate(self.tiers):
            if t.shared:
                return i
        return None

    def _enqueue(self, ti: int, h: BlockKey, btype: BlockType | None, now: float | None) -> None:
        tier = self.tiers[ti]
        if h in self._pending_keys[ti]:
            return
        if tier.contains(h):
            tier.touch(h)
            return
        if now is None or not self.write_behind:
            self._commit(ti, h, btype, now)
            return
        ready = max(now, self._busy_until[ti]) + self.cost.store_seconds(tier.medium)
        self._busy_until[ti] = ready
        self._pending[ti].append((ready, h, btype))
        self._pending_keys[ti].add(h)

    def _commit(self, ti: int, h: BlockKey, btype: BlockType | None, at: float | None) -> None:
        tier = self.tiers[ti]
        ok, evicted = tier.write(h, btype)
        for v, vtype in evicted:
            self._evicted(ti, v, vtype, at)
        if ok:
            self.stats.stored[tier.medium] = self.stats.stored.get(tier.medium, 0) + 1
            self._emit(False, tier.medium, h)
        else:
            self.stats.dropped += 1

    def _evicted(self, ti: int, h: BlockKey, btype: BlockType | None, at: float | None) -> None:
        tier = self.tiers[ti]
        self.stats.evicted[tier.medium] = self.stats.evicted.get(tier.medium, 0) + 1
        self._emit(True, tier.medium, h)
        if ti + 1 < len(self.tiers) and not self._eager(btype):
            self._enqueue(ti + 1, h, btype, at)  # demotion: CPU victim -> filesystem

    def poll(self, now: float) -> None:
        """Land every queued write whose transfer has finished by `now` (fastest tier first)."""
        for ti in range(len(self.tiers)):
            q = self._pending[ti]
            while q and q[0][0] <= now:
                ready, h, btype = q.popleft()
                self._pending_keys[ti].discard(h)
                self._commit(ti, h, btype, ready)

    def flush(self) -> None:
        """Land every queued write regardless of time (shutdown, tests)."""
        self.poll(float("inf"))

    def _eager(self, btype: BlockType | None) -> bool:
        return self.policy.of(btype).evict_on_finish

    def offer(
        self, hashes: Sequence[BlockKey], types: Sequence[BlockType | None] | None = None, now: float | None = None
    ) -> int:
        """Blocks the GPU evicted: queue them for the first lower tier; returns how many were queued.

        Types whose policy is `evict_on_finish` are not offloaded (their request has finished: that is why
        the GPU could evict them). `now=None` writes at once.
        """
        if now is not None:
            self.poll(now)
        n = 0
        for i, h in enumerate(hashes):
            btype = types[i] if types is not None and i < len(types) else None
            self.stats.offered += 1
            if self._eager(btype):
                self.stats.skipped_eager += 1
                continue
            self._enqueue(0, h, btype, now)
            n += 1
        return n

    def on_computed(
        self, hashes: Sequence[BlockKey], types: Sequence[BlockType | None] | None = None, now: float | None = None
    ) -> int:
        """Blocks the GPU just computed: write replicate-typed ones through to the shared tier (and peers)."""
        si = self._shared_index()
        if types is None:
            return 0
        rep: list[tuple[BlockKey, BlockType | None]] = [
            (h, t) for h, t in zip(hashes, types) if self.policy.of(t).replicate
        ]
        for h, t in rep:
            self._enqueue(si if si is not None else 0, h, t, now)
        if rep:
            self.stats.replicated += len(rep)
            if now is None or not self.write_behind:
                for peer in self.peers:
                    peer.prewarm([h for h, _ in rep], [t for _, t in rep])
        return len(rep)

    def prewarm(self, hashes: Sequence[BlockKey], types: Sequence[BlockType | None] | None = None) -> int:
        """Pull blocks another pod published into this pod's fastest tier (CPU) ahead of demand."""
        n = 0
        for i, h in enumerate(hashes):
            btype = types[i] if types is not None and i < len(types) else None
            if self.tiers[0].shared or self.tiers[0].contains(h):
                continue  # a shared first tier already shows the peer's write
            self._commit(0, h, btype, None)
            n += 1
        self.stats.prewarmed += n
        return n

    def finish(self, hashes: Iterable[BlockKey]) -> None:
        """A request finished: its evict-on-finish blocks go first in every tier that holds them."""
        hs = list(hashes)
        for t in self.tiers:
            t.finish(hs)

    # -- reads --------------------------------------------------------------------------------------------

    def lookup(self, hashes: Sequence[BlockKey], now: float | None = None) -> TierLookup:
        """The longest run of `hashes`, from the first, held below the GPU; each block's highest tier."""
        if now is not None:
            self.poll(now)
        media: list[str] = []
        for h in hashes:
            for t in self.tiers:
                if t.contains(h):
                    media.append(t.medium)
                    break
            else:
                break
        return TierLookup(len(media), tuple(media), self.cost.load_seconds(media))

    def load(self, hashes: Sequence[BlockKey], now: float | None = None) -> TierLookup:
        """Read the run of `hashes` held below the GPU into it; promotes disk hits into the first tier.

        Reads are verified: a block whose read fails ends the run (the engine recomputes from there).
        """
        if now is not None:
            self.poll(now)
        media: list[str] = []
        for i, h in enumerate(hashes):
            served = None
            for ti, t in enumerate(self.tiers):
                if not t.contains(h):
                    continue
                if t.read(h, hashes[i + 1 : i + 1 + READ_AHEAD]):
                    served = ti
                else:
                    self.stats.bad_reads += 1
                    if t.shared:
                        self._emit(True, t.medium, h)
                break
            if served is None:
                break
            medium = self.tiers[served].medium
            media.append(medium)
            self.stats.hits[medium] = self.stats.hits.get(medium, 0) + 1
            if served > 0 and not self.tiers[0].contains(h):
                btype = None
                self._commit(0, h, btype, now)
                self.stats.promoted += 1
        res = TierLookup(len(media), tuple(media), self.cost.load_seconds(media))
        if media:
            self.stats.loads += 1
            self.stats.load_s += res.load_s
        return res

    def holds(self, h: BlockKey) -> str | None:
        """The highest tier holding `h` (None if none): for status views and tests."""
        for t in self.tiers:
            if t.contains(h):
                return t.medium
        return None

    def pending(self) -> int:
        return sum(len(q) for q in self._pending)
