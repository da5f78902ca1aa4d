"""The process/port helper everything outside `llmdctl up` starts servers with (real processes on loopback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from sim_gpu.procs import StartError, free_port, free_port_block, free_ports, spawn, stop, wait_http


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie awaiting its parent is dead too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_ports_are_free_distinct_and_consecutive_where_asked():
    base = free_port_block(3)
    for port in range(base, base + 3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    a, b = free_ports(2)
    assert a != b and free_port() > 0


def test_stop_reaches_a_child_that_ignores_sigterm_in_the_group(tmp_path):
    child_pid = tmp_path / "child.pid"
    code = (
        "import os, signal, subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        f"open({str(child_pid)!r}, 'w').write(str(c.pid))\n"
        "time.sleep(60)\n"
    )
    proc = spawn([sys.executable, "-c", code], log=tmp_path / "log")
    deadline = time.monotonic() + 10
    while not child_pid.exists() or not child_pid.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)
    pid = int(child_pid.read_text())
    assert stop(proc, grace_s=1.0) == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)  # SIGKILLed with its group once the grace ran out


def test_stop_of_a_process_outside_a_group_signals_it_alone():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # shares the test's group
    assert stop(proc, grace_s=5.0) == -signal.SIGTERM
    assert stop(proc) == -signal.SIGTERM  # stopping twice is harmless


def test_wait_http_fails_fast_on_a_dead_process_with_its_output(tmp_path):
    proc = spawn([sys.executable, "-c", "import sys; print('bad flag --x'); sys.exit(3)"], log=tmp_path / "log")
    t0 = time.monotonic()
    with pytest.raises(StartError, match=r"exited with 3 before .*\n.*bad flag --x"):
        wait_http(f"http://127.0.0.1:{free_port()}/health", proc, 30.0, log=tmp_path / "log")
    assert time.monotonic() - t0 < 10
    with pytest.raises(StartError, match="did not answer 200 within 0.2 s"):
        wait_http(f"http://127.0.0.1:{free_port()}/health", None, 0.2)
