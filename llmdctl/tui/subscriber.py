"""The TUI's one data source: follows the router's decision stream and polls router and pod metrics.

Two asyncio tasks feed one `Model`: the decision stream (server-sent events from `/debug/decisions`,
reconnected with exponential backoff when the router goes away or restarts) and a poll once per interval
of the router's `/debug/endpoints` and `/metrics` and every pod's own `/metrics`. Screens never do I/O;
they render the model at their own pace, so a flood of decisions costs one parse each and nothing more.

Where to look: `--url`, else the running local stack's router from `$LLMDCTL_HOME/state.json`, re-read on
every reconnect so `llmdctl up` in another terminal (or a restart on new ports) is picked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from llmdctl.tui.model import Model

API_KEY_ENV = "LLMD_ROUTER_API_KEY"
ADMIN_KEY_ENV = "LLMD_ROUTER_ADMIN_KEY"
MAX_SSE_BUFFER = 1 << 20  # bytes of one unfinished server-sent event; past it the buffer is dropped and counted
_decode = msgspec.json.Decoder().decode


@dataclass
class Target:
    """The router to watch, or why there is none."""

    url: str | None
    api_key: str | None = None
    from_state: bool = False
    profile: str | None = None
    model: str | None = None
    why: str = ""
    admin_key: str | None = None  # for POST /admin/*: $LLMD_ROUTER_ADMIN_KEY, or the local stack's key file

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def admin_headers(self) -> dict[str, str]:
        key = self.admin_key or self.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}


def resolve_target(url: str | None = None, api_key: str | None = None) -> Target:
    """`url` when given, else the running local stack's router; `why` says what is missing."""
    key = api_key or os.environ.get(API_KEY_ENV) or None
    admin = os.environ.get(ADMIN_KEY_ENV) or None
    if url:
        url = url.rstrip("/")
        if "://" not in url:
            url = "http://" + url
        return Target(url, key, admin_key=admin)
    from llmdctl.local.state import StateError, load_state
    from llmdctl.paths import home_dir

    try:
        state = load_state()
    except StateError as exc:
        return Target(None, key, why=str(exc))
    if state is None:
        return Target(
            None,
            key,
            why=(
                f"Nothing is running (no stack in {home_dir()}). Start one with `llmdctl up PROFILE`, or pass --url "
                "ROUTER."
            ),
        )
    from llmdctl.local.state import read_admin_key

    # the local stack's generated admin key: sent only to the router this state describes
    return Target(state.router_url.rstrip("/"), key, True, state.profile, state.model, admin_key=read_admin_key())


