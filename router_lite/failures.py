"""What can go wrong between the router and a model server, as a kind the request flow acts on.

The flow decides from the kind, never from a message: whether another pod may succeed (`retryable`), whether
the pod itself looks down (`pod_down`: the data layer takes it out of rotation until it answers again), and
what the metrics and the decision record call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class FailureKind(str, Enum):
    CONNECT = "connect"  # the pod did not accept a connection
    READ = "read"  # the connection broke before the first response byte
    STATUS = "status"  # the pod answered a status that means "not now" (502/503/504)
    TIMEOUT = "timeout"  # the pod sent no headers / first byte within its bound: another pod may answer
    UNRESPONSIVE = "unresponsive"  # the pod stopped answering scrapes and probes while it held the request
    BAD_RESPONSE = "bad_response"  # an answer the flow cannot use (a prefill without kv_transfer_params)
    REJECTED = "rejected"  # the engine refused the request itself (too long for it): no pod will take it

    @property
    def pod_down(self) -> bool:
        return self in (FailureKind.CONNECT, FailureKind.READ)

    @property
    def retryable(self) -> bool:
        return self not in (FailureKind.BAD_RESPONSE, FailureKind.REJECTED)

    @property
    def fallback_label(self) -> str:
        """The `pd_fallbacks` metric label of a failed prefill leg of this kind."""
        if self.pod_down or self in (FailureKind.TIMEOUT, FailureKind.UNRESPONSIVE):
            return "unreachable"
        return "error_status" if self is FailureKind.STATUS else "bad_response"


@dataclass(frozen=True)
class Failure:
    """One failed leg: its kind, a sentence for people (logs, decisions, error bodies) and the pod's status."""

    kind: FailureKind
    message: str
    status: int | None = None

    def __str__(self) -> str:
        return self.message
