"""Where the endpoints come from: a static `host:port,...` list or an endpoints file (llm-d file-discovery style).

File shape (YAML or JSON)::

    endpoints:
      - address: "127.0.0.1:8100"
        name: pod-0
        labels: {"llm-d.ai/role": decode}
        kvEvents: {endpoint: "tcp://127.0.0.1:5557", topic: "kv@127.0.0.1:8100@model", bind: false}
        dpRank: 0

Every mistake is a one-line `DiscoveryError` naming the file, the entry and the key. The file is watched
(mtime polling, no extra dependency) so pods can be added or removed while the router runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from router_lite.types import ROLE_LABEL, ROLES, Endpoint

log = logging.getLogger("router_lite.discovery")


class DiscoveryError(ValueError):
    """An endpoint list or file that cannot be used; one line naming where and what was expected."""


@dataclass(frozen=True)
class KVEventsSpec:
    """Where a pod publishes its KV events. `bind=False`: the pod binds and we connect; `True`: we bind."""

    endpoint: str
    topic: str = ""
    bind: bool = False


@dataclass(frozen=True)
class EndpointSpec:
    address: str  # host:port
    name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    kv_events: KVEventsSpec | None = None
    dp_rank: int | None = None
    extra: tuple = field(default=(), compare=False)

    @property
    def key(self) -> str:
        return self.address

    def to_endpoint(self) -> Endpoint:
        return Endpoint.parse(self.address, labels=dict(self.labels), dp_rank=self.dp_rank, name=self.name)


def parse_endpoint_list(text: str, source: str = "--endpoints") -> list[EndpointSpec]:
    """`host:port[@role],host:port` -> specs (no KV events: those come from a file)."""
    specs: list[EndpointSpec] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        try:
            ep = Endpoint.parse(item)
        except ValueError as exc:
            raise DiscoveryError(f"{source}: {exc}") from None
        specs.append(EndpointSpec(address=ep.key, labels=tuple(sorted(ep.labels.items()))))
    _check_unique(specs, source)
    return specs


_ENTRY_KEYS = {"address", "host", "port", "name", "labels", "kvEvents", "dpRank", "role", "model"}
_KV_KEYS = {"endpoint", "topic", "bind"}


def _entry(raw: Any, where: str) -> EndpointSpec:
    if isinstance(raw, str):
        raw = {"address": raw}
    if not isinstance(raw, dict):
        raise DiscoveryError(f"{where}: expected a mapping with 'address', got {type(raw).__name__}")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise DiscoveryError(f"{where}: unknown key {unknown[0]!r}; expected some of {', '.join(sorted(_ENTRY_KEYS))}")
    address = raw.get("address")
    if address is None and "host" in raw and "port" in raw:
        address = f"{raw['host']}:{raw['port']}"
    if not isinstance(address, str):
        raise DiscoveryError(f"{where}.address: expected 'host:port', got {address!r}")
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) for k in labels):
        raise DiscoveryError(f"{where}.labels: expected a mapping of strings")
    labels = {k: str(v) for k, v in labels.items()}
    role = raw.get("role")
    if role is not None:
        if role not in ROLES:
            raise DiscoveryError(f"{where}.role: expected one of {', '.join(ROLES)}, got {role!r}")
        labels[ROLE_LABEL] = role
    try:
        ep = Endpoint.parse(address, labels=labels)
    except ValueError as exc:
        raise DiscoveryError(f"{where}.address: {exc}") from None
    dp_rank = raw.get("dpRank")
    if dp_rank is not None and (not isinstance(dp_rank, int) or isinstance(dp_rank, bool) or dp_rank < 0):
        raise DiscoveryError(f"{where}.dpRank: expected an integer >= 0, got {dp_rank!r}")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise DiscoveryError(f"{where}.name: expected a string, got {name!r}")
    kv = raw.get("kvEvents")
    kv_spec = None
    if kv is not None:
        if isinstance(kv, str):
            kv = {"endpoint": kv}
        if not isinstance(kv, dict):
            raise DiscoveryError(f"{where}.kvEvents: expected a mapping with 'endpoint'")
        unknown = sorted(set(kv) - _KV_KEYS)
        if unknown:
            raise DiscoveryError(
                f"{where}.kvEvents: unknown key {unknown[0]!r}; expected some of endpoint, topic, bind"
            )
        url = kv.get("endpoint")
        if not isinstance(url, str) or "://" not in url:
            raise DiscoveryError(
                f"{where}.kvEvents.endpoint: expected a ZMQ address like tcp://127.0.0.1:5557, got {url!r}"
            )
        bind = kv.get("bind", False)
        if not isinstance(bind, bool):
            raise DiscoveryError(f"{where}.kvEvents.bind: expected true or false, got {bind!r}")
        topic = kv.get("topic") or ""
        if not isinstance(topic, str):
            raise DiscoveryError(f"{where}.kvEvents.topic: expected a string, got {topic!r}")
        kv_spec = KVEventsSpec(endpoint=url, topic=topic, bind=bind)
    return EndpointSpec(
        address=ep.key, name=name, labels=tuple(sorted(ep.labels.items())), kv_events=kv_spec, dp_rank=dp_rank
    )


def _check_unique(specs: list[EndpointSpec], source: str) -> None:
    seen: set[str] = set()
    for s in specs:
        if s.key in seen:
            raise DiscoveryError(f"{source}: endpoint {s.key} is listed twice")
        seen.add(s.key)


def parse_endpoints_doc(doc: Any, source: str) -> list[EndpointSpec]:
    """Specs from a loaded endpoints document (`{endpoints: [...]}` or a bare list)."""
    if doc is None:
        return []
    items = doc.get("endpoints") if isinstance(doc, dict) else doc
    if isinstance(doc, dict):
        unknown = sorted(set(doc) - {"endpoints"})
        if unknown:
            raise DiscoveryError(f"{source}: unknown top-level key {unknown[0]!r}; expected 'endpoints'")
    if items is None:
        return []
    if not isinstance(items, list):
        raise DiscoveryError(f"{source}: endpoints: expected a list, got {type(items).__name__}")
    specs = [_entry(item, f"{source}: endpoints[{i}]") for i, item in enumerate(items)]
    _check_unique(specs, source)
    return specs


def load_endpoints_file(path: str | Path) -> list[EndpointSpec]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise DiscoveryError(f"{p}: cannot read endpoints file: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise DiscoveryError(f"{p}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_endpoints_doc(doc, str(p))


def write_endpoints_file(path: str | Path, specs: list[EndpointSpec]) -> None:
    """Write specs in the file-discovery shape (used by launchers and tests)."""
    items = []
    for s in specs:
        item: dict[str, Any] = {"address": s.address}
        if s.name:
            item["name"] = s.name
        if s.labels:
            item["labels"] = dict(s.labels)
        if s.kv_events:
            item["kvEvents"] = {"endpoint": s.kv_events.endpoint, "topic": s.kv_events.topic, "bind": s.kv_events.bind}
        if s.dp_rank is not None:
            item["dpRank"] = s.dp_rank
        items.append(item)
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(yaml.safe_dump({"endpoints": items}, sort_keys=False))
    tmp.replace(path)


class FileWatcher:
    """Polls an endpoints file's mtime/size and calls `on_change(specs)` after each valid change.

    An invalid edit is logged and ignored (the previous endpoints stay), so a half-saved file never
    empties the pool.
    """

    def __init__(
        self, path: str | Path, on_change: Callable[[list[EndpointSpec]], None], interval_s: float = 0.5
    ) -> None:
        self.path = Path(path)
        self.on_change = on_change
        self.interval_s = interval_s
        self._stamp = self._current_stamp()
        self._task: asyncio.Task | None = None
        self.errors = 0

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def check(self) -> bool:
        """Reload if the file changed; True when new specs were delivered."""
        stamp = self._current_stamp()
        if stamp == self._stamp or stamp is None:
            return False
        self._stamp = stamp
        try:
            specs = load_endpoints_file(self.path)
        except DiscoveryError as exc:
            self.errors += 1
            log.warning("endpoints file change ignored: %s", exc)
            return False
        self.on_change(specs)
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check()
            except Exception:  # never let the watcher die
                log.exception("endpoints file watcher")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="endpoints-file-watcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
