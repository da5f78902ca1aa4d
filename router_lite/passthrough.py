"""Routes the router forwards to a pod as they are: what vLLM serves beside completions and chat.

Clients and peer routers call them through the router (`vllm bench` aligns prompts with `/tokenize`, peer
prefix policies and llm-d's tokenizer call the Renderer API): a router that answers 404 there silently turns
their prompt alignment or affinity off. `/v1/responses` generates, so it is scheduled like completions (its
text feeds the prefix scorers; the in-flight load counts it); the rest go to the healthy pod with the fewest
requests this router has in flight.
"""

from __future__ import annotations

from typing import Any

GENERATIVE = {"/v1/responses"}
PATHS = (
    "/tokenize",
    "/detokenize",
    "/v1/embeddings",
    "/v1/completions/render",
    "/v1/chat/completions/render",
    "/v1/responses",
)


def responses_text(body: dict[str, Any]) -> str | None:
    """The prompt text of a /v1/responses request (instructions + input), for approximate prefix scoring."""
    parts: list[str] = []
    if isinstance(body.get("instructions"), str):
        parts.append(body["instructions"])
    items = body.get("input")
    if isinstance(items, str):
        parts.append(items)
    elif isinstance(items, list):
        for item in items:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [c["text"] for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)]
    return "\n".join(parts) if parts else None
