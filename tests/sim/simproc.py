"""Start a real `python -m sim_gpu serve` process on free loopback ports for a test, and always stop it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port_block

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SimServer:
    proc: subprocess.Popen
    port: int
    ports: list[int]
    log: Path

    def url(self, i: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    @property
    def base(self) -> str:
        return self.url(0)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def wait_healthy(urls: list[str], proc: subprocess.Popen, timeout: float = 15.0, expect: int = 200) -> None:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    with httpx.Client(timeout=1.0) as client:
        while pending and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"sim server exited with {proc.returncode}")
            try:
                if client.get(pending[0] + "/health").status_code == expect:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    if pending:
        raise RuntimeError(f"sim server not healthy at {pending[0]} within {timeout}s")


@contextlib.contextmanager
def sim_server(*args: str, ports: int = 1, wait: bool = True, env: dict[str, str] | None = None) -> Iterator[SimServer]:
    """Run the simulator with `args` (plus --host/--port); `ports` = pods x data-parallel ranks it will open."""
    port = free_port_block(ports)
    fd, log_name = tempfile.mkstemp(prefix="sim-", suffix=".log")
    log = Path(log_name)
    cmd = [sys.executable, "-m", "sim_gpu", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fd, stderr=fd, env=full_env)
    os.close(fd)
    server = SimServer(proc, port, [port + i for i in range(ports)], log)
    try:
        if wait:
            try:
                wait_healthy([server.url(i) for i in range(ports)], proc)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n--- sim server log ---\n{server.stderr()}") from None
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.unlink(missing_ok=True)
