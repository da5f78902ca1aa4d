"""A bounded HTTP fuzz corpus for the router and the pods (issue 18): hostile and malformed requests of many
shapes; a server passes when it never answers 5xx and every 4xx is an OpenAI error object
(`{"error": {"message": ...}}`). Used by bench/soak.py (`--fuzz N`)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

import httpx

BIG = 17 * 1024 * 1024  # over the router's default 16 MiB body limit


def _shapes(model: str) -> list[tuple[str, str, str, bytes, dict[str, str]]]:
    """(name, method, path, body, headers) for one of each request shape."""

    def j(doc: Any) -> bytes:
        return json.dumps(doc).encode()

    cp, ch = "/v1/completions", "/v1/chat/completions"
    base = {"model": model, "prompt": "hello", "max_tokens": 2}
    msgs = [{"role": "user", "content": "hi"}]
    return [
        ("not json", "POST", cp, b"{not json", {}),
        ("empty body", "POST", cp, b"", {}),
        ("array body", "POST", cp, j([1, 2, 3]), {}),
        ("deep nesting", "POST", cp, b"[" * 100_000 + b"]" * 100_000, {}),
        (
            "deep nesting in prompt",
            "POST",
            cp,
            b'{"model": "%s", "prompt": ' % model.encode() + b"[" * 50_000 + b"]" * 50_000 + b"}",
            {},
        ),
        ("huge n", "POST", cp, j({**base, "n": 1_000_000_000}), {}),
        ("negative n", "POST", cp, j({**base, "n": -1}), {}),
        ("string n", "POST", cp, j({**base, "n": "many"}), {}),
        ("negative max_tokens", "POST", cp, j({**base, "max_tokens": -5}), {}),
        ("huge max_tokens", "POST", cp, j({**base, "max_tokens": 10**12}), {}),
        ("float max_tokens", "POST", cp, j({**base, "max_tokens": 2.5}), {}),
        ("prompt object", "POST", cp, j({**base, "prompt": {"a": 1}}), {}),
        ("prompt mixed list", "POST", cp, j({**base, "prompt": ["a", 1, None]}), {}),
        ("prompt huge token id", "POST", cp, j({**base, "prompt": [2**63]}), {}),
        ("prompt negative token id", "POST", cp, j({**base, "prompt": [-1, 5]}), {}),
        ("missing model", "POST", cp, j({"prompt": "x"}), {}),
        ("model not a string", "POST", cp, j({**base, "model": 7}), {}),
        ("unknown model", "POST", cp, j({**base, "model": "no-such-model"}), {}),
        ("stream not a bool", "POST", cp, j({**base, "stream": "yes"}), {}),
        ("temperature NaN", "POST", cp, b'{"model": "%s", "prompt": "x", "temperature": NaN}' % model.encode(), {}),
        ("temperature huge", "POST", cp, j({**base, "temperature": 1e308}), {}),
        ("stop list huge", "POST", cp, j({**base, "stop": ["x"] * 10_000}), {}),
        ("logprobs absurd", "POST", cp, j({**base, "logprobs": 10**9}), {}),
        ("invalid utf-8", "POST", cp, b'{"model": "%s", "prompt": "\xff\xfe\xfd"}' % model.encode(), {}),
        ("text/plain", "POST", cp, j(base), {"content-type": "text/plain"}),
        ("oversize body", "POST", cp, b'{"model": "x", "prompt": "' + b"a" * BIG + b'"}', {}),
        ("messages missing", "POST", ch, j({"model": model}), {}),
        ("messages not a list", "POST", ch, j({"model": model, "messages": "hi"}), {}),
        ("message without role", "POST", ch, j({"model": model, "messages": [{"content": "x"}]}), {}),
        (
            "message content object",
            "POST",
            ch,
            j({"model": model, "messages": [{"role": "user", "content": {"x": 1}}]}),
            {},
        ),
        ("chat huge n", "POST", ch, j({"model": model, "messages": msgs, "n": 10**9}), {}),
        (
            "kv_transfer_params hostile",
            "POST",
            cp,
            j(
                {
                    **base,
                    "kv_transfer_params": {
                        "do_remote_prefill": True,
                        "remote_host": "169.254.169.254",
                        "remote_block_ids": [1],
                    },
                }
            ),
            {},
        ),
        ("kv_transfer_params not an object", "POST", cp, j({**base, "kv_transfer_params": [1]}), {}),
        ("priority header junk", "POST", cp, j(base), {"x-llmd-priority": "high"}),
        ("huge header", "POST", cp, j(base), {"x-junk": "a" * 60_000}),
        ("GET on completions", "GET", cp, b"", {}),
        ("unknown path", "POST", "/v1/nothing", j(base), {}),
        ("tokenize junk", "POST", "/tokenize", j({"model": model, "prompt": {"x": 1}}), {}),
    ]


def openai_error(raw: bytes) -> bool:
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("error"), dict) and isinstance(doc["error"].get("message"), str)


async def fuzz(targets: list[str], model: str, total: int, seed: int = 0, concurrency: int = 8) -> dict[str, Any]:
    """Send `total` requests spread over `targets` and shapes; return the tally and the failures."""
    rng = random.Random(seed)
    shapes = _shapes(model)
    plan = []
    big = 0
    for i in range(total):
        shape = shapes[rng.randrange(len(shapes))]
        while shape[0] == "oversize body" and big >= 2 * len(targets):  # a few of those (17 MiB each) make the point
            shape = shapes[rng.randrange(len(shapes))]
        big += shape[0] == "oversize body"
        plan.append((targets[i % len(targets)], shape))
    statuses: Counter = Counter()  # status -> count (0: the connection failed)
    failures: Counter = Counter()
    examples: dict[str, str] = {}
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(url: str, shape: tuple[str, str, str, bytes, dict[str, str]]) -> None:
            name, method, path, body, headers = shape
            async with sem:
                try:
                    r = await client.request(
                        method, url + path, content=body, headers={"content-type": "application/json", **headers}
                    )
                    status, raw = r.status_code, r.content
                except (httpx.LocalProtocolError, httpx.UnsupportedProtocol):
                    statuses["not sendable"] += 1  # the client library refused to send it: nothing to judge
                    return
                except httpx.HTTPError as exc:
                    status, raw = 0, repr(exc).encode()
            statuses[status] += 1
            bad = status == 0 or status >= 500 or (400 <= status < 500 and status != 499 and not openai_error(raw))
            if bad:
                key = f"{'router' if url == targets[0] else 'pod'} {name} -> {status}"
                failures[key] += 1
                examples.setdefault(key, raw[:160].decode("utf-8", "replace"))

        await asyncio.gather(*(one(u, s) for u, s in plan))
    return {
        "sent": total,
        "statuses": dict(sorted(statuses.items(), key=lambda kv: str(kv[0]))),
        "failures": dict(failures.most_common()),
        "examples": examples,
        "shapes": len(shapes),
    }
