"""A profile brought up with the real `llmdctl up` (LLMDCTL_HOME in a temp dir, free ports), always torn down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port, free_port_block

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    home: Path
    info: dict[str, Any]  # `llmdctl up --json`
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.info["router_url"]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0)

    def pods(self, role: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.info["pods"] if role is None or p["role"] == role]

    def component(self, name: str) -> dict[str, Any]:
        return next(c for c in self.info["components"] if c["name"] == name)

    def router_metric(self, name: str, labels: str = "") -> float:
        return metric_sum(httpx.get(self.url + "/metrics").text, name, labels)

    def decision(self, request_id: str, history: int = 500) -> dict[str, Any]:
        """The decision the router published for `request_id` (from the stream's history)."""
        from router_lite.decisions import iter_decisions

        for d in iter_decisions(self.url, history=history, timeout_s=1.0):
            if request_id in (d.get("client_request_id"), d.get("request_id")):
                return d
        raise AssertionError(f"no decision for request {request_id}")

    def kill_component(self, name: str) -> None:
        """SIGKILL one component (a crashed pod process), by the pid `up` reported."""
        pid = self.component(name)["pid"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` (optionally only lines containing `labels`) in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ") and (not labels or labels in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def pod_metric(url: str, name: str) -> float:
    return metric_sum(httpx.get(url + "/metrics").text, name)


def _llmdctl(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmdctl", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


@contextlib.contextmanager
def profile_up(profile: str, home: Path, *sets: str) -> Iterator[Stack]:
    """`llmdctl up PROFILE --json` on free loopback ports; `llmdctl down` (then SIGKILL leftovers) afterwards."""
    env = {**os.environ, "LLMDCTL_HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("PYTHONHASHSEED", None)
    n = 16
    pods, events, router = free_port_block(n), free_port_block(n), free_port()
    while router in range(pods, pods + n) or set(range(pods, pods + n)) & set(range(events, events + n)):
        pods, events, router = free_port_block(n), free_port_block(n), free_port()
    args = ["up", profile, "--json", "--port", str(router), "--pod-port", str(pods), "--events-port", str(events)]
    for s in sets:
        args += ["--set", s]
    try:
        proc = _llmdctl(env, *args)
        assert proc.returncode == 0, f"llmdctl up {profile} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        yield Stack(home, json.loads(proc.stdout), env)
    finally:
        state = home / "state.json"
        pids = [c.get("pid") for c in json.loads(state.read_text()).get("components", [])] if state.exists() else []
        with contextlib.suppress(Exception):
            _llmdctl(env, "down", timeout=30)
        for pid in pids:
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
