"""Tokens in, tokens out: the one tokenizer router and simulator share, so both see the same ids.

The other half of the "same tokens, same hashes" contract is `kvtiers.hashing`: a router can only find the
blocks a pod reports when it tokenizes exactly as the pod did. Two tokenizers: a built-in deterministic one,
or a local Hugging Face `tokenizer.json` with its chat template (rendered as vLLM renders it: jinja2 in a
sandbox, `tojson` as json.dumps, `tools` and `chat_template_kwargs` passed through).

The built-in tokenizer needs no files and gives the same ids in every process (blake2b, never Python's
salted `hash()`). Text splits GPT-2 style into pieces that keep their leading space; a piece that spells a
synthetic word (three consonant-vowel syllables) *is* that word's id, anything else hashes into the
vocabulary. Every id decodes to a piece that encodes back to the same id, so a multi-turn chat that resends
the generated text hits the prefix cache as it would on vLLM.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from kvtiers.types import tools_text

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
_SPECIALS = {UNK_ID: "<unk>", BOS_ID: "<s>", EOS_ID: "</s>"}
_NUM_RESERVED = 3
DEFAULT_VOCAB_SIZE = 32000

_CONSONANTS = "bdfghjklmnprstvz"  # 16
_VOWELS = "aeiou"  # 5
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]  # 80
_SYLLABLE_INDEX = {s: i for i, s in enumerate(_SYLLABLES)}
_NSYL = len(_SYLLABLES)
_SYNTH_RE = re.compile(r"^ ([bdfghjklmnprstvz][aeiou]){3}$")
_PIECE_RE = re.compile(r" ?[A-Za-z]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")

# Tool definitions go right after the leading system messages, where Qwen- and Llama-style templates put
# them (and where kvtiers.types.chat_segments expects them), as the text of kvtiers.types.tools_text.
BUILTIN_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(tools_done=not tools_text) %}"
    "{% for m in messages %}"
    "{% if not ns.tools_done and m['role'] not in ('system', 'developer') %}"
    "<|tools|>\n{{ tools_text }}{{ eos_token }}\n{% set ns.tools_done = true %}{% endif %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if not ns.tools_done %}<|tools|>\n{{ tools_text }}{{ eos_token }}\n{% endif %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class TokenizerError(ValueError):
    """A tokenizer directory that cannot be loaded, or a prompt or conversation that cannot be tokenized."""


class Tokenizer(Protocol):
    """What a pod and a router need from a tokenizer (both classes below have it)."""

    name: str
    vocab_size: int
    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **options: Any
    ) -> str: ...

    def encode_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **options: Any
    ) -> list[int]: ...


def message_text(content: Any) -> str:
    """The text of an OpenAI message `content`: a string, or a list of parts whose text parts are joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    raise TokenizerError(f"messages[].content: expected a string or a list of parts, got {type(content).__name__}")


def _normalise_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise TokenizerError(f"messages[{i}]: expected an object with 'role' and 'content'")
        out.append({**m, "content": message_text(m.get("content"))})
    return out


def compile_chat_template(template: str) -> Any:
    """The chat template as a jinja2 Template, compiled once per tokenizer (compiling costs ms per request)."""
    import jinja2
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )

    def raise_exception(msg: str) -> None:
        raise TokenizerError(f"chat template: {msg}")

    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
    try:
        return env.from_string(template)
    except jinja2.TemplateError as exc:
        raise TokenizerError(f"chat template: {exc}") from None


def render_chat(
    template: Any,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = True,
    tools: list[Any] | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    **specials: str,
) -> str:
    """A conversation rendered by a compiled template, as vLLM renders chat prompts (kwargs override)."""
    import jinja2

    kwargs: dict[str, Any] = {"add_generation_prompt": add_generation_prompt, **(chat_template_kwargs or {})}
    if tools is not None:
        kwargs["tools"] = tools
    kwargs.setdefault(
        "tools_text", tools_text(tools) if isinstance(tools, list) and tools else ""
    )  # the builtin template's
    try:
        return template.render(messages=_normalise_messages(messages), **specials, **kwargs)
    except jinja2.TemplateError as exc:
        raise TokenizerError(f"chat template: {exc}") from None


_BUILTIN_COMPILED: Any = None


def _builtin_template() -> Any:
    global _BUILTIN_COMPILED
    if _BUILTIN_COMPILED is None:
        _BUILTIN_COMPILED = compile_chat_template(BUILTIN_CHAT_TEMPLATE)
    return _BUILTIN_COMPILED


