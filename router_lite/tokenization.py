"""Tokens in, tokens out: the router tokenizes each request and hashes its blocks exactly as the engine will.

The router's adapter over `kvtiers.tokenizer` (the tokenizers pods use, so ids match by construction):
a local Hugging Face directory or the built-in tokenizer, run off the event loop, or the engine's own
`POST /tokenize` (vLLM's body: `{model, prompt}` or `{model, messages}`), cached per prompt. Block hashes
then come from `kvtiers.hashing.BlockHasher` with the engine's block size, algorithm and seed, so they equal
the hashes in the engine's KV events.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kvtiers.hashing import HASH_ALGOS, BlockHasher, MMItem, seed_from_env, to_event_hashes
from kvtiers.multimodal import PART_KINDS, MMInput, expand_with, extract, locate
from kvtiers.tokenizer import BuiltinTokenizer as _Builtin
from kvtiers.tokenizer import HFTokenizer, message_text
from kvtiers.tokenizer import TokenizerError as TokenizationError
from router_lite.types import BLOCK_DIGESTS, BLOCK_SIZE

log = logging.getLogger("router_lite.tokenization")

DEFAULT_BLOCK_SIZE = 16
DEFAULT_HASH_ALGO = "sha256"
HASH_IN_THREAD_TOKENS = 2048  # prompts at least this long are block-hashed in a worker thread
CHAT_OPTIONS = ("add_generation_prompt", "chat_template_kwargs", "tools", "continue_final_message")

__all__ = [
    "TokenizationError",
    "Tokenizer",
    "LocalTokenizer",
    "BuiltinTokenizer",
    "EngineTokenizer",
    "make_tokenizer",
    "HashSettings",
    "PromptHasher",
    "RequestTokenizer",
    "completion_prompt",
    "chat_text",
]

HEDGE_AFTER_S = 0.5  # an engine /tokenize not answered by then: ask the next pod too


class Tokenizer(Protocol):
    """What the router needs: prompt ids for a completion prompt or a chat conversation."""

    name: str

    async def encode_prompt(self, model: str, prompt: str) -> list[int]: ...

    async def encode_chat(self, model: str, messages: list[dict[str, Any]], options: dict[str, Any]) -> list[int]: ...


def _template_options(options: dict[str, Any]) -> dict[str, Any]:
    """A chat body's options as `encode_chat` takes them (`chat_template_kwargs` may override the rest)."""
    # the engine's rule (sim_gpu.api.chat_prompt_ids): continue_final_message turns the generation prompt off
    add_gen = bool(options.get("add_generation_prompt", True)) and not options.get("continue_final_message")
    return {
        "add_generation_prompt": add_gen,
        "tools": options.get("tools"),
        "chat_template_kwargs": options.get("chat_template_kwargs"),
    }


