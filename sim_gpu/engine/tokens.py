"""Deterministic output tokens: what the simulated model "generates".

Like a real model at temperature 0, the same prompt yields the same output: the generator is keyed on the
engine seed and the prompt's token ids, not on request ids (which servers randomize). `random` mode draws
uniformly from the vocabulary; `echo` mode repeats the prompt cyclically (handy for checking plumbing).
"""

from __future__ import annotations

import random
import zlib
from array import array
from collections.abc import Sequence

OUTPUT_MODES = ("random", "echo")


class TokenStream:
    """The output tokens of one request, produced one at a time (`next`) or a run at once (`take`)."""

    __slots__ = ("_next", "_take")

    def __init__(self, next_fn, take_fn=None) -> None:
        self._next = next_fn
        self._take = take_fn

    def next(self) -> int:
        return self._next()

    def take(self, n: int) -> list[int]:
        """The next `n` tokens: the same ones `n` calls of `next` would give, drawn in one loop."""
        if self._take is not None:
            return self._take(n)
        nxt = self._next
        return [nxt() for _ in range(n)]


def _next_or(it, rest: TokenStream) -> int:
    for tok in it:
        return tok
    return rest.next()


class TokenGenerator:
    """Makes a `TokenStream` per request from (seed, prompt)."""

    def __init__(self, seed: int = 0, vocab_size: int = 32000, mode: str = "random") -> None:
        if mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode: expected one of {', '.join(OUTPUT_MODES)}, got {mode!r}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size: expected >= 2, got {vocab_size!r}")
        self.seed = int(seed)
        self.vocab_size = int(vocab_size)
        self.mode = mode

    def key(self, prompt_token_ids: Sequence[int], seed: int | None = None) -> int:
        """A 64-bit key of (seed, prompt) — stable across processes (no Python hash randomization)."""
        try:
            raw = array("q", prompt_token_ids).tobytes()
        except (OverflowError, TypeError):
            raw = repr(list(prompt_token_ids)).encode()
        if seed is not None:  # a request's seed: the same whatever the engine's (pods agree, as vLLM's do)
            return (zlib.crc32(raw) << 32) ^ (seed & 0xFFFFFFFFFFFFFFFF) ^ (len(prompt_token_ids) << 16) ^ 0x5EED
        return (zlib.crc32(raw) << 32) ^ (self.seed & 0xFFFFFFFF) ^ (len(prompt_token_ids) << 16)

    def stream(self, prompt_token_ids: Sequence[int], replay: Sequence[int] | None = None,
               seed: int | None = None) -> TokenStream:
        """Output tokens for a prompt; `replay` tokens come first, generated ones after them. `seed` (a
        request's) replaces the engine's."""
        if replay:
            it = iter(list(replay))
            rest = self.stream(prompt_token_ids, None, seed)

            def replayed() -> int:
                return _next_or(it, rest)

            return TokenStream(replayed)
        if self.mode == "echo" and prompt_token_ids:
            prompt = list(prompt_token_ids)
            state = [0]

            def echo() -> int:
                tok = prompt[state[0] % len(prompt)]
                state[0] += 1
                return tok

            return TokenStream(echo)
        rng = random.Random(self.key(prompt_token_ids, seed))
        vocab = self.vocab_size
        rand = rng.random

        def take(n: int) -> list[int]:
            return [int(rand() * vocab) for _ in range(n)]

        return TokenStream(lambda: int(rand() * vocab), take)
