"""`sim calibrate` is a real command of the simulator's CLI (no import guard can make it vanish)."""

from __future__ import annotations

import subprocess
import sys

from sim_gpu.procs import free_port


def test_calibrate_is_registered_and_an_unreachable_server_is_one_line_and_exit_1():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = subprocess.run([sys.executable, "-m", "sim_gpu", "calibrate", "--url", url, "--heldout", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0]
    assert "Traceback" not in r.stderr
