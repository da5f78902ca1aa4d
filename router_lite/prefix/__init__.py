"""Prefix-cache locality: the precise index (from KV events) and the approximate one (from routing history)."""

from __future__ import annotations

from dataclasses import dataclass, field

from router_lite.prefix.approximate import ApproximatePrefixIndex, text_block_hashes, token_block_hashes
from router_lite.prefix.precise import DEFAULT_TIER_WEIGHTS, PrecisePrefixIndex, rank_endpoint_key

__all__ = [
    "DEFAULT_TIER_WEIGHTS",
    "ApproximatePrefixIndex",
    "PrecisePrefixIndex",
    "PrefixIndexes",
    "rank_endpoint_key",
    "text_block_hashes",
    "token_block_hashes",
]


@dataclass
class PrefixIndexes:
    """The indexes a router shares between its scheduler (readers) and its event subscriber (writer).

    One precise index for all KV events; one approximate index per prefix-cache-scorer instance (each has
    its own block size and capacity), created on first use.
    """

    precise: PrecisePrefixIndex = field(default_factory=PrecisePrefixIndex)
    approximate: dict[str, ApproximatePrefixIndex] = field(default_factory=dict)

    def approximate_for(self, scorer_name: str, capacity_per_server: int) -> ApproximatePrefixIndex:
        idx = self.approximate.get(scorer_name)
        if idx is None:
            idx = self.approximate[scorer_name] = ApproximatePrefixIndex(capacity_per_server)
        return idx

    def remove_endpoint(self, endpoint_key: str) -> None:
        """An endpoint left discovery: forget it everywhere."""
        self.precise.remove_endpoint(endpoint_key)
        for idx in self.approximate.values():
            idx.remove_endpoint(endpoint_key)

    def stats(self) -> dict[str, dict[str, int]]:
        out = {"precise": self.precise.stats()}
        for name, idx in self.approximate.items():
            out[f"approximate:{name}"] = idx.stats()
        return out