class LocalTokenizer:
    """A Hugging Face tokenizer directory, used in-process (no round trip).

    Tokenizing and rendering run in a worker thread (HF tokenizers releases the GIL): an 8k-token prompt
    costs tens of ms, during which the event loop would stall every relayed stream.
    """

    def __init__(self, directory: str | Path) -> None:
        self.tok = HFTokenizer(directory)  # no fallback template: a chat without one is routed on text
        self.name = self.tok.name

    def encode_text(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tok.encode(text, add_special_tokens)

    async def encode_prompt(self, model: str, prompt: str) -> list[int]:
        return await asyncio.to_thread(self.tok.encode, prompt, True)

    async def encode_chat(self, model: str, messages: list[dict[str, Any]], options: dict[str, Any]) -> list[int]:
        if self.tok.chat_template is None:
            raise TokenizationError(f"tokenizer {self.name} has no chat template")
        return await asyncio.to_thread(lambda: self.tok.encode_chat(messages, **_template_options(options)))

    def expand_items(self, ids: list[int], items: list[MMInput]) -> tuple[list[int], list[MMItem]]:
        """A chat rendered with item markers, each marker expanded to its placeholders, as the pods do."""
        return expand_with(lambda text: self.tok.encode(text, False), self.tok.vocab_size, ids, items)


class BuiltinTokenizer:
    """The built-in tokenizer pods use when started without a model directory."""

    name = "builtin"

    def __init__(self) -> None:
        self._tok = _Builtin()

    async def encode_prompt(self, model: str, prompt: str) -> list[int]:
        return self._tok.encode(prompt, True)

    async def encode_chat(self, model: str, messages: list[dict[str, Any]], options: dict[str, Any]) -> list[int]:
        return self._tok.encode_chat(messages, **_template_options(options))

    def expand_items(self, ids: list[int], items: list[MMInput]) -> tuple[list[int], list[MMItem]]:
        return expand_with(lambda text: self._tok.encode(text, False), self._tok.vocab_size, ids, items)


class EngineTokenizer:
    """The engine's `POST /tokenize`, with an LRU cache per prompt so a repeated prompt costs no round trip.

    The cache is keyed by a digest of the request body (never the prompt text itself) and bounded by the
    total number of tokens it holds (4 bytes each), so long-context traffic cannot grow the router's memory.
    """

    name = "engine"

    def __init__(
        self,
        addresses: Callable[[], Sequence[str]],
        max_cached_tokens: int = 8_000_000,
        timeout_s: float = 5.0,
        alive: Callable[[str], bool] | None = None,
    ) -> None:
        self._addresses = addresses
        self._alive = alive  # a pod that stops answering its scrapes is given up on at once, not after timeout_s
        self._cache: OrderedDict[bytes, array] = OrderedDict()
        self.max_cached_tokens = max_cached_tokens
        self.cached_tokens = 0
        self._timeout_s = timeout_s
        self._backends: dict[str, Any] = {}
        self.hits = 0
        self.misses = 0

    def _backend(self, address: str) -> Any:
        from router_lite.proxy import Backend

        address = address.split("://", 1)[-1].rstrip("/")
        b = self._backends.get(address)
        if b is None:
            b = self._backends[address] = Backend(
                address, self._timeout_s, self._timeout_s, max_idle=32, alive=self._alive
            )
        return b

    @staticmethod
    def _key(content: bytes) -> bytes:
        return hashlib.blake2b(content, digest_size=16).digest()

    def _store(self, key: bytes, tokens: list[int]) -> None:
        if len(tokens) > self.max_cached_tokens:
            return
        try:
            packed = array("I", tokens)
        except (OverflowError, TypeError):
            return  # not uint32 token ids: answer them, just do not cache them
        old = self._cache.pop(key, None)
        if old is not None:
            self.cached_tokens -= len(old)
        self._cache[key] = packed
        self.cached_tokens += len(packed)
        while self.cached_tokens > self.max_cached_tokens:
            _, evicted = self._cache.popitem(last=False)
            self.cached_tokens -= len(evicted)

    async def _tokenize(self, body: dict[str, Any]) -> list[int]:
        content = json.dumps(body, sort_keys=True, ensure_ascii=False).encode()
        key = self._key(content)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached.tolist()
        self.misses += 1
        tokens = await self._hedged([a for a in list(self._addresses())[:3]], content)
        self._store(key, tokens)
        return tokens

    async def _ask(self, address: str, content: bytes) -> list[int]:
        up = await self._backend(address).post("/tokenize", content, {"content-type": "application/json"})
        raw = await up.read_all()
        if up.status_code != 200:
            raise TokenizationError(f"{address}/tokenize answered {up.status_code}: {raw[:200]!r}")
        tokens = json.loads(raw)["tokens"]
        if not isinstance(tokens, list):
            raise TokenizationError(f"{address}/tokenize: 'tokens' is not a list")
        return tokens

    async def _hedged(self, addresses: list[str], content: bytes) -> list[int]:
        """Ask the first pod; when it has not answered within `HEDGE_AFTER_S` (or failed), ask the next one
        too, and take the first answer. A tokenization is idempotent, and a hung pod once held every request
        it tokenized for the whole timeout."""
        pending: set[asyncio.Task] = set()
        queue = list(addresses)
        last: BaseException | None = None
        try:
            while queue or pending:
                if queue:
                    pending.add(asyncio.ensure_future(self._ask(queue.pop(0), content)))
                done, pending = await asyncio.wait(
                    pending, timeout=HEDGE_AFTER_S if queue else None, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task.exception() is None:
                        return task.result()
                    last = task.exception()
        finally:
            for task in pending:
                task.cancel()
        raise TokenizationError(
            f"engine /tokenize failed: {type(last).__name__ if last else 'no endpoint'}: {last or ''}"
        )

    async def encode_prompt(self, model: str, prompt: str) -> list[int]:
        return await self._tokenize({"model": model, "prompt": prompt})

    async def encode_chat(self, model: str, messages: list[dict[str, Any]], options: dict[str, Any]) -> list[int]:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "add_generation_prompt": options.get("add_generation_prompt", True),
        }
        for k in CHAT_OPTIONS[1:]:
            if options.get(k) is not None:
                body[k] = options[k]
        return await self._tokenize(body)

    async def aclose(self) -> None:
        for b in self._backends.values():
            b.close()
        self._backends.clear()


def make_tokenizer(
    spec: str | None, addresses: Callable[[], Sequence[str]], alive: Callable[[str], bool] | None = None
) -> Tokenizer:
    """`None`/`engine` -> the engine's /tokenize; `builtin` -> the simulator's; else a local HF directory."""
    if spec in (None, "", "engine"):
        return EngineTokenizer(addresses, alive=alive)
    if spec == "builtin":
        return BuiltinTokenizer()
    return LocalTokenizer(spec)


@dataclass(frozen=True)
class HashSettings:
    """Block size, hash algorithm and seed: must equal the engine's or no hash will ever match."""

    block_size: int = DEFAULT_BLOCK_SIZE
    algo: str = DEFAULT_HASH_ALGO
    seed: str = ""

    def __post_init__(self) -> None:
        if self.algo not in HASH_ALGOS:
            raise TokenizationError(f"--hash-algo: expected one of {', '.join(HASH_ALGOS)}, got {self.algo!r}")
        if self.block_size <= 0:
            raise TokenizationError(f"--block-size: expected a positive integer, got {self.block_size}")


class PromptHasher:
    """Block hashes (vLLM event form, uint64) of a token sequence, with one memoising BlockHasher per setting.

    The one place a request's prompt becomes block hashes, live (gateway) and planned (llmdctl.plan).
    """

    def __init__(self, memo_blocks: int = 32_768) -> None:
        self.memo_blocks = memo_blocks
        self._hashers: dict[HashSettings, BlockHasher] = {}

    def hasher(self, settings: HashSettings) -> BlockHasher:
        h = self._hashers.get(settings)
        if h is None:
            h = self._hashers[settings] = BlockHasher(
                settings.block_size, settings.algo, settings.seed or seed_from_env(), memo_blocks=self.memo_blocks
            )
        return h

    def prepare(self, request: Any, settings: HashSettings) -> None:
        """Set the block hashes of a tokenized LLMRequest, and the block size they were taken at."""
        h = self.hasher(settings)
        digests = h.hash_blocks(
            request.prompt_token_ids,
            cache_salt=request.cache_salt,
            lora_name=request.lora_name,
            mm_items=request.mm_items or (),
        )
        request.block_hashes = to_event_hashes(digests)
        request.state.set(BLOCK_SIZE, settings.block_size)  # tokens per entry of block_hashes
        request.state.set(BLOCK_DIGESTS, ((h.block_size, h.algo, h.seed), digests))

    def block_hashes(
        self,
        token_ids: Sequence[int],
        settings: HashSettings,
        cache_salt: str | None = None,
        lora_name: str | None = None,
        mm_items: Sequence[MMItem] = (),
    ) -> list[int]:
        """uint64 event hashes (low 8 bytes of each digest); full-digest events normalise to the same value."""
        digests = self.hasher(settings).hash_blocks(
            token_ids, cache_salt=cache_salt, lora_name=lora_name, mm_items=mm_items
        )
        return to_event_hashes(digests)


def resolve_hash_settings(
    needs: Any,
    flags: tuple[int | None, str | None, str | None] = (None, None, None),
    engine: tuple[int | None, str | None, str | None] = (None, None, None),
) -> HashSettings:
    """(block size, algorithm, seed): the router's flags first, then what the config states (`needs`), then the
    engines' own (cache_config_info live, EngineConfig planned), then vLLM's defaults."""
    declared = (needs.block_size, needs.hash_algo, needs.hash_seed)
    bs, algo, seed = (next((v for v in vals if v), None) for vals in zip(flags, declared, engine))
    return HashSettings(
        block_size=bs or DEFAULT_BLOCK_SIZE, algo=algo if algo in HASH_ALGOS else DEFAULT_HASH_ALGO, seed=seed or ""
    )


def request_preparer(needs: Any, engine: tuple[int | None, str | None, str | None]) -> Callable[[Any], None]:
    """How a request whose token ids are known gets its block hashes where no gateway tokenizes (the planner):
    the same hasher and settings resolution as live; a no-op when no plugin matches block hashes.

    The planner's workload is built once and never changed, and every repeat of a prompt is the same list
    object: what a prompt object hashed to is kept (bounded) and set again, not recomputed."""
    if not needs.block_hashes:
        return lambda request: None
    hasher, settings = PromptHasher(memo_blocks=400_000), resolve_hash_settings(needs, engine=engine)
    return _SamePrompts(hasher, settings).prepare


class _SamePrompts:
    """`PromptHasher.prepare` for prompts that are never mutated, remembered per prompt object."""

    MAX = 4096  # prompt objects remembered (each entry holds its list alive: the planner's workload does anyway)

    def __init__(self, hasher: PromptHasher, settings: HashSettings) -> None:
        self.hasher = hasher
        self.settings = settings
        self.seen: dict[int, tuple[Any, list[int], Any]] = {}  # id(prompt) -> (prompt, block_hashes, digests)

    def prepare(self, request: Any) -> None:
        prompt = request.prompt_token_ids
        if request.cache_salt or request.lora_name or request.mm_items:
            self.hasher.prepare(request, self.settings)
            return
        hit = self.seen.get(id(prompt))
        if hit is not None and hit[0] is prompt:  # held in the entry: the id cannot have been reused
            request.block_hashes = hit[1]
            request.state.set(BLOCK_SIZE, self.settings.block_size)
            request.state.set(BLOCK_DIGESTS, hit[2])
            return
        self.hasher.prepare(request, self.settings)
        if len(self.seen) >= self.MAX:
            self.seen.clear()
        self.seen[id(prompt)] = (prompt, request.block_hashes, request.state.get(BLOCK_DIGESTS))


def completion_prompt(prompt: Any) -> str | list[int] | None:
    """The prompt the router routes on: a string, or token ids (tokens in) — the first of a batch."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, int) and all(isinstance(t, int) for t in prompt):
            return prompt
        if isinstance(first, str):
            return first
        if isinstance(first, list) and all(isinstance(t, int) for t in first):
            return first
    return None


def chat_text(messages: list[dict[str, Any]]) -> str:
    """A deterministic plain rendering of a conversation, for routing without a tokenizer."""
    return "".join(
        f"<|{m.get('role', '')}|>\n{_lenient_text(m.get('content'))}\n" for m in messages if isinstance(m, dict)
    )


MULTIMODAL_PARTS = tuple(PART_KINDS)  # image_url, video_url, input_audio: what llm-d's multimodal decider looks for


def multimodal_parts(messages: Any) -> int:
    """How many image / video / audio content parts a chat request's messages hold."""
    if not isinstance(messages, list):
        return 0
    return sum(
        1
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, dict) and p.get("type") in MULTIMODAL_PARTS
    )


