"""Fixtures for CLI tests: an isolated run directory, the CLI as a real subprocess, guaranteed cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, free_port_block

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """Runs `python -m llmdctl ...` with LLMDCTL_HOME pointing at a temporary run directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "LLMDCTL_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"}
        self.env.pop("PYTHONHASHSEED", None)

    def __call__(self, *args: str, timeout: float = 60) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "llmdctl", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def state(self) -> dict | None:
        path = self.home / "state.json"
        return json.loads(path.read_text()) if path.exists() else None


def _kill_leftovers(state: dict | None) -> None:
    """Last resort after a failed test: kill every process group the run state names."""
    for comp in (state or {}).get("components", []):
        pid = comp.get("pid")
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def cli(tmp_path: Path):
    runner = Cli(tmp_path / "home")
    try:
        yield runner
    finally:
        state = runner.state()
        if state is not None:
            try:
                runner("down", timeout=30)
            finally:
                _kill_leftovers(state)


@pytest.fixture
def port_args():
    """`--port/--pod-port/--events-port` for a stack of `n` pod endpoints, all on free ports."""

    def make(n: int) -> tuple[list[str], dict[str, int]]:
        ports = {"router": free_port(), "pods": free_port_block(n), "events": free_port_block(n)}
        while ports["router"] in range(ports["pods"], ports["pods"] + n) or set(
            range(ports["pods"], ports["pods"] + n)
        ) & set(range(ports["events"], ports["events"] + n)):
            ports = {"router": free_port(), "pods": free_port_block(n), "events": free_port_block(n)}
        return [
            "--port",
            str(ports["router"]),
            "--pod-port",
            str(ports["pods"]),
            "--events-port",
            str(ports["events"]),
        ], ports

    return make


def processes_mentioning(text: str) -> list[int]:
    """Pids (not zombies) whose command line contains `text`: finds what a test started, by a unique port."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def procs_with():
    return processes_mentioning
