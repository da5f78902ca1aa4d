"""Sampling fields of a request, checked as vLLM 0.32 checks them, and the policy for every other field.

vLLM validates `SamplingParams` before anything runs and answers a 400 naming the bad value; the messages here
follow its wording. A field vLLM accepts falls in one of three groups:
- honoured: the simulator does what vLLM does (stop strings/ids, min_tokens, seed, n, logprobs, ...);
- distribution knobs (`top_p`, `top_k`, penalties, ...): checked like vLLM, and they change the tokens drawn
  (they are mixed into the choice's seed) — the simulated model has no distribution for them to reshape;
- not simulated (`logit_bias`, `prompt_logprobs`, guided decoding, ...): refused with a 400 naming the field
  rather than answered as if honoured. Unknown fields are ignored, as vLLM ignores them (it only logs them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_LOGPROBS = 20  # vLLM's default --max-logprobs
_INT64 = 2**63

# Distribution knobs: (name, default, check, vLLM's message for a bad value).
_KNOBS: tuple[tuple[str, float, Any, str], ...] = (
    ("top_p", 1.0, lambda v: 0 < v <= 1, "top_p must be in (0, 1], got {}."),
    ("top_k", 0, lambda v: v == -1 or v >= 0, "top_k must be 0 (disable), or at least 1, got {}."),
    ("min_p", 0.0, lambda v: 0 <= v <= 1, "min_p must be in [0, 1], got {}."),
    ("presence_penalty", 0.0, lambda v: -2 <= v <= 2, "presence_penalty must be in [-2, 2], got {}."),
    ("frequency_penalty", 0.0, lambda v: -2 <= v <= 2, "frequency_penalty must be in [-2, 2], got {}."),
    ("repetition_penalty", 1.0, lambda v: v > 0, "repetition_penalty must be greater than zero, got {}."),
    ("length_penalty", 1.0, lambda v: True, ""),
)

# Fields vLLM 0.32 accepts whose effect the simulator does not model: refused unless at their neutral value.
NOT_SIMULATED: dict[str, Any] = {
    "logit_bias": lambda v: not v,
    "allowed_token_ids": lambda v: v is None,
    "bad_words": lambda v: not v,
    "prompt_logprobs": lambda v: v is None,
    "truncate_prompt_tokens": lambda v: v is None,
    "structured_outputs": lambda v: v is None,
    "guided_json": lambda v: v is None,
    "guided_regex": lambda v: v is None,
    "guided_choice": lambda v: v is None,
    "guided_grammar": lambda v: v is None,
    "prompt_embeds": lambda v: v is None,
    "logits_processors": lambda v: not v,
    "vllm_xargs": lambda v: not v,
    "use_beam_search": lambda v: not v,
    "mm_processor_kwargs": lambda v: not v,
    "documents": lambda v: not v,
    "parallel_tool_calls": lambda v: v is None or v is True,
}


class SamplingError(ValueError):
    """A bad sampling field: `param` names it (the 400's `param`)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Sampling:
    """What the simulator honours of a request's sampling fields."""

    temperature: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    min_tokens: int = 0
    logprobs: int | None = None  # top alternatives per token (0: the sampled token only); None: no logprobs
    skip_special_tokens: bool = True
    return_tokens_as_token_ids: bool = False
    knobs: tuple[float, ...] = ()  # the distribution knobs' values, mixed into the choice seed

    def choice_seed(self, index: int) -> int | None:
        """The token-stream seed of choice `index`, None for the engine's own (greedy: the prompt decides).

        As vLLM: temperature 0 is greedy (every choice the same); a request seed gives choice i seed+i.
        Without a seed, choice 0 keeps the engine's per-prompt stream and the others differ from it."""
        if self.temperature == 0:
            return None
        mix = hash(self.knobs) & 0xFFFF if self.knobs else 0  # PYTHONHASHSEED-free: floats hash stably
        if self.seed is not None:
            return (self.seed + index) ^ (mix << 40)
        if index == 0 and not mix:
            return None
        return ((index + 1) * 0x9E3779B1) ^ (mix << 40)


def _number(body: dict, key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SamplingError(f"'{key}' must be a number, got {value!r}.", key)
    return float(value)


def _str_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise SamplingError(f"'{key}' must be a string or a list of strings, got {value!r}.", key)


def _int_list(value: Any, key: str) -> list[int]:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return list(value)
    raise SamplingError(f"'{key}' must be a list of integers, got {value!r}.", key)


def check_not_simulated(body: dict[str, Any]) -> None:
    """Refuse fields vLLM honours but the simulator cannot (a 400 naming the field, never a silent 200)."""
    for key, neutral in NOT_SIMULATED.items():
        if key in body and not neutral(body[key]):
            raise SamplingError(
                f"'{key}' is accepted by vLLM but not simulated by sim_gpu; remove it or use a real vLLM server.", key
            )


def parse_sampling(body: dict[str, Any], max_tokens: int | None, chat: bool) -> Sampling:
    """The sampling fields of a completions (`chat` False) or chat body, validated with vLLM's messages."""
    check_not_simulated(body)
    temperature = _number(body, "temperature", 1.0)
    if temperature < 0:
        raise SamplingError(f"temperature must be non-negative, got {temperature}.", "temperature")
    knobs = []
    for key, default, ok, message in _KNOBS:
        value = _number(body, key, default)
        if not ok(value):
            raise SamplingError(message.format(value), key)
        knobs.append(value)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -_INT64 <= seed < _INT64):
        raise SamplingError(f"'seed' must be a 64-bit integer, got {seed!r}.", "seed")
    min_tokens = body.get("min_tokens") or 0
    if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 0:
        raise SamplingError(f"min_tokens must be greater than or equal to 0, got {min_tokens}.", "min_tokens")
    if max_tokens is not None and min_tokens > max_tokens:
        raise SamplingError(
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.", "min_tokens"
        )
    logprobs = _logprobs(body, chat)
    defaults = tuple(float(d) for _, d, _, _ in _KNOBS)
    return Sampling(
        temperature=temperature,
        seed=seed,
        stop=[s for s in _str_list(body.get("stop"), "stop") if s],
        stop_token_ids=_int_list(body.get("stop_token_ids"), "stop_token_ids"),
        include_stop_str_in_output=bool(body.get("include_stop_str_in_output")),
        min_tokens=min_tokens,
        logprobs=logprobs,
        skip_special_tokens=body.get("skip_special_tokens", True) is not False,
        return_tokens_as_token_ids=bool(body.get("return_tokens_as_token_ids")),
        knobs=() if tuple(knobs) == defaults else tuple(knobs),
    )


def _logprobs(body: dict[str, Any], chat: bool) -> int | None:
    """Completions: `logprobs` is the number of alternatives. Chat: `logprobs` a bool, `top_logprobs` the number."""
    if chat:
        want = body.get("logprobs")
        if want is not None and not isinstance(want, bool):
            raise SamplingError(f"'logprobs' must be a boolean, got {want!r}.", "logprobs")
        top = body.get("top_logprobs")
        if top is not None:
            if isinstance(top, bool) or not isinstance(top, int):
                raise SamplingError(f"'top_logprobs' must be an integer, got {top!r}.", "top_logprobs")
            if top < 0:
                raise SamplingError("`top_logprobs` must be a positive value.", "top_logprobs")
            if top > 0 and not want:
                raise SamplingError("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")
        n = (top or 0) if want else None
        param = "top_logprobs"
    else:
        n = body.get("logprobs")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
            raise SamplingError(f"'logprobs' must be an integer, got {n!r}.", "logprobs")
        if n is not None and n < 0:
            raise SamplingError("`logprobs` must be a positive value.", "logprobs")
        param = "logprobs"
    if n is not None and n > MAX_LOGPROBS:
        raise SamplingError(
            f"Requested sample logprobs of {n}, which is greater than max allowed: {MAX_LOGPROBS}", param
        )
    return n
