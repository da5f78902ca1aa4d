"""One choice's output as vLLM's output processor shapes it: stop strings and ids, min_tokens, logprobs.

The engine only produces token ids (and stops on length or EOS); like vLLM's detokenizer, this turns them into
text, ends the choice at a stop string or stop token (`finish_reason` "stop", `stop_reason` the string or id),
holds back streamed text that may still become a stop string, and attaches logprobs. The caller aborts the
engine request when `finished` turns true before the engine said so. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

from kvtiers.tokenizer import IncrementalDetokenizer
from sim_gpu.sampling import Sampling


@dataclass
class Delta:
    """What one push adds to the choice: text and ids to send, their logprob entries."""

    text: str
    token_ids: list[int]
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)


def token_logprobs(token: int, position: int, top: int, vocab_size: int) -> tuple[float, list[tuple[int, float]]]:
    """A stable, well-formed logprob for `token` and `top` alternatives (sampled token ranked first, descending,
    probabilities summing below 1) — the simulated model has no distribution, so these describe a made-up one."""
    u = (zlib.crc32(f"{token}:{position}".encode()) % 1000) / 1000.0
    chosen = math.log(0.5 + 0.45 * u)
    alts = [(token, chosen)]
    rest = 1.0 - math.exp(chosen)
    for k in range(1, top):
        alt = (token + k * 7919) % vocab_size
        alts.append((alt, math.log(rest * 0.5**k)))
    return chosen, alts[:top] if top else []


class ChoiceOutput:
    """Text, ids and finish state of one choice, fed with the engine's new token ids."""

    def __init__(
        self,
        tokenizer: Any,
        sampling: Sampling,
        eos_token_id: int | None,
        ignore_eos: bool,
        forced_len: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.tok = tokenizer
        self.s = sampling
        # EOS is the engine's to stop on, except under min_tokens (the engine is told to ignore it then).
        self.eos = eos_token_id if sampling.min_tokens > 0 and not ignore_eos else None
        self._plain = not sampling.stop and not sampling.stop_token_ids and self.eos is None
        self.forced_len = forced_len
        self.max_tokens = max_tokens
        self.detok = IncrementalDetokenizer(tokenizer)
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # chars of `text` already handed out
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.holdback = max((len(s) for s in sampling.stop), default=1) - 1
        if sampling.include_stop_str_in_output:
            self.holdback = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def push(self, new_ids: list[int], engine_finish: str | None) -> Delta:
        """Consume the engine's new ids (`engine_finish`: its finish reason when it finished this request)."""
        start = len(self.ids)
        if self._plain:  # nothing can stop it here: the whole run at once (the common, hot case)
            self.ids.extend(new_ids)
            self.text += self.detok.push(new_ids)
        else:
            for tok in new_ids:
                if self.finished:
                    break
                self.ids.append(tok)
                self._step(tok)
        if not self.finished and engine_finish is not None and len(self.ids) >= start + len(new_ids):
            forced_done = (
                self.forced_len is not None
                and len(self.ids) >= self.forced_len
                and (self.max_tokens is None or self.forced_len < self.max_tokens)
            )
            self.finish_reason = "stop" if forced_done else engine_finish
        end = len(self.text) if self.finished else max(self.sent, len(self.text) - self.holdback)
        text, self.sent = self.text[self.sent : end], end
        ids = self.ids[start:]
        return Delta(text, ids, self._logprobs(start) if self.s.logprobs is not None else [])

    def _step(self, tok: int) -> None:
        s, n = self.s, len(self.ids)
        if n > s.min_tokens and (tok in s.stop_token_ids or tok == self.eos):
            self.finish_reason = "stop"
            self.stop_reason = tok if tok != self.eos else None
            if s.include_stop_str_in_output and tok != self.eos:
                self.text += self.detok.push([tok])
            return
        before = len(self.text)
        self.text += self.detok.push([tok])
        if not s.stop or n <= s.min_tokens:
            return
        for stop in s.stop:  # a match may start in earlier text and end in this token's
            at = self.text.find(stop, max(0, before - len(stop) + 1))
            if at >= 0:
                self.text = self.text[: at + len(stop)] if s.include_stop_str_in_output else self.text[:at]
                self.finish_reason, self.stop_reason = "stop", stop
                return

    def _logprobs(self, start: int) -> list[tuple[int, float, list[tuple[int, float]]]]:
        top = self.s.logprobs or 0
        out = []
        for pos in range(start, len(self.ids)):
            tok = self.ids[pos]
            chosen, alts = token_logprobs(tok, pos, top, self.tok.vocab_size)
            out.append((tok, chosen, alts))
        return out

    def token_str(self, tok: int) -> str:
        """A token as logprobs name it: its text, or `token_id:N` with return_tokens_as_token_ids."""
        if self.s.return_tokens_as_token_ids:
            return f"token_id:{tok}"
        return self.tok.token_text(tok) if hasattr(self.tok, "token_text") else self.tok.decode([tok])
