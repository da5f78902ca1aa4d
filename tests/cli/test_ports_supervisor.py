"""Port checks and holder lookup, and the supervisor's start / health wait / group stop on real processes."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from llmdctl.local import ports, supervisor
from llmdctl.local.state import ComponentState, is_alive
from tests.conftest import free_port


def test_holder_of_a_listening_port_is_this_process():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not ports.is_free(port)
        assert ports.listening_ports([port]) == [port]
        holder = ports.holder_of(port)
        assert holder.pid == os.getpid()
        assert f"port {port}" in holder.describe() and str(os.getpid()) in holder.describe()
    assert ports.is_free(port)
    assert ports.listening_ports([port]) == []


def test_find_free_block_skips_a_busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        base = ports.find_free_block(busy - 1, 3)
        assert not (base <= busy < base + 3)


SERVER = """
import http.server, os, subprocess, sys, time
port = int(sys.argv[1])
if sys.argv[2] == "child":  # a grandchild in the same process group, as vLLM's workers are
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
if sys.argv[2] == "escape":  # a grandchild that leaves the group (its own session)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
if sys.argv[2] == "crash":
    print("boom: bad engine argument", flush=True)
    sys.exit(3)
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _component(tmp_path: Path, name: str, mode: str, delay: float = 0.0) -> ComponentState:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = free_port()
    return ComponentState(
        name=name,
        kind="test",
        argv=[sys.executable, str(script), str(port), mode, str(delay)],
        ports=[port],
        health=[f"http://127.0.0.1:{port}/health"],
        log=str(tmp_path / f"{name}.log"),
    )


def _group_alive(pgid: int) -> bool:
    return bool(supervisor._group_members({pgid}))


def test_start_wait_and_stop_whole_process_group(tmp_path: Path):
    comp = _component(tmp_path, "web", "child", 0.2)
    proc = supervisor.start(comp)
    try:
        assert comp.pid == proc.pid and comp.start_time is not None
        assert os.getpgid(comp.pid) == comp.pid  # its own session and group, detached from ours
        ready: list[str] = []
        supervisor.HealthWaiter([comp], {comp.name: proc}).wait(10, on_ready=lambda c, s: ready.append(c.name))
        assert ready == ["web"]
        time.sleep(0.2)
        assert len(supervisor._group_members({comp.pid})) == 2  # server + its child
    finally:
        report = supervisor.stop([comp], grace_s=3, procs={comp.name: proc})
    assert report.remaining == []
    assert not is_alive(comp.pid) and not _group_alive(comp.pid)
    assert ports.listening_ports(comp.ports) == []


def test_component_exiting_at_start_is_reported_with_its_log(tmp_path: Path):
    comp = _component(tmp_path, "bad", "crash")
    proc = supervisor.start(comp)
    with pytest.raises(supervisor.StartError) as info:
        supervisor.HealthWaiter([comp], {comp.name: proc}).wait(10)
    assert "exited with code 3" in info.value.reason
    assert "boom: bad engine argument" in info.value.log_tail
    supervisor.stop([comp], procs={comp.name: proc})


def test_health_timeout_names_the_waiting_url(tmp_path: Path):
    comp = _component(tmp_path, "slow", "plain", 30)
    proc = supervisor.start(comp)
    try:
        with pytest.raises(supervisor.StartError) as info:
            supervisor.HealthWaiter([comp], {comp.name: proc}).wait(0.5)
        assert "not healthy after 0.5s" in info.value.reason and comp.health[0] in info.value.reason
    finally:
        supervisor.stop([comp], grace_s=2, procs={comp.name: proc})
    assert not _group_alive(comp.pid)


def test_stop_never_kills_a_reused_pid(tmp_path: Path):
    me = ComponentState(name="x", kind="test", argv=[], ports=[], health=[], log="", pid=os.getpid(), start_time=1)
    report = supervisor.stop([me], grace_s=0.1)  # start time does not match: not ours, left alone
    assert report.remaining == [] and is_alive(os.getpid())


def test_a_killed_components_leftover_tree_is_stopped(tmp_path: Path):
    """Issue 18: a vLLM API server killed on its own left EngineCore and workers running; they are stopped."""
    comp = _component(tmp_path, "engine", "child", 0.0)
    proc = supervisor.start(comp)
    try:
        supervisor.HealthWaiter([comp], {comp.name: proc}).wait(10)
        deadline = time.monotonic() + 5
        while len(supervisor._group_members({comp.pid})) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(comp.pid, 9)  # only the leader dies, as `kill PID` of the API server
        proc.wait(5)
        leftovers = set(supervisor._group_members({comp.pid}))
        assert len(leftovers) == 1  # its child lives on in the group
        assert supervisor.stop_orphaned_groups([comp]) == {"engine": sorted(leftovers)}
        deadline = time.monotonic() + 5
        while _group_alive(comp.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_alive(comp.pid)
        assert supervisor.stop_orphaned_groups([comp]) == {}
    finally:
        supervisor.stop([comp], grace_s=1, procs={comp.name: proc})


def test_a_killed_components_descendant_outside_its_group_is_found_by_its_tag_and_stopped(tmp_path: Path):
    """Issue 18 #8: what a component started is stopped with it even when it left the process group."""
    run_dir = tmp_path / "run"
    comp = _component(tmp_path, "engine", "escape", 0.0)
    other = _component(tmp_path, "other", "escape", 0.0)
    procs = {c.name: supervisor.start(c, run_dir=run_dir) for c in (comp, other)}
    try:
        supervisor.HealthWaiter([comp, other], procs).wait(10)
        deadline = time.monotonic() + 5
        while len(supervisor.tagged_processes(run_dir)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        mine = supervisor.tagged_processes(run_dir, "engine")
        assert len(mine) == 2 and comp.pid in mine
        escaped = next(p for p in mine if p != comp.pid)
        assert os.getpgid(escaped) != comp.pid  # not in the group: a group kill alone leaves it running
        os.kill(comp.pid, 9)
        procs["engine"].wait(5)
        assert supervisor.stop_orphaned_groups([comp, other], run_dir) == {"engine": [escaped]}
        deadline = time.monotonic() + 5
        while is_alive(escaped) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_alive(escaped)
        assert len(supervisor.tagged_processes(run_dir, "other")) == 2  # the live component is left alone
        stopped = supervisor.stop_tagged(run_dir, grace_s=2)
        assert len(stopped) == 2 and supervisor.tagged_processes(run_dir) == []
    finally:
        supervisor.stop([comp, other], grace_s=1, procs=procs)
        supervisor.stop_tagged(run_dir, grace_s=1)
