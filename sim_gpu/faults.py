"""Failure injection as llm-d-inference-sim does it: a per-request error rate by type, a start-up delay, a crash.

The type names and status codes are llm-d-inference-sim's (`--failure-types rate_limit,server_error ...`), so
the same flags exercise a router's retry and health logic against either simulator.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Failure:
    """One injectable error: HTTP status, OpenAI error type and message."""

    status: int
    type: str
    message: str
    param: str | None = None


FAILURE_TYPES: dict[str, Failure] = {
    "rate_limit": Failure(
        429,
        "TooManyRequestsError",
        "Rate limit reached for {model} in organization org-sim on requests per min (RPM): Limit 3, Used 3, Requested "
        "1.",
    ),
    "invalid_api_key": Failure(401, "UnauthorizedError", "Incorrect API key provided."),
    "context_length": Failure(
        400,
        "BadRequestError",
        "This model's maximum context length is {max_model_len} tokens. However, your request has more tokens. "
        "Please reduce the length of the input messages.",
        "messages",
    ),
    "server_error": Failure(503, "ServiceUnavailableError", "The server is overloaded or not ready yet."),
    "invalid_request": Failure(400, "BadRequestError", "Invalid request: missing required parameter 'model'.", "model"),
    "model_not_found": Failure(404, "NotFoundError", "The model `{model}-nonexistent` does not exist.", "model"),
}


def parse_failure_types(value: str | list[str] | None) -> list[str]:
    """Failure type names from a comma-separated flag value; empty means every type. Unknown names are errors."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAILURE_TYPES]
    if unknown:
        raise ValueError(f"--failure-types: unknown type {unknown[0]!r}; expected some of {', '.join(FAILURE_TYPES)}")
    return names


@dataclass
class FaultInjector:
    """Decides, per request, whether to fail it; tracks readiness and the crash budget.

    `rate` is a percentage (0-100) as in llm-d-inference-sim. `crash_after` counts requests the whole
    process accepted (shared by every pod it hosts); when reached, the process exits abruptly, as a
    crashed vLLM would, without draining or closing sockets. The start-up delay counts from `start_delay()`,
    which the server calls once it listens: a slow process start must not eat into the delay a user asked for.
    """

    rate: float = 0.0
    types: list[str] = field(default_factory=list)
    startup_delay_s: float = 0.0
    crash_after: int = 0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)
    _ready_at: float = field(init=False, repr=False)
    _count: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 100:
            raise ValueError(f"--failure-injection-rate: expected a percentage 0-100, got {self.rate}")
        if self.startup_delay_s < 0:
            raise ValueError(f"--startup-delay: expected seconds >= 0, got {self.startup_delay_s}")
        if self.crash_after < 0:
            raise ValueError(f"--crash-after: expected a request count >= 0, got {self.crash_after}")
        self.types = parse_failure_types(self.types)
        self._rng = random.Random(self.seed)
        self._ready_at = math.inf if self.startup_delay_s > 0 else 0.0

    def start_delay(self) -> None:
        """Start counting the start-up delay now (called when the servers listen)."""
        self._ready_at = time.monotonic() + self.startup_delay_s

    @property
    def ready(self) -> bool:
        """False until the start-up delay has passed (health answers 503 meanwhile)."""
        return time.monotonic() >= self._ready_at

    def count_request(self) -> None:
        """Count one arriving request; after `crash_after` served ones, the next kills the process at once."""
        if self.crash_after and self._count >= self.crash_after:
            sys.stderr.write(f"sim_gpu: --crash-after {self.crash_after} reached; exiting abruptly\n")
            sys.stderr.flush()
            os._exit(137)
        self._count += 1

    def pick(self) -> str | None:
        """The failure type to inject into this request, or None to serve it."""
        if self.rate <= 0 or self._rng.uniform(0, 100) >= self.rate:
            return None
        names = self.types or list(FAILURE_TYPES)
        return names[self._rng.randrange(len(names))]


def failure_body(name: str, model: str, max_model_len: int) -> tuple[int, dict]:
    """(status, OpenAI/vLLM error body) for an injected failure."""
    f = FAILURE_TYPES[name]
    message = f.message.format(model=model, max_model_len=max_model_len)
    return f.status, {"error": {"message": message, "type": f.type, "param": f.param, "code": f.status}}
