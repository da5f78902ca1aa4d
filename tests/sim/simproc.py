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

from sim_gpu.procs import StartError, free_port_block, spawn, stop, wait_http

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
    """Every pod's /health answers `expect` (the process dying or the timeout fail with its log tail)."""
    deadline = time.monotonic() + timeout
    for url in urls:
        wait_http(url + "/health", proc, max(0.1, deadline - time.monotonic()), expect=expect, interval_s=0.02)


@contextlib.contextmanager
def sim_server(*args: str, ports: int = 1, wait: bool = True, env: dict[str, str] | None = None) -> Iterator[SimServer]:
    """Run the simulator with `args` (plus --host/--port); `ports` = pods x data-parallel ranks it will open."""
    port = free_port_block(ports)
    fd, log_name = tempfile.mkstemp(prefix="sim-", suffix=".log")
    os.close(fd)
    log = Path(log_name)
    cmd = [sys.executable, "-m", "sim_gpu", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = spawn(cmd, log=log, env=full_env, cwd=ROOT)
    server = SimServer(proc, port, [port + i for i in range(ports)], log)
    try:
        if wait:
            try:
                wait_healthy([server.url(i) for i in range(ports)], proc)
            except StartError as exc:
                raise RuntimeError(f"{exc}\n--- sim server log ---\n{server.stderr()}") from None
        yield server
    finally:
        stop(proc)
        log.unlink(missing_ok=True)
