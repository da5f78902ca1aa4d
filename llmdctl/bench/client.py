"""An async streaming client for OpenAI-compatible endpoints that measures each request.

One `send` streams a completion (or chat completion) and fills a `RequestRecord`: send time, first content
chunk (TTFT), finish, tokens (from the final usage chunk when the server sends one, else counted chunks),
cached prompt tokens (usage.prompt_tokens_details.cached_tokens), the serving pod (x-llmd-endpoint) and the
router's request id (x-request-id, the key of its routing decision), the
longest gap between chunks, and the status: ok, error, shed (HTTP 429: admission control said no) or
timeout. Never raises for a server's behaviour: every outcome is a record.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from llmdctl.bench.metrics import ERROR, OK, SHED, TIMEOUT, RequestRecord
from llmdctl.bench.workloads import BenchRequest, as_text, chat_body

MODES = ("tokens", "text", "chat")


def request_body(
    req: BenchRequest,
    prompt: list[int],
    model: str,
    mode: str,
    want_token_ids: bool,
    segments: list[tuple[str, int]] | None = None,
) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) for one request: token-id prompts by default (exact lengths), text or chat if asked.
    Chat lays the prompt out by `segments` (default: the request's own), see `workloads.chat_body`."""
    common: dict[str, Any] = {
        "model": model,
        "max_tokens": req.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,  # exact output lengths, as inference-perf runs llm-d's benchmarks
        "temperature": 0.0,
    }
    if want_token_ids:
        common["return_token_ids"] = True
    if mode == "chat":
        return "/v1/chat/completions", {**common, **chat_body(prompt, req.segments if segments is None else segments)}
    return "/v1/completions", {**common, "prompt": prompt if mode == "tokens" else as_text(prompt)}


def _error_message(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
        err = doc.get("error", doc) if isinstance(doc, dict) else doc
        msg = err.get("message") if isinstance(err, dict) else None
        return str(msg or raw[:200].decode("utf-8", "replace"))
    except ValueError:
        return raw[:200].decode("utf-8", "replace").strip() or "empty body"


async def send(
    client: httpx.AsyncClient,
    base_url: str,
    req: BenchRequest,
    prompt: list[int],
    *,
    model: str,
    mode: str = "tokens",
    t0: float,
    stage: int = 0,
    timeout_s: float = 120.0,
    want_token_ids: bool = False,
    segments: list[tuple[str, int]] | None = None,
) -> tuple[RequestRecord, list[int]]:
    """Stream one request; returns its record and the output token ids (when `want_token_ids` and the server
    returns them). Times in the record are seconds since `t0` (time.monotonic())."""
    path, body = request_body(req, prompt, model, mode, want_token_ids, segments)
    rec = RequestRecord(req.request_id, stage=stage, sent=time.monotonic() - t0, prompt_tokens=len(prompt))
    out_ids: list[int] = []
    chunks = 0
    last: float | None = None
    usage: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout_s
    try:
        async with client.stream(
            "POST", base_url.rstrip("/") + path, json=body, timeout=httpx.Timeout(timeout_s, connect=10.0)
        ) as resp:
            rec.endpoint = resp.headers.get("x-llmd-endpoint")
            rec.router_request_id = resp.headers.get("x-request-id")
            if resp.status_code != 200:
                raw = await resp.aread()
                rec.status = SHED if resp.status_code == 429 else ERROR
                rec.error = f"HTTP {resp.status_code}: {_error_message(raw)}"
                rec.finished = time.monotonic() - t0
                return rec, out_ids
            async for line in resp.aiter_lines():
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("deadline")
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    doc = json.loads(data)
                except ValueError:
                    continue
                if doc.get("error"):
                    rec.status, rec.error = ERROR, _error_message(data.encode())
                    break
                if doc.get("usage"):
                    usage = doc["usage"]
                for ch in doc.get("choices") or []:
                    text = ch.get("text")
                    # A completions chunk is one engine step's output even when its text is "" (a token that
                    # does not detokenize on its own: a partial UTF-8 sequence, a special token — a small
                    # random-weight model emits many). Chat's first chunk (role only, content "") is not a token.
                    step = text is not None
                    if text is None:
                        text = (ch.get("delta") or {}).get("content")
                    ids = ch.get("token_ids")
                    if text or ids or step:
                        now = time.monotonic() - t0
                        if rec.first_token is None:
                            rec.first_token = now
                        elif last is not None:
                            gap = now - last
                            if rec.itl_max is None or gap > rec.itl_max:
                                rec.itl_max = gap
                        last = now
                        chunks += len(ids) if ids else 1
                        if ids:
                            out_ids.extend(ids)
    except httpx.TimeoutException:
        rec.status, rec.error = TIMEOUT, f"no answer within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        rec.status, rec.error = ERROR, f"{type(exc).__name__}: {exc}".strip()
    rec.finished = time.monotonic() - t0
    if usage:
        rec.output_tokens = int(usage.get("completion_tokens") or chunks)
        rec.prompt_tokens = int(usage.get("prompt_tokens") or rec.prompt_tokens)
        details = usage.get("prompt_tokens_details") or {}
        if isinstance(details, dict) and details.get("cached_tokens") is not None:
            rec.cached_tokens = int(details["cached_tokens"])
    else:
        rec.output_tokens = chunks
    if rec.status == OK and rec.first_token is None:
        rec.status, rec.error = ERROR, "stream ended without any token"
    return rec, out_ids