def _why(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "connection closed"
    return type(exc).__name__


class Subscriber:
    """Feeds `model` from a router until `stop()`; see the module docstring."""

    def __init__(
        self,
        model: Model,
        url: str | None = None,
        api_key: str | None = None,
        *,
        poll_s: float = 1.0,
        backoff: tuple[float, float] = (0.25, 3.0),
        history: int = 100,
        pod_timeout_s: float = 0.8,
    ) -> None:
        self.model = model
        self._url = url
        self._api_key = api_key
        self.poll_s = poll_s
        self.backoff = backoff
        self.history = history
        self.pod_timeout_s = pod_timeout_s
        self.target = resolve_target(url, api_key)
        self.connected = False
        self.reconnects = 0
        self.sse_overflows = 0  # times an event grew past MAX_SSE_BUFFER without its blank line (buffer dropped)
        self._history_seen: set[str] = set()
        self._config_version: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(2.0, read=None), limits=httpx.Limits(max_connections=64))
        self._tasks = [
            asyncio.create_task(self._decisions_loop(), name="tui-decisions"),
            asyncio.create_task(self._poll_loop(), name="tui-poll"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _resolve(self) -> Target:
        if self._url is None or self.target.url is None:
            self.target = resolve_target(self._url, self._api_key)
        m = self.model
        if self.target.profile and m.profile != self.target.profile:
            m.profile = self.target.profile
            m.gen_status += 1
        return self.target

    # -- the decision stream -------------------------------------------------------------------------------
    async def _decisions_loop(self) -> None:
        delay = self.backoff[0]
        m = self.model
        while True:
            t = self._resolve()
            if t.url is None:
                self.connected = False
                m.set_status("nothing", t.why)
                m.clear_pods()
                await asyncio.sleep(1.0)
                continue
            try:
                await self._follow(t)
                why = "stream ended"
            except asyncio.CancelledError:
                raise
            except _Refused as exc:
                self.connected = False
                m.set_status("down", str(exc), t.url)
                await asyncio.sleep(self.backoff[1])
                continue
            except Exception as exc:  # any failure: say so, back off, try again
                why = _why(exc)
            was = self.connected
            self.connected = False
            if was:
                self.reconnects += 1
                delay = self.backoff[0]
            if t.from_state:  # the stack may have been taken down or restarted on other ports
                self.target = Target(None)
                t2 = self._resolve()
                if t2.url is None:
                    continue
            m.set_status("down", f"router {t.url} unreachable ({why}); retrying in {delay:.1f}s", t.url)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _follow(self, t: Target) -> None:
        assert self._client is not None
        m = self.model
        history = self.history if t.url not in self._history_seen else 0
        url = f"{t.url}/debug/decisions?history={history}"
        async with self._client.stream("GET", url, headers=t.headers) as resp:
            if resp.status_code == 401:
                raise _Refused(f"router {t.url} refused the API key (401): pass --api-key or set {API_KEY_ENV}")
            resp.raise_for_status()
            self._history_seen.add(t.url)
            self.connected = True
            m.set_status("live", "", t.url)
            buf = b""
            async for chunk in resp.aiter_raw():
                buf += chunk
                if b"\n\n" not in buf:
                    if len(buf) > MAX_SSE_BUFFER:  # a router that never ends its event must not grow us unbounded
                        buf = b""
                        self.sse_overflows += 1
                        m.decisions_bad += 1
                    continue
                events, _, buf = buf.rpartition(b"\n\n")
                for event in events.split(b"\n\n"):
                    for line in event.split(b"\n"):
                        if line.startswith(b"data:"):
                            try:
                                d = _decode(line[5:])
                            except msgspec.DecodeError:
                                m.decisions_bad += 1
                                continue
                            if isinstance(d, dict):
                                m.ingest_decision(d)

    # -- polling -------------------------------------------------------------------------------------------
    async def _get(self, url: str, headers: dict[str, str], timeout: float) -> httpx.Response | None:
        assert self._client is not None
        try:
            return await self._client.get(url, headers=headers, timeout=timeout)
        except (httpx.HTTPError, OSError):
            return None

    async def poll_once(self) -> bool:
        """One poll of router and pods into the model; False when the router did not answer."""
        t = self.target
        if t.url is None or self._client is None:
            return False
        eps, metrics = await asyncio.gather(
            self._get(f"{t.url}/debug/endpoints", t.headers, 2.0), self._get(f"{t.url}/metrics", t.headers, 2.0)
        )
        if eps is None or eps.status_code != 200:
            if eps is not None and eps.status_code == 401:
                self.model.set_status(
                    "down", f"router {t.url} refused the API key (401): pass --api-key or set {API_KEY_ENV}", t.url
                )
            return False
        try:
            doc = eps.json()
        except ValueError:
            return False
        keys = [e.get("endpoint") for e in doc.get("endpoints") or [] if isinstance(e, dict) and e.get("endpoint")]
        pod_resps = await asyncio.gather(*(self._get(f"http://{k}/metrics", {}, self.pod_timeout_s) for k in keys))
        pod_texts = {k: (r.text if r is not None and r.status_code == 200 else None) for k, r in zip(keys, pod_resps)}
        text = metrics.text if metrics is not None and metrics.status_code == 200 else None
        self.model.ingest_poll(doc, text, pod_texts)
        version = (doc.get("config") or {}).get("version")
        if version is not None and version != self._config_version:
            await self._learn_scheduler(t, version)
        return True

    async def _learn_scheduler(self, t: Target, version: int) -> None:
        """Name the router's scheduling config after the shipped profile it matches (GET /admin/config)."""
        r = await self._get(f"{t.url}/admin/config", t.headers, 2.0)
        if r is None or r.status_code != 200:
            return
        try:
            config = r.json().get("config") or {}
        except ValueError:
            return
        self._config_version = version
        # the first call reads and validates the shipped profiles: off the UI's event loop
        name = await asyncio.to_thread(scheduler_name, config, t.profile)
        self.model.set_scheduler(name, version)

    async def _poll_loop(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                ok = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a poll that fails is the same as a router that does not answer
                ok = False
            failures = 0 if ok else failures + 1
            if failures >= 3:
                self.model.clear_pods()
            await asyncio.sleep(max(0.05, self.poll_s - (loop.time() - started)))

    # -- actions -------------------------------------------------------------------------------------------
    async def switch_config(self, config: dict[str, Any]) -> tuple[bool, str]:
        """POST an EndpointPickerConfig to the router's `/admin/config`; (ok, one-line outcome)."""
        t = self.target
        if t.url is None or self._client is None:
            return False, "no router to switch"
        try:
            r = await self._client.post(
                f"{t.url}/admin/config",
                content=msgspec.json.encode(config),
                headers={**t.admin_headers, "Content-Type": "application/json"},
                timeout=5.0,
            )
        except httpx.HTTPError as exc:
            return False, f"router {t.url} unreachable ({_why(exc)})"
        if r.status_code == 401:
            return (
                False,
                f"router refused the admin key (401): set {ADMIN_KEY_ENV} (a local stack's key is in its run "
                "directory)",
            )
        if r.status_code != 200:
            try:
                msg = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = r.text[:200]
            return False, f"router answered {r.status_code}: {msg}"
        doc = r.json()
        return True, f"config version {doc.get('version')}"


def _signature(config: dict[str, Any]) -> frozenset[str]:
    """What tells scheduling configs apart: their scorers and any non-default picker or handler."""
    types = {str(p.get("type")) for p in config.get("plugins") or [] if isinstance(p, dict)}
    return frozenset(
        t
        for t in types
        if t.endswith("-scorer") or "round-robin" in t or "random" in t or "disagg" in t or "decider" in t
    )


_signatures: dict[frozenset[str], list[str]] | None = None
_signatures_lock = threading.Lock()


def known_signatures() -> dict[frozenset[str], list[str]]:
    """Signature -> the shipped profiles (every YAML in profiles/) that have it. Built once; the first call loads
    and validates every profile, so async callers run it in a thread.

    Within a group, profiles without KV tiers come first, then by name: several profiles share a scheduler and
    add tiers to it (kv-offload, semantic-kv over precise-prefix-cache's), and the plain one names it.
    """
    global _signatures
    with _signatures_lock:
        if _signatures is None:
            from llmdctl.profile import list_profiles, load_profile

            loaded = []
            for path in list_profiles():
                try:
                    loaded.append(load_profile(str(path)))
                except (ValueError, OSError):
                    continue
            sigs: dict[frozenset[str], list[str]] = {}
            for prof in sorted(loaded, key=lambda p: (p.kv_tiers is not None, p.name)):
                sigs.setdefault(_signature(prof.router.config), []).append(prof.name)
            _signatures = sigs
        return _signatures


def scheduler_name(config: dict[str, Any], prefer: str | None = None) -> str:
    """The shipped profile whose router config has the same scorers/picker, else `custom (scorer, ...)`.

    Several profiles share one scheduler (e.g. precise-prefix-cache, kv-offload, semantic-kv); `prefer` (the
    running stack's profile) wins among those, else the first of the group (see known_signatures).
    """
    sig = _signature(config)
    names = known_signatures().get(sig)
    if names:
        return prefer if prefer in names else names[0]
    return "custom (" + ", ".join(sorted(t.removesuffix("-scorer") for t in sig)) + ")" if sig else "custom"


class _Refused(Exception):
    """The router answered 401: retrying with the same key will not help, but the loop still backs off."""