class BuiltinTokenizer:
    """Deterministic word-piece tokenizer over a synthetic vocabulary (see the module docstring)."""

    name = "builtin"

    def __init__(self, vocab_size: int = DEFAULT_VOCAB_SIZE) -> None:
        if vocab_size <= _NUM_RESERVED + 1:
            raise TokenizerError(f"vocab_size: expected more than {_NUM_RESERVED + 1}, got {vocab_size}")
        self.vocab_size = vocab_size
        self.eos_token_id: int | None = EOS_ID
        self.bos_token_id = BOS_ID
        self._span = vocab_size - _NUM_RESERVED
        self._piece_cache: dict[str, int] = {}
        self._seen: dict[int, str] = {}

    # -- ids <-> pieces -------------------------------------------------------------------------------
    def _synthetic(self, token_id: int) -> str:
        n = token_id - _NUM_RESERVED
        return " " + "".join(_SYLLABLES[(n // _NSYL**k) % _NSYL] for k in (2, 1, 0))

    def _piece_id(self, piece: str) -> int:
        cached = self._piece_cache.get(piece)
        if cached is not None:
            return cached
        tid = -1
        if _SYNTH_RE.match(piece):
            s = piece[1:]
            n = (_SYLLABLE_INDEX[s[0:2]] * _NSYL + _SYLLABLE_INDEX[s[2:4]]) * _NSYL + _SYLLABLE_INDEX[s[4:6]]
            if n < self._span:
                tid = n + _NUM_RESERVED
        if tid < 0:
            digest = hashlib.blake2b(piece.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            tid = _NUM_RESERVED + int.from_bytes(digest, "big") % self._span
            if len(self._seen) < 200_000:
                self._seen.setdefault(tid, piece)
        if len(self._piece_cache) < 200_000:
            self._piece_cache[piece] = tid
        return tid

    def token_text(self, token_id: int) -> str:
        """The text of one id: the piece this process saw for it, else its synthetic word."""
        if token_id in _SPECIALS:
            return _SPECIALS[token_id]
        if not 0 <= token_id < self.vocab_size:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})")
        return self._seen.get(token_id) or self._synthetic(token_id)

    # -- public API -----------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [BOS_ID] if add_special_tokens else []
        cache, piece_id = self._piece_cache, self._piece_id
        ids.extend([cache.get(p) or piece_id(p) for p in _PIECE_RE.findall(text)])
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        out = []
        for tid in ids:
            if tid in _SPECIALS and skip_special_tokens:
                continue
            out.append(self.token_text(int(tid)))
        return "".join(out)

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **options: Any
    ) -> str:
        """`options`: `tools`, `chat_template_kwargs` (what vLLM passes to a template)."""
        return render_chat(
            _builtin_template(), messages, add_generation_prompt, **options, bos_token="", eos_token="</s>"
        )

    def encode_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **options: Any
    ) -> list[int]:
        """Token ids of a chat prompt: BOS, then the rendered template."""
        return [BOS_ID] + self.encode(self.apply_chat_template(messages, add_generation_prompt, **options), False)


class HFTokenizer:
    """A local Hugging Face tokenizer directory (`tokenizer.json`, optional `tokenizer_config.json`).

    The chat template comes from `tokenizer_config.json` (the "default" of named templates) or
    `chat_template.jinja`, else `fallback_template` (None: chat requests fail with TokenizerError). It is
    compiled at load, so a broken template fails at start, not on the first chat request.
    """

    def __init__(self, directory: str | Path, fallback_template: str | None = None) -> None:
        from tokenizers import Tokenizer as _HF

        path = Path(directory)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise TokenizerError(f"--tokenizer: no tokenizer.json in {directory}")
        try:
            self._tok = _HF.from_file(str(file))
        except Exception as exc:  # the tokenizers library raises plain Exceptions
            raise TokenizerError(f"--tokenizer: cannot load {file}: {exc}") from None
        self.name = str(path)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        cfg_file = file.parent / "tokenizer_config.json"
        cfg: dict[str, Any] = {}
        if cfg_file.is_file():
            try:
                cfg = json.loads(cfg_file.read_text())
            except json.JSONDecodeError as exc:
                raise TokenizerError(f"--tokenizer: {cfg_file}: invalid JSON: {exc}") from None
        self.bos_token = _token_str(cfg.get("bos_token")) or ""
        self.eos_token = _token_str(cfg.get("eos_token")) or ""
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: take "default"
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        jinja_file = file.parent / "chat_template.jinja"
        if not template and jinja_file.is_file():
            template = jinja_file.read_text()
        self.chat_template: str | None = template or fallback_template
        self._compiled: Any = None
        if self.chat_template:
            try:
                self._compiled = compile_chat_template(self.chat_template)
            except TokenizerError as exc:
                raise TokenizerError(f"--tokenizer: {exc}") from None
        self.eos_token_id = self._tok.token_to_id(self.eos_token) if self.eos_token else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id])

    def token_to_id(self, piece: str) -> int | None:
        return self._tok.token_to_id(piece)

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **options: Any
    ) -> str:
        """`options`: `tools`, `chat_template_kwargs` (what vLLM passes to a template)."""
        if self._compiled is None:
            raise TokenizerError(f"tokenizer {self.name} has no chat template")
        return render_chat(
            self._compiled,
            messages,
            add_generation_prompt,
            **options,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def encode_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **options: Any
    ) -> list[int]:
        """Token ids of a chat prompt as vLLM builds them: the rendered template, no extra special tokens."""
        return self.encode(
            self.apply_chat_template(messages, add_generation_prompt, **options), add_special_tokens=False
        )


def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def load_tokenizer(
    directory: str | Path | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    fallback_template: str | None = BUILTIN_CHAT_TEMPLATE,
) -> BuiltinTokenizer | HFTokenizer:
    """The built-in tokenizer, or the Hugging Face one in `directory` when given (a pod serves chat even
    when the directory has no template, with the built-in one)."""
    if directory:
        return HFTokenizer(directory, fallback_template)
    return BuiltinTokenizer(vocab_size)


class IncrementalDetokenizer:
    """Text deltas for a growing list of output ids.

    For BPE tokenizers it decodes only a short window (the previous delta's tokens plus the new ones) and holds
    back text ending in a partial UTF-8 character, so streaming stays linear in the output length.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # end of the tokens already turned into text
        self._simple = isinstance(tokenizer, BuiltinTokenizer)

    def push(self, new_ids: Sequence[int]) -> str:
        if not new_ids:
            return ""
        if self._simple:
            return self._tok.decode(new_ids)
        ids = self._ids
        ids.extend(new_ids)
        before = self._tok.decode(ids[self._prefix : self._read])
        after = self._tok.decode(ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(ids)
        return after[len(before) :]
