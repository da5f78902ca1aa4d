"""Who may reach the router's admin and debug routes: pure checks on a request's headers, no I/O.

A router on 127.0.0.1 is still reachable from any web page the user opens: a cross-site POST with
`text/plain` needs no preflight, and DNS rebinding makes `evil.example` resolve to 127.0.0.1 so the
browser even reads the answer. So admin changes need a key (always; `llmdctl up` generates one into the
run directory), a JSON/YAML content type (not one a plain HTML form or `fetch` can send without a
preflight), no foreign `Origin`, and — when the router listens on loopback — a loopback `Host`.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

ADMIN_CONTENT_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml")
ADMIN_DISABLED_MESSAGE = (
    "admin changes are disabled: the router has no admin key; start it with --admin-key-file FILE "
    "(`llmdctl up` does), LLMD_ROUTER_ADMIN_KEY or --api-key to enable POST /admin/*"
)


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: becomes an OpenAI error object."""

    status: int
    message: str
    code: str


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


def _host_part(authority: str) -> str:
    """`host` of `host:port`, `[v6]:port` or a bare host."""
    authority = authority.strip()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def check_host(host_header: str | None, bind_host: str) -> Refusal | None:
    """A router bound to loopback answers only requests addressed to a loopback name (DNS rebinding)."""
    if not is_loopback(bind_host):
        return None  # reachable under any name (Service, ingress): the key is the guard there
    if host_header is None or not is_loopback(_host_part(host_header)):
        return Refusal(
            403,
            f"Host header {host_header!r} is not a loopback name; this router listens on {bind_host} only",
            "bad_host",
        )
    return None


def check_origin(origin: str | None, host_header: str | None) -> Refusal | None:
    """Browsers send Origin on cross-site requests; CLI tools send none. Only the router's own origin passes."""
    if origin is None:
        return None
    origin_host = origin.split("://", 1)[-1].rstrip("/")
    if host_header is not None and origin_host == host_header.strip():
        return None
    return Refusal(403, f"cross-origin admin request from {origin!r} refused", "bad_origin")


def check_content_type(content_type: str | None) -> Refusal | None:
    """JSON or YAML only: the types a cross-site form or simple fetch cannot send without a CORS preflight."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in ADMIN_CONTENT_TYPES:
        return Refusal(
            415,
            f"Content-Type: expected one of {', '.join(ADMIN_CONTENT_TYPES)}, got {media or 'none'!r}",
            "unsupported_media_type",
        )
    return None


def check_key(authorization: str | None, key: str | None) -> Refusal | None:
    """`Authorization: Bearer KEY` against the admin key; no key configured means admin changes are off."""
    if not key:
        return Refusal(403, ADMIN_DISABLED_MESSAGE, "admin_disabled")
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), key.encode()):
        return Refusal(401, "missing or invalid admin key (Authorization: Bearer ...)", "invalid_api_key")
    return None


def check_admin_change(headers: dict[str, str], bind_host: str, key: str | None) -> Refusal | None:
    """Every check a config-changing admin request must pass, first failure wins; `headers` lower-cased."""
    host = headers.get("host")
    return (
        check_host(host, bind_host)
        or check_origin(headers.get("origin"), host)
        or check_content_type(headers.get("content-type"))
        or check_key(headers.get("authorization"), key)
    )


def check_read(headers: dict[str, str], bind_host: str) -> Refusal | None:
    """Admin and debug reads: no DNS-rebound or cross-site page may read them."""
    host = headers.get("host")
    return check_host(host, bind_host) or check_origin(headers.get("origin"), host)
