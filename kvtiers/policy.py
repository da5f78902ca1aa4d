"""Per-type cache policies (pin, replicate, evict eagerly), the eviction queue that applies them, and the
LRU / Belady reference points they are measured against.

Policy is config (a profile's ``kv_tiers.policies``)::

    system_prompt:    {pin: true, pin_budget: 0.25, replicate: true}
    tool_definition:  {pin: true, pin_budget: 0.10, replicate: true}
    reasoning_branch: {evict_on_finish: true}

``pin``: a pinned block is evicted only after every unpinned one; at most ``pin_budget`` (a fraction of the
tier's capacity) of a type's blocks are pinned, the oldest beyond that fall back to LRU. ``replicate``: the
block is written through to the shared tier as soon as it is computed, so every pod can load it.
``evict_on_finish`` (or ``evict: eager``): once the request that made the block finishes, the block is
evicted first and never offloaded. Types without an entry behave as LRU.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvtiers.types import BLOCK_TYPES, BlockType, parse_block_type

_POLICY_KEYS = ("pin", "pin_budget", "replicate", "evict_on_finish", "evict")
_EVICT = {"eager": True, "lru": False}


@dataclass(frozen=True)
class TypePolicy:
    """What the cache does with blocks of one type."""

    pin: bool = False
    pin_budget: float = 0.25
    replicate: bool = False
    evict_on_finish: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.pin_budget <= 1.0:
            raise ValueError(f"pin_budget: expected a fraction in [0, 1], got {self.pin_budget!r}")


LRU_POLICY = TypePolicy()


@dataclass(frozen=True)
class PolicyConfig:
    """Policies by block type; a type without an entry is plain LRU."""

    policies: Mapping[BlockType, TypePolicy] = field(default_factory=dict)

    def of(self, btype: BlockType | None) -> TypePolicy:
        return self.policies.get(btype, LRU_POLICY) if btype is not None else LRU_POLICY

    def pin_budget_total(self) -> float:
        """The share of a tier pinned types may hold together (a tier that cannot tell the pinned types apart,
        the filesystem's, protects this much of its capacity)."""
        return min(1.0, sum(p.pin_budget for p in self.policies.values() if p.pin))

    @property
    def is_lru(self) -> bool:
        return all(p == LRU_POLICY for p in self.policies.values())

    @classmethod
    def from_config(
        cls, config: Mapping[str, Mapping[str, Any]] | None, where: str = "kv_tiers.policies"
    ) -> PolicyConfig:
        """Parse `{type_name: {pin, pin_budget, replicate, evict_on_finish}}`; errors name the key."""
        out: dict[BlockType, TypePolicy] = {}
        for name, entry in (config or {}).items():
            btype = parse_block_type(name, f"{where}: block type")
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}.{name}: expected a mapping of {', '.join(_POLICY_KEYS)}")
            unknown = sorted(set(entry) - set(_POLICY_KEYS))
            if unknown:
                raise ValueError(f"{where}.{name}.{unknown[0]}: unknown key; expected one of {', '.join(_POLICY_KEYS)}")
            for key in ("pin", "replicate", "evict_on_finish"):
                if key in entry and not isinstance(entry[key], bool):
                    raise ValueError(f"{where}.{name}.{key}: expected true or false, got {entry[key]!r}")
            if "pin_budget" in entry and (
                isinstance(entry["pin_budget"], bool) or not isinstance(entry["pin_budget"], (int, float))
            ):
                raise ValueError(f"{where}.{name}.pin_budget: expected a number in [0, 1], got {entry['pin_budget']!r}")
            args = dict(entry)
            if "evict" in args:  # `evict: eager` is shorthand for `evict_on_finish: true`
                mode = args.pop("evict")
                if mode not in _EVICT:
                    raise ValueError(f"{where}.{name}.evict: expected one of {', '.join(_EVICT)}, got {mode!r}")
                args.setdefault("evict_on_finish", _EVICT[mode])
            try:
                out[btype] = TypePolicy(**args)
            except ValueError as exc:
                raise ValueError(f"{where}.{name}.{exc}") from None
        return cls(out)


def semantic_defaults() -> PolicyConfig:
    """The typed policy the `semantic-kv` profile starts from: durable prompts pinned, scratchpads dropped."""
    return PolicyConfig(
        {
            BlockType.SYSTEM_PROMPT: TypePolicy(pin=True, pin_budget=0.25, replicate=True),
            BlockType.TOOL_DEFINITION: TypePolicy(pin=True, pin_budget=0.15, replicate=True),
            BlockType.REASONING_BRANCH: TypePolicy(evict_on_finish=True),
        }
    )


