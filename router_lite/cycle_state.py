"""Typed per-request state that plugins share (llm-d's CycleState, with keys that carry their value type).

A plugin declares its keys once, as module or instance attributes (`StateKey[int]("block_size")`), and reads
and writes them through `LLMRequest.state`. Keys are either per request (block hashes computed once, the
block size the gateway hashed at) or per scheduling cycle (prefix matches, predictions, a shed verdict):
`CycleState.new_cycle()` drops the per-cycle ones, so a re-scheduled request sees the indexes as they are now.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

__all__ = ["CycleState", "StateKey"]


class StateKey(Generic[T]):
    """A named slot of type T; `per_cycle` slots are cleared when the request is scheduled again."""

    __slots__ = ("name", "per_cycle")

    def __init__(self, name: str, per_cycle: bool = False) -> None:
        self.name = name
        self.per_cycle = per_cycle

    def __repr__(self) -> str:
        return f"StateKey({self.name!r}{', per_cycle' if self.per_cycle else ''})"


class CycleState:
    """The values plugins left on one request, by key object (two plugins never collide on a string)."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[StateKey[Any], Any] = {}

    def get(self, key: StateKey[T], default: T | None = None) -> T | None:
        return self._values.get(key, default)

    def __contains__(self, key: StateKey[Any]) -> bool:
        return key in self._values

    def set(self, key: StateKey[T], value: T) -> T:
        self._values[key] = value
        return value

    def setdefault(self, key: StateKey[T], make: Callable[[], T]) -> T:
        """The value under `key`, made (and stored) by `make()` when absent."""
        try:
            return self._values[key]
        except KeyError:
            value = self._values[key] = make()
            return value

    def pop(self, key: StateKey[T], default: T | None = None) -> T | None:
        return self._values.pop(key, default)

    def new_cycle(self) -> None:
        """Forget what the previous scheduling cycle derived (matches, predictions, verdicts)."""
        if self._values:
            for key in [k for k in self._values if k.per_cycle]:
                del self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"CycleState({', '.join(k.name for k in self._values)})"