def _lenient_text(content: Any) -> str:
    try:
        return message_text(content)
    except TokenizationError:
        return str(content)


class RequestTokenizer:
    """Fills a request's prompt token ids and block hashes from its OpenAI body (tokens in, tokens out).

    A completion prompt given as token ids is used as is; text and chat go through the tokenizer. Failures
    leave the request untokenized (routing falls back to text estimates) and are reported to `on_error`.
    """

    def __init__(
        self,
        tokenizer: Tokenizer | None,
        settings: Callable[[], HashSettings],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.hasher = PromptHasher()
        self.on_error = on_error

    async def token_ids(self, kind: str, body: dict[str, Any]) -> tuple[list[int], list[MMItem]] | None:
        """The prompt's token ids and its multimodal items (chat only), or None when they cannot be known here."""
        model = str(body.get("model", ""))
        if kind == "completions":
            prompt = completion_prompt(body.get("prompt"))
            if isinstance(prompt, list):
                return prompt, []
            if prompt is None or self.tokenizer is None:
                return None
            return await self.tokenizer.encode_prompt(model, prompt), []
        if self.tokenizer is None:
            return None
        options = {k: body[k] for k in CHAT_OPTIONS if k in body}
        return await self.chat_ids(model, body.get("messages") or [], options)

    async def chat_ids(
        self, model: str, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> tuple[list[int], list[MMItem]]:
        """A chat's prompt token ids with each image / video / audio part as its placeholder tokens, and the
        items' (identifier, offset, count): what the pods' block hashes include, so the router's must too."""
        if self.tokenizer is None:
            raise TokenizationError("no tokenizer configured")
        marked, items = extract(messages)
        if not items:
            return await self.tokenizer.encode_chat(model, messages, options), []
        expand = getattr(self.tokenizer, "expand_items", None)
        if expand is not None:  # a local tokenizer: render with markers, expand them here as the pods do
            return expand(await self.tokenizer.encode_chat(model, marked, options), items)
        ids = await self.tokenizer.encode_chat(model, messages, options)  # the engine expands them itself
        spans = locate(ids, items)
        if spans is None:
            raise TokenizationError(f"the engine's tokens do not hold the chat's {len(items)} multimodal item(s)")
        return ids, spans

    async def prepare(self, request: Any, kind: str, body: dict[str, Any]) -> None:
        """Set `request.prompt_token_ids` and `request.block_hashes` (an LLMRequest) when possible."""
        try:
            found = await self.token_ids(kind, body)
        except Exception as exc:
            if self.on_error:
                self.on_error(f"tokenize: {type(exc).__name__}: {exc}")
            return
        if found is None:
            return
        ids, request.mm_items = found
        settings = self.settings()
        request.prompt_token_ids = ids
        if len(ids) >= HASH_IN_THREAD_TOKENS:  # hundreds of sha256 digests: keep the event loop free
            await asyncio.to_thread(self.hasher.prepare, request, settings)
        else:
            self.hasher.prepare(request, settings)
