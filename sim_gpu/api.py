"""vLLM's OpenAI-compatible request parsing and response shapes, with no I/O.

Parsing turns a raw body into a `GenRequest` (token ids, limits, options) or raises `APIError`, whose body is
the OpenAI error object vLLM sends: `{"error": {"message", "type", "param", "code"}}`. Builders produce the
completion / chat objects and stream chunks field for field as vLLM does (including vLLM's extensions:
`token_ids`/`prompt_token_ids` with `return_token_ids`, `kv_transfer_params`, `stop_reason`, `logprobs`).
Sampling fields are checked in `sampling.py`, structured output in `structured.py`; fields vLLM does not know
are ignored, as vLLM ignores them.
"""

from __future__ import annotations

import uuid
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from kvtiers.hashing import MMItem
from kvtiers.multimodal import MMInput, expand_with
from kvtiers.tokenizer import TokenizerError
from sim_gpu import multimodal, tools
from sim_gpu.sampling import Sampling, SamplingError, parse_sampling
from sim_gpu.structured import NO_PARSER, Forced, StructuredError, forced_output
from sim_gpu.tools import ToolSettings

_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()

_STATUS_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    404: "NotFoundError",
    413: "RequestEntityTooLargeError",
    429: "TooManyRequestsError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


# Simulator extension (not vLLM): output tokens to emit first, for replaying recorded traffic exactly.
REPLAY_FIELD = "sim_output_token_ids"

# Bounds checked where a request enters, before anything is allocated: one ~90-byte body with a huge `n` (or
# a batch of many prompts) once made every pod of the process allocate without limit.
MAX_N = 128  # choices per prompt
MAX_CHOICES = 1024  # prompts x n per request
MAX_BODY_BYTES = 16 * 1024 * 1024  # larger bodies get a 413 before they are read whole


class APIError(Exception):
    """An error answered with an OpenAI error object."""

    def __init__(self, status: int, message: str, param: str | None = None, err_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = err_type or _STATUS_TYPES.get(status, "BadRequestError")

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.type, self.param)


def error_body(status: int, message: str, err_type: str | None = None, param: str | None = None) -> dict[str, Any]:
    """vLLM's error response object."""
    return {
        "error": {
            "message": message,
            "type": err_type or _STATUS_TYPES.get(status, "BadRequestError"),
            "param": param,
            "code": status,
        }
    }


def dumps(obj: Any) -> bytes:
    """Compact JSON (msgspec: several times faster than json.dumps on these small dicts)."""
    return _json_encoder.encode(obj)


def loads_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or a 400 naming the problem."""
    if not raw:
        raise APIError(400, "Request body is empty; expected a JSON object.")
    try:
        body = _json_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:  # msgspec raises RecursionError on hostile nesting
        raise APIError(400, f"Invalid JSON in request body: {exc}") from None
    if not isinstance(body, dict):
        raise APIError(400, f"Request body must be a JSON object, got {type(body).__name__}.")
    return body


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class ServedModel:
    """What the parser needs to know about the pod."""

    name: str
    max_model_len: int
    tokenizer: Any
    aliases: tuple[str, ...] = ()
    tools: ToolSettings = NO_PARSER  # --tool-call-parser / --enable-auto-tool-choice
    loras: Container[str] = ()  # LoRA adapter names served now (a live view: adapters load and unload)

    def check(self, model: Any) -> str:
        """The served name for a request's `model` (absent means the served model); 404 for anything else."""
        if model is None or model == "":
            return self.name
        if not isinstance(model, str):
            raise APIError(400, f"'model' must be a string, got {type(model).__name__}.", "model")
        if model != self.name and model not in self.aliases and model not in self.loras:
            raise APIError(404, f"The model `{model}` does not exist.", "model", "NotFoundError")
        return model

    def lora_of(self, model: str) -> str | None:
        """The LoRA adapter a checked `model` names, or None for the base model."""
        return model if model != self.name and model not in self.aliases and model in self.loras else None