class EvictionQueue:
    """Which block a full tier gives up next: finished throwaway blocks, then LRU, then pinned blocks.

    Three LRU-ordered classes. Pinned blocks beyond their type's budget drop into the LRU class (oldest
    first), so pinning can never starve the tier.
    """

    def __init__(self, capacity: int, policy: PolicyConfig | None = None) -> None:
        self.capacity = capacity
        self.policy = policy or PolicyConfig()
        self._eager: OrderedDict[Hashable, None] = OrderedDict()
        self._lru: OrderedDict[Hashable, None] = OrderedDict()
        self._pinned: dict[BlockType, OrderedDict[Hashable, None]] = {}
        self._type: dict[Hashable, BlockType | None] = {}

    def __len__(self) -> int:
        return len(self._type)

    def __contains__(self, h: object) -> bool:
        return h in self._type

    def type_of(self, h: Hashable) -> BlockType | None:
        return self._type.get(h)

    def _detach(self, h: Hashable) -> None:
        self._eager.pop(h, None)
        self._lru.pop(h, None)
        t = self._type.get(h)
        if t is not None and t in self._pinned:
            self._pinned[t].pop(h, None)

    def _budget(self, btype: BlockType) -> int:
        return int(self.policy.of(btype).pin_budget * self.capacity)

    def add(self, h: Hashable, btype: BlockType | None = None) -> None:
        """Insert or refresh `h` as most recently used (a known block keeps its type unless one is given)."""
        if btype is None:
            btype = self._type.get(h)
        self._detach(h)
        self._type[h] = btype
        if btype is not None and self.policy.of(btype).pin and self._budget(btype) > 0:
            pinned = self._pinned.setdefault(btype, OrderedDict())
            pinned[h] = None
            while len(pinned) > self._budget(btype):
                old, _ = pinned.popitem(last=False)
                self._lru[old] = None
        else:
            self._lru[h] = None

    touch = add

    def finish(self, hashes: Iterable[Hashable]) -> None:
        """The request that made these blocks finished: its evict-on-finish blocks go first."""
        for h in hashes:
            t = self._type.get(h, False)
            if t is not False and self.policy.of(t).evict_on_finish:
                self._detach(h)
                self._eager[h] = None

    def remove(self, h: Hashable) -> bool:
        if h not in self._type:
            return False
        self._detach(h)
        del self._type[h]
        return True

    def victim(self, protect: set | frozenset = frozenset()) -> Hashable | None:
        """The next block to evict (not removed), skipping `protect`; None when everything is protected."""
        for q in (self._eager, self._lru, *self._pinned_by_age()):
            for h in q:
                if h not in protect:
                    return h
        return None

    def _pinned_by_age(self) -> list[OrderedDict[Hashable, None]]:
        return [q for q in self._pinned.values() if q]

    def pop_victim(self, protect: set | frozenset = frozenset()) -> Hashable | None:
        h = self.victim(protect)
        if h is not None:
            self.remove(h)
        return h


# ----------------------------------------------------------------------------------------------------------
# Reference points over a trace of requests (each request: its block hashes in order, with types).


@dataclass(frozen=True)
class TraceRequest:
    """One request of an offline trace: its full blocks' hashes and types, in prompt order."""

    blocks: tuple[Hashable, ...]
    types: tuple[BlockType, ...] = ()

    def type_at(self, i: int) -> BlockType:
        return self.types[i] if i < len(self.types) else BlockType.OTHER


def simulate_prefix_cache(trace: Sequence[TraceRequest], capacity: int, policy: PolicyConfig | None = None) -> int:
    """Blocks recomputed when `trace` runs one request at a time on a prefix cache of `capacity` blocks.

    Prefix semantics as in vLLM: a request reuses the longest run of cached blocks from its start; every
    block after the first miss is recomputed. All of a request's blocks are resident while it runs.
    """
    q = EvictionQueue(capacity, policy)
    recomputed = 0
    for req in trace:
        hit = 0
        while hit < len(req.blocks) and req.blocks[hit] in q:
            hit += 1
        recomputed += len(req.blocks) - hit
        protect = set(req.blocks)
        kept = []
        for i, h in enumerate(req.blocks):
            if h not in q and len(q) >= capacity:
                if q.pop_victim(protect) is None:
                    continue  # the request alone overflows the cache: this block is not kept
            q.add(h, req.type_at(i))
            kept.append(i)
        # Freed tail first, as vLLM does: a request's first blocks end up most recent, so eviction eats
        # prefixes from their tail and never leaves a tail without its head.
        for i in reversed(kept):
            q.add(req.blocks[i], req.type_at(i))
        q.finish(req.blocks)
    return recomputed


def belady_misses(accesses: Sequence[Hashable], capacity: int) -> int:
    """Misses of Belady's MIN (evict the block used farthest in the future) on a flat access sequence.

    For a prefix cache run over the flattened block sequence of its trace, this is a lower bound on blocks
    recomputed by any eviction policy, online or not: each recomputed block is at least one miss.
    """
    if capacity <= 0:
        return len(accesses)
    inf = len(accesses) + 1
    next_use = [inf] * len(accesses)
    last: dict[Hashable, int] = {}
    for i in range(len(accesses) - 1, -1, -1):
        next_use[i] = last.get(accesses[i], inf)
        last[accesses[i]] = i
    cached: dict[Hashable, int] = {}  # block -> its next use
    heap: list[tuple[int, int, Hashable]] = []  # (-next use, tiebreak, block); stale entries skipped
    misses = 0
    for i, h in enumerate(accesses):
        if h not in cached:
            misses += 1
            if len(cached) >= capacity:
                while True:
                    neg, _, v = heapq.heappop(heap)
                    if cached.get(v) == -neg:
                        del cached[v]
                        break
        cached[h] = next_use[i]
        heapq.heappush(heap, (-next_use[i], i, h))
    return misses


def lru_misses(accesses: Sequence[Hashable], capacity: int) -> int:
    """Misses of plain LRU on a flat access sequence (the same yardstick Belady is measured on)."""
    cache: OrderedDict[Hashable, None] = OrderedDict()
    misses = 0
    for h in accesses:
        if h in cache:
            cache.move_to_end(h)
            continue
        misses += 1
        if capacity <= 0:
            continue
        if len(cache) >= capacity:
            cache.popitem(last=False)
        cache[h] = None
    return misses


def flatten(trace: Sequence[TraceRequest]) -> list[Hashable]:
    """The block access sequence of a trace, request after request."""
    return [h for req in trace for h in req.blocks]


__all__ = [
    "BLOCK_TYPES",
    "EvictionQueue",
    "PolicyConfig",
    "TraceRequest",
    "TypePolicy",
    "belady_misses",
    "flatten",
    "lru_misses",
    "semantic_defaults",
    "simulate_prefix_cache",
]
