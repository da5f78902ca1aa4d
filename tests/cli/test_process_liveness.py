"""Process liveness through psutil (Linux and macOS alike): a running child, a zombie, a pid with another start."""

from __future__ import annotations

import subprocess
import sys
import time

from llmdctl.local.state import is_alive, process_start_time


def test_child_alive_then_zombie_then_gone():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = process_start_time(child.pid)
        assert started is not None and is_alive(child.pid, started)
        assert not is_alive(child.pid, started + 1)  # same pid, another process: not ours
        child.kill()
        deadline = time.monotonic() + 5
        while is_alive(child.pid) and time.monotonic() < deadline:  # unreaped: a zombie, which is not alive
            time.sleep(0.02)
        assert not is_alive(child.pid, started)
    finally:
        child.kill()
        child.wait(timeout=5)
    assert process_start_time(child.pid) is None or not is_alive(child.pid, started)
    assert not is_alive(None) and not is_alive(0)