@dataclass
class GenRequest:
    """A parsed /v1/completions or /v1/chat/completions request."""

    kind: Literal["completion", "chat"]
    model: str
    prompts: list[list[int]]  # one entry per prompt (completions may batch several)
    prompt_texts: list[str | None]
    max_tokens: list[int]  # per prompt (chat's default depends on the prompt length)
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    ignore_eos: bool = False
    cache_salt: str | None = None
    kv_transfer_params: dict[str, Any] | None = None
    return_token_ids: bool = False
    echo: bool = False
    priority: int = 0
    request_id: str | None = None
    replay_output_ids: list[int] | None = None  # simulator extension `sim_output_token_ids`
    sampling: Sampling = field(default_factory=Sampling)
    forced: Forced | None = None  # response_format / tool_choice: the output the grammar forces
    lora_name: str | None = None  # the LoRA adapter `model` names (None: the base model)
    mm_inputs: list[MMInput] = field(default_factory=list)  # chat: image / video / audio parts, in order
    mm_items: list[MMItem] = field(default_factory=list)  # their (identifier, offset, placeholder count)
    ec_transfer_params: dict[str, Any] | None = None  # E/P/D: embeddings an encode pod computed (multimodal.py)


def _bool(body: dict, key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(400, f"'{key}' must be a boolean, got {value!r}.", key)
    return value


def _int(body: dict, key: str, default: int | None = None) -> int | None:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise APIError(400, f"'{key}' must be an integer, got {value!r}.", key)
    return value


def _token_list(value: list, vocab_size: int, param: str) -> list[int]:
    for t in value:
        if isinstance(t, bool) or not isinstance(t, int):
            raise APIError(400, f"'{param}' token ids must be integers, got {t!r}.", param)
        if not 0 <= t < vocab_size:
            raise APIError(400, f"Token id {t} is out of vocabulary (vocab size {vocab_size}).", param)
    return list(value)


def _prompts(value: Any, served: ServedModel, add_special_tokens: bool) -> tuple[list[list[int]], list[str | None]]:
    """vLLM accepts a string, a list of token ids, a list of strings, or a list of token-id lists."""
    tok = served.tokenizer
    if value is None:
        raise APIError(400, "Either prompt or prompt_embeds must be provided.", "prompt")
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        if not value:
            raise APIError(400, "The prompt cannot be empty.", "prompt")
        items = [value] if all(isinstance(t, int) and not isinstance(t, bool) for t in value) else value
    else:
        raise APIError(400, f"'prompt' must be a string or a list of token ids, got {type(value).__name__}.", "prompt")
    ids_list, texts = [], []
    for item in items:
        if isinstance(item, str):
            if not item:
                raise APIError(400, "The prompt cannot be empty.", "prompt")
            ids = tok.encode(item, add_special_tokens=add_special_tokens)
            texts.append(item)
        elif isinstance(item, list):
            ids = _token_list(item, tok.vocab_size, "prompt")
            texts.append(None)
        else:
            raise APIError(
                400, f"'prompt' items must be strings or token-id lists, got {type(item).__name__}.", "prompt"
            )
        if not ids:
            raise APIError(400, "The prompt cannot be empty.", "prompt")
        ids_list.append(ids)
    return ids_list, texts


def _check_lengths(ids: list[int], max_tokens: int | None, served: ServedModel, param: str) -> int:
    """vLLM's length checks; returns the effective max_tokens."""
    n, limit = len(ids), served.max_model_len
    if n >= limit:
        raise APIError(
            400,
            f"This model's maximum context length is {limit} tokens. However, your request has {n} input tokens. "
            "Please reduce the length of the input messages.",
            param,
        )
    if max_tokens is None:
        return limit - n
    if n + max_tokens > limit:
        raise APIError(
            400,
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum context "
            f"length is {limit} tokens and your request has {n} input tokens ({max_tokens} > {limit} - {n}).",
            "max_tokens",
        )
    return max_tokens


def _common(body: dict, served: ServedModel) -> dict[str, Any]:
    stream = _bool(body, "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise APIError(400, "'stream_options' must be an object.", "stream_options")
    if opts and not stream:
        raise APIError(400, "Stream options can only be defined when `stream=True`.", "stream_options")
    n = _int(body, "n", 1)
    if not 1 <= n <= MAX_N:
        raise APIError(400, f"n must be between 1 and {MAX_N}, got {n}.", "n")
    salt = body.get("cache_salt")
    if salt is not None and (not isinstance(salt, str) or not salt):
        raise APIError(400, "Parameter 'cache_salt' must be a non-empty string if provided.", "cache_salt")
    kvp = body.get("kv_transfer_params")
    if kvp is not None and not isinstance(kvp, dict):
        raise APIError(400, "'kv_transfer_params' must be an object.", "kv_transfer_params")
    rid = body.get("request_id")
    replay = body.get(REPLAY_FIELD)
    if replay is not None:
        if not isinstance(replay, list):
            raise APIError(400, f"'{REPLAY_FIELD}' must be a list of token ids.", REPLAY_FIELD)
        replay = _token_list(replay, served.tokenizer.vocab_size, REPLAY_FIELD)
    model = served.check(body.get("model"))
    return dict(
        replay_output_ids=replay or None,
        model=model,
        lora_name=served.lora_of(model),
        n=n,
        stream=stream,
        include_usage=bool(opts.get("include_usage")),
        continuous_usage=bool(opts.get("continuous_usage_stats")),
        ignore_eos=_bool(body, "ignore_eos"),
        cache_salt=salt,
        kv_transfer_params=kvp,
        return_token_ids=_bool(body, "return_token_ids"),
        priority=_int(body, "priority", 0),
        request_id=rid if isinstance(rid, str) and rid else None,
    )


def _max_tokens_value(body: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = _int(body, key)
        if value is not None:
            if value < 1:
                raise APIError(400, f"{key} must be at least 1, got {value}.", key)
            return value
    return None


def _sampling(
    body: dict[str, Any], max_tokens: int | None, chat: bool, n: int, tools: ToolSettings = NO_PARSER
) -> dict[str, Any]:
    """The honoured sampling fields and forced output, or the 400 vLLM answers."""
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise APIError(
            400,
            f"best_of={best_of!r} (more samples than choices) is not simulated by sim_gpu; omit it "
            f"or set it to n ({n}).",
            "best_of",
        )
    try:
        return dict(sampling=parse_sampling(body, max_tokens, chat), forced=forced_output(body, chat, tools))
    except (SamplingError, StructuredError) as exc:
        raise APIError(400, str(exc), exc.param) from None


def parse_completion(body: dict[str, Any], served: ServedModel) -> GenRequest:
    """A /v1/completions body; default max_tokens is 16 as in OpenAI's and vLLM's completions API."""
    common = _common(body, served)
    max_tokens = _max_tokens_value(body, ("max_tokens",))
    if "max_tokens" not in body:
        max_tokens = 16
    if body.get("suffix") is not None:
        raise APIError(400, "suffix is not currently supported", "suffix")
    common.update(_sampling(body, max_tokens, False, common["n"]))
    raw_prompt = body.get("prompt")
    batch = len(raw_prompt) if isinstance(raw_prompt, list) and raw_prompt and not isinstance(raw_prompt[0], int) else 1
    if batch * common["n"] > MAX_CHOICES:  # before tokenizing: the product is what gets allocated
        raise APIError(400, f"prompts x n must be at most {MAX_CHOICES}, got {batch} x {common['n']}.", "n")
    try:
        prompts, texts = _prompts(raw_prompt, served, _bool(body, "add_special_tokens", True))
    except TokenizerError as exc:
        raise APIError(400, str(exc), "prompt") from None
    limits = [_check_lengths(p, max_tokens, served, "prompt") for p in prompts]
    return GenRequest(
        kind="completion", prompts=prompts, prompt_texts=texts, max_tokens=limits, echo=_bool(body, "echo"), **common
    )


def chat_prompt_ids(body: dict[str, Any], served: ServedModel) -> list[int]:
    """Token ids of a chat request's messages after the chat template (multimodal items as placeholders)."""
    return chat_prompt(body, served)[0]


def chat_prompt(body: dict[str, Any], served: ServedModel) -> tuple[list[int], list[MMInput], list[MMItem]]:
    """Token ids after the chat template, each image / video / audio part expanded to its placeholder tokens
    where it sits; the items and their (identifier, offset, count)."""
    try:
        messages, inputs = multimodal.extract(body.get("messages"))
    except multimodal.MMError as exc:
        raise APIError(400, str(exc), exc.param) from None
    ids = _template_ids({**body, "messages": messages} if inputs else body, served)
    if not inputs:
        return ids, [], []
    tok = served.tokenizer
    ids, spans = expand_with(lambda text: tok.encode(text, add_special_tokens=False), tok.vocab_size, ids, inputs)
    return ids, inputs, spans


def _template_ids(body: dict[str, Any], served: ServedModel) -> list[int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list of messages.", "messages")
    add_gen = _bool(body, "add_generation_prompt", True)
    if _bool(body, "continue_final_message"):
        add_gen = False
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise APIError(400, "'chat_template_kwargs' must be an object.", "chat_template_kwargs")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise APIError(400, "'tools' must be a list of tool definitions.", "tools")
    options = {"tools": tools, "chat_template_kwargs": kwargs}  # what vLLM hands the template
    tok = served.tokenizer
    try:
        if not _bool(body, "add_special_tokens", False):
            return tok.encode_chat(messages, add_gen, **options)
        return tok.encode(tok.apply_chat_template(messages, add_gen, **options), add_special_tokens=True)
    except TokenizerError as exc:
        raise APIError(400, str(exc), "messages") from None


def parse_chat(body: dict[str, Any], served: ServedModel) -> GenRequest:
    """A /v1/chat/completions body; default max tokens fill the context as vLLM does."""
    common = _common(body, served)
    max_tokens = _max_tokens_value(body, ("max_completion_tokens", "max_tokens"))
    common.update(_sampling(body, max_tokens, True, common["n"], served.tools))
    ids, inputs, spans = chat_prompt(body, served)
    if not ids:
        raise APIError(400, "The prompt cannot be empty.", "messages")
    limit = _check_lengths(ids, max_tokens, served, "messages")
    ec = body.get("ec_transfer_params")
    if ec is not None and not isinstance(ec, dict):
        raise APIError(400, "'ec_transfer_params' must be an object.", "ec_transfer_params")
    return GenRequest(
        kind="chat",
        prompts=[ids],
        prompt_texts=[None],
        max_tokens=[limit],
        mm_inputs=inputs,
        mm_items=spans,
        ec_transfer_params=ec,
        **common,
    )


# --------------------------------------------------------------------------------------------- responses
def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> dict[str, Any]:
    """vLLM's usage object; `cached_tokens` None gives `prompt_tokens_details: null`, as vLLM sends it unless
    started with --enable-prompt-tokens-details."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None if cached_tokens is None else {"cached_tokens": cached_tokens},
    }


@dataclass
class ChoiceResult:
    """The finished output of one choice."""

    index: int
    text: str
    token_ids: list[int]
    prompt_token_ids: list[int]
    finish_reason: str | None
    num_cached_tokens: int = 0
    stop_reason: int | str | None = None
    logprobs: Any = None  # the choice's logprobs object, already in the endpoint's shape


def completion_response(
    rid: str,
    created: int,
    req: GenRequest,
    choices: list[ChoiceResult],
    kv_transfer_params: dict | None,
    details: bool = False,
) -> dict[str, Any]:
    out_choices = []
    for c in choices:
        ch: dict[str, Any] = {
            "index": c.index,
            "text": c.text,
            "logprobs": c.logprobs,
            "finish_reason": c.finish_reason,
            "stop_reason": c.stop_reason,
            "prompt_logprobs": None,
        }
        if req.return_token_ids:
            ch["prompt_token_ids"] = c.prompt_token_ids
            ch["token_ids"] = c.token_ids
        out_choices.append(ch)
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": req.model,
        "choices": out_choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": _sum_usage(req, choices, details),
        "kv_transfer_params": kv_transfer_params,
    }


def _sum_usage(req: GenRequest, choices: list[ChoiceResult], details: bool = False) -> dict[str, Any]:
    # vLLM counts each prompt once (not once per n) and every choice's completion tokens.
    seen: dict[int, tuple[int, int]] = {}
    for c in choices:
        seen.setdefault(c.index // max(req.n, 1), (len(c.prompt_token_ids), c.num_cached_tokens))
    return usage(
        sum(p for p, _ in seen.values()),
        sum(len(c.token_ids) for c in choices),
        sum(k for _, k in seen.values()) if details else None,
    )


def chat_response(
    rid: str,
    created: int,
    req: GenRequest,
    choices: list[ChoiceResult],
    kv_transfer_params: dict | None,
    details: bool = False,
) -> dict[str, Any]:
    out_choices = []
    plan = req.forced.tools if req.forced is not None else None
    for c in choices:
        content, calls, reason = tools.parse(plan, c.text, c.finish_reason) if plan else (c.text, [], c.finish_reason)
        ch: dict[str, Any] = {
            "index": c.index,
            "message": {
                "role": "assistant",
                "content": content,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "tool_calls": calls,
                "reasoning_content": None,
            },
            "logprobs": c.logprobs,
            "finish_reason": reason,
            "stop_reason": c.stop_reason,
        }
        if req.return_token_ids:
            ch["token_ids"] = c.token_ids
        out_choices.append(ch)
    resp = {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "choices": out_choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": _sum_usage(req, choices, details),
        "prompt_logprobs": None,
        "kv_transfer_params": kv_transfer_params,
    }
    if req.return_token_ids:
        resp["prompt_token_ids"] = choices[0].prompt_token_ids if choices else []
    return resp


def completion_chunk(
    rid: str,
    created: int,
    model: str,
    index: int,
    text: str,
    finish_reason: str | None,
    token_ids: list[int] | None = None,
    prompt_token_ids: list[int] | None = None,
    logprobs: Any = None,
    stop_reason: int | str | None = None,
) -> dict[str, Any]:
    ch: dict[str, Any] = {
        "index": index,
        "text": text,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
        "stop_reason": stop_reason,
    }
    if prompt_token_ids is not None:
        ch["prompt_token_ids"] = prompt_token_ids
    if token_ids is not None:
        ch["token_ids"] = token_ids
    return {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": [ch]}


def chat_chunk(
    rid: str,
    created: int,
    model: str,
    index: int,
    delta: dict[str, Any],
    finish_reason: str | None,
    token_ids: list[int] | None = None,
    logprobs: Any = None,
    stop_reason: int | str | None = None,
) -> dict[str, Any]:
    ch: dict[str, Any] = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    if finish_reason is not None:
        ch["stop_reason"] = stop_reason
    if token_ids is not None:
        ch["token_ids"] = token_ids
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [ch]}


def completion_logprobs(
    entries: list[tuple[int, float, list[tuple[int, float]]]], token_str: Any, offset: int = 0
) -> dict[str, Any]:
    """Completions' logprobs object: parallel lists, `top_logprobs` one {token: logprob} dict per token
    (the sampled token and the top alternatives, as vLLM lists them)."""
    tokens, lps, tops, offsets = [], [], [], []
    for tok, lp, alts in entries:
        text = token_str(tok)
        offsets.append(offset)
        offset += len(text)
        tokens.append(text)
        lps.append(max(lp, -9999.0))
        top = {text: max(lp, -9999.0)}
        top.update({token_str(a): max(alp, -9999.0) for a, alp in alts})
        tops.append(top)
    return {"text_offset": offsets, "token_logprobs": lps, "tokens": tokens, "top_logprobs": tops}


def chat_logprobs(entries: list[tuple[int, float, list[tuple[int, float]]]], token_str: Any) -> dict[str, Any]:
    """Chat's logprobs object: `{"content": [{token, logprob, bytes, top_logprobs: [...]}]}`."""

    def item(tok: int, lp: float) -> dict[str, Any]:
        text = token_str(tok)
        return {"token": text, "logprob": max(lp, -9999.0), "bytes": list(text.encode("utf-8"))}

    return {
        "content": [dict(item(tok, lp), top_logprobs=[item(a, alp) for a, alp in alts]) for tok, lp, alts in entries]
    }


def usage_chunk(rid: str, created: int, req: GenRequest, use: dict[str, Any]) -> dict[str, Any]:
    obj = "text_completion" if req.kind == "completion" else "chat.completion.chunk"
    return {"id": rid, "object": obj, "created": created, "model": req.model, "choices": [], "usage": use}


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def model_card(name: str, created: int, root: str, parent: str | None, max_model_len: int | None) -> dict[str, Any]:
    """One /v1/models entry as vLLM's ModelCard (adapters: root = their path, parent = the base model)."""
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": parent,
        "max_model_len": max_model_len,
        "permission": [
            {
                "id": f"modelperm-{uuid.uuid5(uuid.NAMESPACE_DNS, name).hex}",
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }


def models_response(
    served: ServedModel, created: int, root: str | None = None, adapters: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The base model's card, then the LoRA adapters' (vLLM's order)."""
    card = model_card(served.name, created, root or served.name, None, served.max_model_len)
    return {"object": "list", "data": [card, *(adapters or [])]}


def tokenize(body: dict[str, Any], served: ServedModel) -> dict[str, Any]:
    """/tokenize: `{prompt | messages, add_special_tokens}` -> `{count, max_model_len, tokens, token_strs}`."""
    served.check(body.get("model"))
    if "messages" in body:
        ids = chat_prompt_ids(body, served)
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise APIError(400, "'prompt' must be a string.", "prompt")
        try:
            ids = served.tokenizer.encode(prompt, add_special_tokens=_bool(body, "add_special_tokens", True))
        except TokenizerError as exc:
            raise APIError(400, str(exc), "prompt") from None
    token_strs = None
    if _bool(body, "return_token_strs"):
        token_strs = [served.tokenizer.token_text(t) for t in ids]
    return {"count": len(ids), "max_model_len": served.max_model_len, "tokens": ids, "token_strs": token_strs}


def detokenize(body: dict[str, Any], served: ServedModel) -> dict[str, Any]:
    """/detokenize: `{tokens}` -> `{prompt}`."""
    served.check(body.get("model"))
    tokens = body.get("tokens")
    if not isinstance(tokens, list):
        raise APIError(400, "'tokens' must be a list of token ids.", "tokens")
    ids = _token_list(tokens, served.tokenizer.vocab_size, "tokens")
    return {"prompt": served.tokenizer.decode(ids)}


# --------------------------------------------------------------------------------------------- render
# vLLM 0.32's scale-out Renderer API (`--enable-scale-out`): the prompt after templates and tokenization, as
# the GenerateRequest(s) `/inference/v1/generate` would take. Peer routers (vllm-router's prefix policies,
# llm-d's EPP tokenizer) call it to get exact token ids.
SCALE_OUT_DISABLED = "Scale-out endpoints are disabled. Restart vllm serve with --enable-scale-out to enable them."

# SamplingParams fields a render echoes, with vLLM 0.32's defaults; the request's values override them.
_SAMPLING_DEFAULTS: dict[str, Any] = {
    "n": 1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "repetition_penalty": 1.0,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "seed": None,
    "stop": [],
    "stop_token_ids": [],
    "ignore_eos": False,
    "max_tokens": 16,
    "min_tokens": 0,
    "logprobs": None,
    "prompt_logprobs": None,
    "detokenize": True,
    "skip_special_tokens": True,
    "spaces_between_special_tokens": True,
    "include_stop_str_in_output": False,
}


def _generate_request(
    request_id: str, ids: list[int], req: GenRequest, max_tokens: int, body: dict[str, Any]
) -> dict[str, Any]:
    sampling = {k: body.get(k, v) for k, v in _SAMPLING_DEFAULTS.items()}
    sampling.update(n=req.n, max_tokens=max_tokens, ignore_eos=req.ignore_eos)
    if isinstance(sampling["stop"], str):
        sampling["stop"] = [sampling["stop"]]
    return {
        "request_id": request_id,
        "token_ids": ids,
        "token_offsets": None,
        "features": None,
        "content_parts": None,
        "sampling_params": sampling,
        "model": req.model,
        "reasoning_ended": None,
        "reasoning_parser_kwargs": None,
        "return_token_ids": None,
        "output_mode": "tokens",
        "stream": req.stream,
        "stream_options": None,
        "cache_salt": req.cache_salt,
        "priority": req.priority,
        "kv_transfer_params": req.kv_transfer_params,
    }


def render_completion(body: dict[str, Any], served: ServedModel) -> list[dict[str, Any]]:
    """/v1/completions/render: one GenerateRequest per prompt (ids `cmpl-<id>-<i>`)."""
    req = parse_completion(body, served)
    base = f"cmpl-{req.request_id or uuid.uuid4().hex}"
    return [
        _generate_request(f"{base}-{i}", ids, req, mt, body)
        for i, (ids, mt) in enumerate(zip(req.prompts, req.max_tokens))
    ]


def render_chat(body: dict[str, Any], served: ServedModel) -> dict[str, Any]:
    """/v1/chat/completions/render: the chat template applied and tokenized, as one GenerateRequest."""
    req = parse_chat(body, served)
    return _generate_request(
        f"chatcmpl-{req.request_id or uuid.uuid4().hex}", req.prompts[0], req, req.max_tokens[0], body
    )
