"""The seam between an engine's GPU block pool and the tiered store below it.

The simulator's engine knows GPU blocks by their full digests and nothing about tiers or block types; the
store knows blocks by their KV-event hashes (so GPU, CPU and DISK events name a block the same way) and
nothing about requests. `EngineTiers` translates, so the engine needs only four calls:

- ``advance(now)`` once per step (lands finished write-behind copies);
- ``on_gpu_evict(digest)`` when the pool evicts a cached block (offers it to the lower tiers);
- ``lookup_prefix(digests)`` after a GPU prefix miss, then ``load_prefix(digests)`` once the GPU slots are
  allocated (blocks actually loaded, after verification, and the seconds it takes);
- ``after_step(gpu_events)`` with the pool's events (replicates shared types; returns the tier events).

Block types come from the request (`note_request`): the hook re-hashes the prompt with the engine's hasher
to learn which digest has which type, keeping a bounded map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kvtiers.hashing import BlockHasher, to_event_hash
from kvtiers.kvevents import BlockStored, KVEvent
from kvtiers.store import TieredStore
from kvtiers.types import BlockType


@dataclass
class TierCounters:
    """Per-tier hit counters as `status` and the decision stream show them (in tokens)."""

    lookups: int = 0
    hit_tokens_cpu: int = 0
    hit_tokens_disk: int = 0
    load_s: float = 0.0


class EngineTiers:
    """Adapter from one engine's block pool to a `TieredStore` (one per pod)."""

    def __init__(
        self,
        store: TieredStore,
        hasher: BlockHasher | None = None,
        event_hash_int: bool = True,
        max_typed_blocks: int = 1 << 16,
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.event_hash_int = event_hash_int
        self.block_size = store.block_size
        self.now = 0.0
        self.counters = TierCounters()
        self._types: OrderedDict[Any, BlockType] = OrderedDict()
        self._max_typed = max_typed_blocks

    def _key(self, digest: bytes) -> Any:
        return to_event_hash(digest, self.event_hash_int)

    # -- types ----------------------------------------------------------------------------------------------

    def note_request(
        self, token_ids: Sequence[int], types: Sequence[BlockType | str], cache_salt: str | None = None
    ) -> None:
        """Remember the type of each full block of a prompt (types from `kvtiers.types.request_block_types`)."""
        if self.hasher is None or not types:
            return
        digests = self.hasher.hash_blocks(token_ids[: len(types) * self.block_size], cache_salt=cache_salt)
        for d, t in zip(digests, types):
            k = self._key(d)
            self._types[k] = BlockType(t)
            self._types.move_to_end(k)
        while len(self._types) > self._max_typed:
            self._types.popitem(last=False)

    def type_of_key(self, key: Any) -> BlockType | None:
        return self._types.get(key)

    # -- the engine's calls -----------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        self.now = now
        self.store.poll(now)

    def on_gpu_evict(self, digest: bytes) -> None:
        k = self._key(digest)
        self.store.offer([k], [self._types.get(k)], now=self.now)

    def lookup_prefix(self, digests: Sequence[bytes]) -> int:
        """How many of `digests` (the run after the GPU's hits) the lower tiers hold, from the first."""
        if not digests:
            return 0
        return self.store.lookup([self._key(d) for d in digests], now=self.now).num_blocks

    def load_prefix(self, digests: Sequence[bytes]) -> tuple[int, float]:
        """(blocks loaded from lower tiers, seconds) for the run of `digests` after the GPU's hits."""
        if not digests:
            return 0, 0.0
        res = self.store.load([self._key(d) for d in digests], now=self.now)
        c = self.counters
        c.lookups += 1
        c.hit_tokens_cpu += res.media.count("CPU") * self.block_size
        c.hit_tokens_disk += res.media.count("DISK") * self.block_size
        c.load_s += res.load_s
        return res.num_blocks, res.load_s

    def after_step(self, gpu_events: Sequence[KVEvent]) -> list[KVEvent]:
        """Replicate newly computed blocks of shared types; the tier events to publish after the GPU's."""
        for ev in gpu_events:
            if isinstance(ev, BlockStored) and (ev.medium or "GPU") == "GPU":
                types = [self._types.get(h) for h in ev.block_hashes]
                if any(t is not None for t in types):
                    self.store.on_computed(ev.block_hashes, types, now=self.now)
        return self.store.take_events()


def attach_tiers(engine: Any, store: TieredStore) -> EngineTiers:
    """Give a `sim_gpu.engine.SimEngine` lower tiers: its pool offers evictions to `store` and its scheduler
    loads GPU prefix misses from it. Returns the hook (for `note_request` and counters)."""
    if store.block_size != engine.config.block_size:
        raise ValueError(
            f"kv tiers: store block_size {store.block_size} differs from the engine's {engine.config.block_size}"
        )
    hook = EngineTiers(store, engine.hasher, engine.config.event_hash_int)
    engine.pool.tiers = hook
    return hook


def build_store(
    spec: Any,
    *,
    block_size: int,
    block_bytes: int,
    base_dir: str | None = None,
    payload_bytes: int | None = None,
) -> TieredStore | None:
    """A pod's store from a profile's `kv_tiers` (a `KVTiersSpec` or the same keys as a dict); None if it
    names no tier. A relative filesystem path is under `base_dir` (the run directory). Files hold
    `payload_bytes` stand-in bytes per block (default: the real block size, capped at 64 KiB, so a laptop
    run does not write gigabytes of zeros); the latency model still prices the real `block_bytes`."""
    import os

    from kvtiers.fs_tier import FsTier
    from kvtiers.policy import PolicyConfig
    from kvtiers.store import CostModel, FilesystemTier, MemoryTier, synthetic_payload

    def get(obj: Any, key: str, default: Any = None) -> Any:
        return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)

    policy = PolicyConfig.from_config(get(spec, "policies") or {})
    fs_spec = get(spec, "filesystem")
    disk_gbps = float(get(fs_spec, "bandwidth_gbps", 5.0)) if fs_spec is not None else 5.0
    cost = CostModel(
        block_bytes=block_bytes,
        pcie_gbps=float(get(spec, "pcie_gbps", 32.0)),
        disk_read_gbps=disk_gbps,
        disk_write_gbps=disk_gbps,
    )
    tiers: list[Any] = []
    cpu = int(get(spec, "cpu_blocks", 0) or 0)
    if cpu > 0:
        tiers.append(MemoryTier("CPU", cpu, policy))
    if fs_spec is not None:
        path = str(get(fs_spec, "path"))
        if base_dir is not None and not os.path.isabs(path):
            path = os.path.join(base_dir, path)
        fs = FsTier(path, int(get(fs_spec, "capacity_mb", 1024)) << 20, pin_budget=policy.pin_budget_total())
        tiers.append(FilesystemTier(fs, synthetic_payload(payload_bytes or min(block_bytes, 64 << 10)), policy=policy))
    if not tiers:
        return None
    return TieredStore(tiers, cost, policy=policy, block_size=block_size)
