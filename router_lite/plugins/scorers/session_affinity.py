"""session-affinity-scorer (llm-d): send a session back to the endpoint that served it before.

The gateway returns `x-session-token: base64(endpoint key)` on each response; a request carrying it scores
1.0 on that endpoint and 0.0 elsewhere (all 0.0 without a token or for an unknown endpoint).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from router_lite.plugins import Scorer
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest

SESSION_HEADER = "x-session-token"


def encode_session_token(endpoint_key: str) -> str:
    """The header value the gateway sets on a response served by `endpoint_key`."""
    return base64.b64encode(endpoint_key.encode()).decode()


def decode_session_token(token: str) -> str | None:
    try:
        return base64.b64decode(token.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


@dataclass
class SessionAffinityParams:
    """llm-d's cookie attributes for the session token. Validated; the token travels in the header above."""

    max_age: int = 0
    secure: bool = False
    same_site: Literal["Strict", "Lax", "None", ""] = ""
    http_only: bool = True

    def validate(self) -> str | None:
        return None if self.max_age >= 0 else f"maxAge: expected a non-negative number of seconds, got {self.max_age}"


@register
class SessionAffinityScorer(Scorer):
    type_name = "session-affinity-scorer"
    Params = SessionAffinityParams

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        token = request.headers.get(SESSION_HEADER)
        target = decode_session_token(token) if token else None
        return {e.key: 1.0 if e.key == target else 0.0 for e in endpoints}
