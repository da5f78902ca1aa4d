"""Deterministic output tokens: what the simulated model "generates".

Like a real model at temperature 0, the same prompt yields the same output: the generator is keyed on the
engine seed and the prompt's token ids, not on request ids (which servers randomize). `random` mode draws
uniformly from the vocabulary; `echo` mode repeats the prompt cyclically (handy for checking plumbing).

The draws are `int(random.Random(key).random() * vocab)`, one per token. numpy's legacy RandomState is the
same Mersenne Twister with the same seeding (init_by_array over the key's 32-bit words) and the same 53-bit
doubles, so `_Draws` makes them in vectorised runs, ~5x cheaper than a Python loop, with identical values.
The key's crc32 is chained block by block when the caller has the prompt's block digests: a digest names its
whole prefix, so the crc of a shared prefix (a system prompt, an earlier turn) is computed once.
"""

from __future__ import annotations

import random
import zlib
from array import array
from collections.abc import Callable, Sequence

import numpy as np
from numpy.random import RandomState  # numpy 2 imports its random module lazily: not at a first draw

OUTPUT_MODES = ("random", "echo")

# block digest -> crc32 of the int64 bytes of the prompt tokens up to the end of that block (see key()).
# Shared by every engine in the process, bounded: cleared when full (a cleared memo only costs recomputing).
_PREFIX_CRC: dict[bytes, int] = {}
_PREFIX_CRC_MAX = 200_000
_RUNS_MAX = 256  # drawn runs kept per generator (engine), by key: ~40 KB each (a list of ints)
_MIN_RUN = 64  # first run of draws per stream unless the caller expects more; each refill at least doubles it


def _prompt_crc(prompt: Sequence[int], blocks: tuple[int, Sequence[bytes]] | None) -> int:
    """crc32 of the prompt as int64 bytes; with (block size, digests of its first full blocks), chained
    through `_PREFIX_CRC` (crc32(b, crc32(a)) == crc32(a + b))."""
    if not blocks or not blocks[1]:
        return zlib.crc32(array("q", prompt).tobytes())
    bs, digests = blocks
    memo = _PREFIX_CRC
    j = len(digests)
    crc = 0
    while j > 0:
        c = memo.get(digests[j - 1])
        if c is not None:
            crc = c
            break
        j -= 1
    if len(memo) > _PREFIX_CRC_MAX:
        memo.clear()
    n = len(digests)
    if j < n:
        raw = memoryview(array("q", prompt[j * bs : n * bs]))  # the blocks not memoised, converted at once
        for i in range(j, n):
            crc = zlib.crc32(raw[(i - j) * bs : (i - j + 1) * bs], crc)
            memo[digests[i]] = crc
    return zlib.crc32(array("q", prompt[n * bs :]), crc)


class _Draws:
    """The stream `int(random.Random(key).random() * vocab)` for a key of at least two 32-bit words, made by a
    shared numpy RandomState in runs: a refill re-seeds and draws the whole longer run again (C speed).

    The longest run drawn per key is kept in `runs` (the generator's, the last `_RUNS_MAX` keys): the same
    prompt on the same engine is the same stream, so a repeated prompt starts from it instead of re-seeding
    (~25 us) and re-drawing. A run is a prefix of the stream, kept as the list of ints `buf` reads (no
    conversion on reuse), and is never changed."""

    __slots__ = ("buf", "first", "key", "pos", "rs", "runs", "vocab")

    def __init__(self, rs: RandomState, key: int, vocab: int, first: int, runs: dict[int, list[int]]) -> None:
        self.rs = rs
        self.key = key
        self.vocab = vocab
        self.runs = runs
        run = runs.get(key)
        self.buf: list[int] = [] if run is None else run
        self.pos = 0
        self.first = max(first, _MIN_RUN)  # size of the first run (re-seeding and re-drawing costs ~10 us)

    def take(self, n: int) -> list[int]:
        pos = self.pos
        end = pos + n
        buf = self.buf
        if end > len(buf):
            k = abs(self.key)
            self.rs.seed([(k >> s) & 0xFFFFFFFF for s in range(0, max(k.bit_length(), 1), 32)])  # init_by_array
            size = max(end, 2 * len(buf), self.first)
            buf = self.buf = (self.rs.random_sample(size) * self.vocab).astype(np.int64).tolist()
            runs = self.runs
            old = runs.pop(self.key, None)
            runs[self.key] = buf if old is None or len(old) < size else old  # most recent last
            if len(runs) > _RUNS_MAX:
                del runs[next(iter(runs))]
        self.pos = end
        return buf[pos:end]

    def next(self) -> int:
        pos = self.pos
        if pos >= len(self.buf):
            return self.take(1)[0]
        self.pos = pos + 1
        return self.buf[pos]


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

    @classmethod
    def deferred(cls, make: Callable[[], TokenStream]) -> TokenStream:
        """A stream that `make()` builds at its first draw: the engine's prompt digests exist by then (the
        prompt has been scheduled), and they make the key cheap (see TokenGenerator.key)."""
        s = cls(None)

        def start() -> None:
            real = make()
            s._next, s._take = real._next, real._take

        def first_next() -> int:
            start()
            return s._next()

        def first_take(n: int) -> list[int]:
            start()
            return s.take(n)

        s._next, s._take = first_next, first_take
        return s


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
        self._rs: RandomState | None = None  # shared by this generator's streams (_Draws)
        self._runs: dict[int, list[int]] = {}  # key -> the longest run drawn for it, oldest key first (_Draws)

    def key(
        self,
        prompt_token_ids: Sequence[int],
        blocks: tuple[int, Sequence[bytes]] | None = None,
        seed: int | None = None,
    ) -> int:
        """A 64-bit key of (seed, prompt) — stable across processes (no Python hash randomization).

        `blocks`: (block size, digests of the prompt's first full blocks), when known — the same key, cheaper.
        `seed`: a request's sampling seed, which replaces the engine's (pods agree, as vLLM's do)."""
        try:
            crc = _prompt_crc(prompt_token_ids, blocks)
        except (OverflowError, TypeError):
            crc = zlib.crc32(repr(list(prompt_token_ids)).encode())
        if seed is not None:
            return (crc << 32) ^ (seed & 0xFFFFFFFFFFFFFFFF) ^ (len(prompt_token_ids) << 16) ^ 0x5EED
        return (crc << 32) ^ (self.seed & 0xFFFFFFFF) ^ (len(prompt_token_ids) << 16)

    def stream(
        self,
        prompt_token_ids: Sequence[int],
        replay: Sequence[int] | None = None,
        blocks: tuple[int, Sequence[bytes]] | None = None,
        expect: int = 0,
        seed: int | None = None,
    ) -> TokenStream:
        """Output tokens for a prompt; `replay` tokens come first, generated ones after them. `blocks`, `seed`:
        as for `key`; `expect`: how many tokens the caller will likely take (max_tokens), drawn in one run."""
        if replay:
            it = iter(list(replay))
            rest = self.stream(prompt_token_ids, blocks=blocks, expect=expect, seed=seed)

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
        key = self.key(prompt_token_ids, blocks, seed)
        if key >> 32:  # two or more 32-bit words: numpy seeds from them exactly as random.Random does
            if self._rs is None:
                self._rs = RandomState()
            draws = _Draws(self._rs, key, self.vocab_size, expect, self._runs)
            return TokenStream(draws.next, draws.take)
        rng = random.Random(key)
        vocab = self.vocab_size
        rand = rng.random

        def take(n: int) -> list[int]:
            return [int(rand() * vocab) for _ in range(n)]

        return TokenStream(lambda: int(rand() * vocab), take)
