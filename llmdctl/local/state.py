"""The run directory (`$LLMDCTL_HOME`): one state.json describing what runs, logs, generated configs, a lock.

State is written before anything waits, so `down` can always find and stop what an interrupted `up` started.
Each process is remembered with its kernel start time: a pid reused by an unrelated process is never killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from llmdctl.paths import home_dir

STATE_VERSION = 1


class StateError(RuntimeError):
    """The run directory is busy or unreadable; the message is one line."""


@dataclass
class PodState:
    """One model-server endpoint (a pod, or one data-parallel rank of a pod) as the router sees it."""

    name: str
    pool: str
    role: str
    port: int
    process: str  # the component (OS process) serving it
    rank: int = 0
    kv_events: str | None = None  # ZMQ endpoint of the pod's KV events, as the router addresses it
    kv_topic: str | None = None  # the topic it publishes them under
    block_size: int | None = None  # its KV block size (the router must hash with the same)
    hash_seed: str | None = None  # its block-hash seed (vLLM: PYTHONHASHSEED or "vllm-none-hash")
    kv_events_bind: bool = False  # True: the pod connects and the router binds `kv_events` (sim on loopback)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ComponentState:
    """One supervised OS process (the router, or a sim process hosting several pods)."""

    name: str
    kind: str  # router | sim | vllm
    argv: list[str]
    ports: list[int]
    health: list[str]  # URLs that answer 200 once the component is ready
    log: str  # path of its log file
    env: dict[str, str] = field(default_factory=dict)  # set on top of the caller's environment
    env_unset: list[str] = field(default_factory=list)  # removed from it (e.g. PYTHONHASHSEED for vLLM)
    pid: int | None = None
    start_time: int | None = None  # /proc/<pid>/stat starttime, guards against pid reuse


@dataclass
class RunState:
    profile: str
    profile_path: str
    engine: str
    model: str
    router_url: str
    started_at: float
    overrides: list[str] = field(default_factory=list)
    status: str = "starting"  # starting | running
    components: list[ComponentState] = field(default_factory=list)
    pods: list[PodState] = field(default_factory=list)
    version: int = STATE_VERSION

    def component(self, name: str) -> ComponentState | None:
        return next((c for c in self.components if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RunState:
        doc = dict(doc)
        doc["components"] = [ComponentState(**c) for c in doc.get("components", [])]
        doc["pods"] = [PodState(**p) for p in doc.get("pods", [])]
        return cls(**doc)


def state_path(home: Path | None = None) -> Path:
    return (home or home_dir()) / "state.json"


def logs_dir(home: Path | None = None) -> Path:
    return (home or home_dir()) / "logs"


def run_dir(home: Path | None = None) -> Path:
    """Generated files of the current run (router config, endpoints file)."""
    return (home or home_dir()) / "run"


ADMIN_KEY_FILE = "admin.key"  # the router's admin key (`--admin-key-file`), readable by this user only


def admin_key_path(home: Path | None = None) -> Path:
    return run_dir(home) / ADMIN_KEY_FILE


def ensure_admin_key(home: Path | None = None) -> Path:
    """The run's admin key file, created (mode 0600, 32 random bytes) when missing; kept across `up`s."""
    import secrets

    path = admin_key_path(home)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path


def read_admin_key(home: Path | None = None) -> str | None:
    """What the CLI and TUI send to the router's admin API: $LLMD_ROUTER_ADMIN_KEY, else the run's key file."""
    key = os.environ.get("LLMD_ROUTER_ADMIN_KEY")
    if key:
        return key
    try:
        return admin_key_path(home).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def load_state(home: Path | None = None) -> RunState | None:
    path = state_path(home)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable run state ({exc}); remove it after checking nothing runs") from None
    if doc.get("version") != STATE_VERSION:
        raise StateError(
            f"{path}: run state version {doc.get('version')!r}, expected {STATE_VERSION}; remove it after checking "
            "nothing runs"
        )
    try:
        return RunState.from_json(doc)
    except TypeError as exc:
        raise StateError(f"{path}: malformed run state ({exc})") from None


def save_state(state: RunState, home: Path | None = None) -> None:
    """Atomic write (temp file + rename) so a reader never sees half a state."""
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2))
    os.replace(tmp, path)


def clear_state(home: Path | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(home).unlink()


def _start_time(proc: psutil.Process) -> int:
    return round(proc.create_time() * 100)


def process_start_time(pid: int) -> int | None:
    """When `pid` started (centiseconds since the epoch, via psutil: Linux and macOS), None if it does not exist.
    Stored with the pid so a reused pid is never taken for ours."""
    try:
        return _start_time(psutil.Process(pid))
    except (psutil.Error, ValueError, OverflowError):
        return None


def is_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True if `pid` runs and is not a zombie, and (when given) is the same process that started at `start_time`."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        return start_time is None or _start_time(proc) == start_time
    except (psutil.Error, ValueError, OverflowError):
        return False


@contextlib.contextmanager
def run_lock(home: Path | None = None, wait_s: float = 10.0) -> Iterator[None]:
    """Exclusive lock over the run directory, so two `up`/`down` never race; names the holder when busy."""
    root = home or home_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = root / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise StateError(
                        f"{root}: another llmdctl command (pid {holder}) is changing the stack; wait for it or retry"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
