"""`router serve` user mistakes: one line on stderr, exit 2, no traceback, nothing left listening."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import free_port


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "router_lite", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_taken_port_is_one_line_naming_it():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        r = _serve("--port", str(port), "--endpoints", "127.0.0.1:1")
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--port {port}" in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("flag", ["--queue-size", "--request-timeout", "--queue-ttl"])
def test_negative_numbers_are_refused(flag):
    r = _serve("--port", str(free_port()), "--endpoints", "127.0.0.1:1", flag, "-1")
    assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr
