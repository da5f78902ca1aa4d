"""The global, tier-aware KV block index: which pod holds each block, and in which tier.

Fed by the KV events every pod publishes (vLLM's format; ``medium`` names the tier: GPU, CPU or DISK, as
vLLM's offloading connector emits them). A block in a shared medium (the filesystem tier, DISK by default)
counts for every pod, whichever pod wrote it: any replica can load it. A router scores a request for a pod
by the longest run of its blocks the pod can get, each block weighted by the best tier it is in (GPU 1.0,
CPU 0.8, DISK 0.5 by default): a CPU hit is nearly as good as a GPU hit, a disk hit still beats recompute.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kvtiers.kvevents import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent, KVEventBatch

DEFAULT_WEIGHTS: dict[str, float] = {"GPU": 1.0, "CPU": 0.8, "DISK": 0.5}
SHARED_POD = "*shared*"


def normalize_medium(medium: str | None) -> str:
    """vLLM leaves `medium` None on GPU events in some versions and lowercases it in others."""
    return "GPU" if not medium else medium.upper()


@dataclass
class IndexStats:
    events: int = 0
    stored: int = 0
    removed: int = 0
    cleared: int = 0
    unknown_medium: int = 0


@dataclass
class TieredIndex:
    """block hash -> {pod: {medium}}; shared media are kept once, under no pod."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    shared_media: frozenset[str] = frozenset({"DISK"})
    stats: IndexStats = field(default_factory=IndexStats)

    def __post_init__(self) -> None:
        self.weights = {normalize_medium(k): float(v) for k, v in self.weights.items()}
        for m, w in self.weights.items():
            if not 0.0 <= w <= 1.0:
                raise ValueError(f"tier weight {m}: expected a number in [0, 1], got {w!r}")
        self.shared_media = frozenset(normalize_medium(m) for m in self.shared_media)
        self._blocks: dict[Hashable, dict[str, set[str]]] = {}
        self._by_pod: dict[str, set[Hashable]] = {}

    # -- feeding ------------------------------------------------------------------------------------------

    def apply(self, pod: str, events: KVEventBatch | Iterable[KVEvent]) -> None:
        """Apply one pod's events (a decoded batch or a list of events) in order."""
        for ev in events.events if isinstance(events, KVEventBatch) else events:
            self.stats.events += 1
            if isinstance(ev, BlockStored):
                self._store(pod, normalize_medium(ev.medium), ev.block_hashes)
            elif isinstance(ev, BlockRemoved):
                self._remove(pod, normalize_medium(ev.medium), ev.block_hashes)
            elif isinstance(ev, AllBlocksCleared):
                self.clear_pod(pod)

    def _owner(self, pod: str, medium: str) -> str:
        return SHARED_POD if medium in self.shared_media else pod

    def _store(self, pod: str, medium: str, hashes: Sequence[Hashable]) -> None:
        if medium not in self.weights:
            self.stats.unknown_medium += 1
        owner = self._owner(pod, medium)
        pod_blocks = self._by_pod.setdefault(owner, set())
        for h in hashes:
            self._blocks.setdefault(h, {}).setdefault(owner, set()).add(medium)
            pod_blocks.add(h)
            self.stats.stored += 1

    def _remove(self, pod: str, medium: str, hashes: Sequence[Hashable]) -> None:
        owner = self._owner(pod, medium)
        for h in hashes:
            pods = self._blocks.get(h)
            if not pods or owner not in pods:
                continue
            pods[owner].discard(medium)
            self.stats.removed += 1
            if not pods[owner]:
                del pods[owner]
                self._by_pod.get(owner, set()).discard(h)
            if not pods:
                del self._blocks[h]

    def clear_pod(self, pod: str) -> None:
        """Forget what `pod` holds in its own tiers (AllBlocksCleared, or the pod went away)."""
        self.stats.cleared += 1
        for h in self._by_pod.pop(pod, set()):
            pods = self._blocks.get(h)
            if pods is not None:
                pods.pop(pod, None)
                if not pods:
                    del self._blocks[h]

    # -- queries ------------------------------------------------------------------------------------------

    def where(self, h: Hashable) -> dict[str, set[str]]:
        """{pod (or SHARED_POD): media} holding block `h`."""
        return {p: set(m) for p, m in self._blocks.get(h, {}).items()}

    def best_medium(self, h: Hashable, pod: str) -> str | None:
        """The highest-weighted tier from which `pod` can get block `h` (own tiers or a shared one)."""
        pods = self._blocks.get(h)
        if not pods:
            return None
        media = set(pods.get(pod, ())) | set(pods.get(SHARED_POD, ()))
        if not media:
            return None
        return max(media, key=lambda m: self.weights.get(m, 0.0))

    def prefix_media(self, hashes: Sequence[Hashable], pod: str) -> list[str]:
        """The best tier of each block in the longest run of `hashes` (from the first) `pod` can get."""
        out: list[str] = []
        for h in hashes:
            m = self.best_medium(h, pod)
            if m is None:
                break
            out.append(m)
        return out

    def score(self, hashes: Sequence[Hashable], pods: Iterable[str]) -> dict[str, float]:
        """Per pod, in [0, 1]: tier-weighted blocks of its reusable prefix over the request's blocks."""
        pods = list(pods)
        if not hashes:
            return {p: 0.0 for p in pods}
        return {p: sum(self.weights.get(m, 0.0) for m in self.prefix_media(hashes, p)) / len(hashes) for p in pods}

    def pods(self) -> list[str]:
        return sorted(p for p in self._by_pod if p != SHARED_POD)

    def __len__(self) -> int:
        return len(self._blocks)

    def counts(self) -> dict[str, dict[str, int]]:
        """{pod: {medium: blocks}} for status views."""
        out: dict[str, dict[str, int]] = {}
        for pods in self._blocks.values():
            for p, media in pods.items():
                for m in media:
                    out.setdefault(p, {}).setdefault(m, 0)
                    out[p][m] += 1
        return out


def weights_from_config(config: Mapping[str, float] | None, where: str = "tierWeights") -> dict[str, float]:
    """Tier weights from config (`{GPU: 1.0, CPU: 0.8, DISK: 0.5}`), defaults for tiers not named."""
    out = dict(DEFAULT_WEIGHTS)
    for k, v in (config or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ValueError(f"{where}.{k}: expected a number in [0, 1], got {v!r}")
        out[normalize_medium(k)] = float(v)
    return out
