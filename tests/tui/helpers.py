"""Helpers for TUI tests: run an app under Textual's pilot from a plain test, wait for conditions, send requests."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import yaml

from tests.router.procs import ROOT, _stop, _wait_http

SIZE = (160, 48)


def run_app(app, body: Callable[..., Awaitable[None]], size: tuple[int, int] = SIZE) -> None:
    """Run `body(app, pilot)` inside `app.run_test()` on a fresh event loop."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await body(app, pilot)

    asyncio.run(main())


async def until(pilot, cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await pilot.pause(0.05)


async def send(url: str, prompt: list[int], rid: str, headers: dict[str, str] | None = None) -> str:
    """One completion through the router; returns the pod that served it (x-llmd-endpoint)."""
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as c:
        r = await c.post(
            "/v1/completions",
            json={"model": "sim-model", "prompt": prompt, "max_tokens": 4},
            headers={"x-request-id": rid, **(headers or {})},
        )
        assert r.status_code == 200, r.text
        return r.headers["x-llmd-endpoint"]


def group_prompt(group: int, i: int, prefix_len: int = 256) -> list[int]:
    """A prompt of prefix group `group` (shared `prefix_len` tokens) with a unique 16-token question `i`."""
    return [1000 + group * 1000 + (t % 997) for t in range(prefix_len)] + [20000 + group * 100 + i] * 16


class RestartableRouter:
    """A router process on a fixed port that a test can stop and start again (a router restart)."""

    def __init__(self, port: int, entries: list[dict], config: str | None, args: list[str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._dir = tempfile.TemporaryDirectory(prefix="tui-router-")
        work = Path(self._dir.name)
        eps = work / "endpoints.yaml"
        eps.write_text(yaml.safe_dump({"endpoints": entries}))
        self.cmd = [
            sys.executable,
            "-m",
            "router_lite",
            "serve",
            "--port",
            str(port),
            "--endpoints-file",
            str(eps),
            "--log-level",
            "warning",
            *(args or []),
        ]
        if config is not None:
            (work / "config.yaml").write_text(config)
            self.cmd += ["--config", str(work / "config.yaml")]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait_http(f"{self.url}/health", self.proc)

    def kill(self) -> None:
        """A crash: SIGKILL, no graceful shutdown."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


@contextlib.contextmanager
def restartable_router(
    port: int, entries: list[dict], config: str | None = None, args: list[str] | None = None
) -> Iterator[RestartableRouter]:
    r = RestartableRouter(port, entries, config, args)
    try:
        r.start()
        yield r
    finally:
        r.close()
