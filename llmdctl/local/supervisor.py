"""Supervised background processes: start detached (own session, log file), wait healthy, stop by group.

Each component runs in its own session, so it survives the terminal that ran `up` and its whole process tree
(vLLM's workers included) is one process group: stopping sends SIGTERM to the group, then SIGKILL after a
grace period, and checks that nothing of the group is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from llmdctl.local.state import ComponentState, is_alive, process_start_time


class StartError(RuntimeError):
    """A component did not become healthy; names it and carries its log tail."""

    def __init__(self, component: ComponentState, reason: str, log_tail: str) -> None:
        super().__init__(f"{component.name}: {reason}")
        self.component = component
        self.reason = reason
        self.log_tail = log_tail


def tail(path: str | Path, n: int = 20) -> str:
    """The last `n` lines of a log file ('' when missing); reads only the end of big files."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    return "\n".join(lines[-n:]) if n > 0 else ""


RUN_DIR_ENV = "LLMDCTL_RUN_DIR"  # every process a run starts (and all they start) carries its run directory
COMPONENT_ENV = "LLMDCTL_COMPONENT"  # ... and the name of the component it belongs to


def start(component: ComponentState, cwd: Path | None = None, run_dir: Path | None = None) -> subprocess.Popen:
    """Start `component` detached from the terminal, stdout+stderr to its log; records pid and start time.
    `run_dir` tags the process tree (see `tagged_processes`), so nothing it starts can be lost track of."""
    log_path = Path(component.log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **component.env}
    for key in component.env_unset:
        env.pop(key, None)
    env.pop(RUN_DIR_ENV, None)
    env.pop(COMPONENT_ENV, None)
    if run_dir is not None:
        env[RUN_DIR_ENV] = str(Path(run_dir).resolve())
        env[COMPONENT_ENV] = component.name
    with open(log_path, "wb") as log:
        log.write(f"# llmdctl: {' '.join(component.argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                component.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise StartError(component, f"cannot execute {component.argv[0]}: {exc.strerror or exc}", "") from None
    component.pid = proc.pid
    component.start_time = process_start_time(proc.pid)
    return proc


@dataclass
class HealthWaiter:
    """Polls every component's health URLs until all answer 200, a process exits, or time runs out."""

    components: list[ComponentState]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    interval_s: float = 0.05

    def wait(self, timeout_s: float, on_ready: Callable[[ComponentState, float], None] | None = None) -> None:
        start = time.monotonic()
        pending = {c.name: c for c in self.components}
        done_urls: set[str] = set()
        with httpx.Client(timeout=httpx.Timeout(1.0, connect=0.25), trust_env=False) as client:
            while pending:
                for name, comp in list(pending.items()):
                    self._check_alive(comp)
                    for url in comp.health:
                        if url in done_urls:
                            continue
                        try:
                            if client.get(url).status_code == 200:
                                done_urls.add(url)
                        except httpx.HTTPError:
                            pass
                    if all(u in done_urls for u in comp.health):
                        del pending[name]
                        if on_ready:
                            on_ready(comp, time.monotonic() - start)
                if not pending:
                    return
                if time.monotonic() - start > timeout_s:
                    comp = next(iter(pending.values()))
                    missing = [u for u in comp.health if u not in done_urls]
                    raise StartError(
                        comp, f"not healthy after {timeout_s:g}s (waiting for {', '.join(missing)})", tail(comp.log)
                    )
                time.sleep(self.interval_s)

    def _check_alive(self, comp: ComponentState) -> None:
        proc = self.procs.get(comp.name)
        code = proc.poll() if proc is not None else None
        if code is not None or not is_alive(comp.pid, comp.start_time):
            time.sleep(0.05)  # let the last lines reach the log
            if proc is not None and code is None:  # seen dead before reaped: collect its exit code
                try:
                    code = proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
            how = (
                f"exited with code {code}"
                if code is not None and code >= 0
                else (f"killed by signal {-code}" if code is not None else "exited")
            )
            raise StartError(comp, f"{how} during start-up (log: {comp.log})", tail(comp.log))


def _group_members(pgids: set[int]) -> dict[int, int]:
    """Live (non-zombie) processes whose process group is in `pgids`: pid -> pgid."""
    found: dict[int, int] = {}
    if not pgids:
        return found
    for proc in psutil.process_iter(["status"]):  # psutil: Linux and macOS alike
        if proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            continue
        try:
            pgrp = os.getpgid(proc.pid)
        except OSError:
            continue
        if pgrp in pgids:
            found[proc.pid] = pgrp
    return found


def _owned_groups(components: list[ComponentState]) -> set[int]:
    """Process groups that are provably ours: the leader is the process we started, or is gone but members live."""
    groups: set[int] = set()
    for comp in components:
        if not comp.pid:
            continue
        if is_alive(comp.pid, comp.start_time):
            groups.add(comp.pid)
        elif not is_alive(comp.pid):  # leader gone: its group may still hold children (e.g. vLLM workers)
            groups.add(comp.pid)
    return groups


def stop_orphaned_groups(components: list[ComponentState], run_dir: Path | None = None) -> dict[str, list[int]]:
    """Kill (SIGKILL) what is left of each component whose main process died: a killed vLLM API server left
    its EngineCore and workers holding the port and GBs of memory while `status` said dead. Its process group
    goes, and with `run_dir` every process tagged as that component's (one that left the group too).
    Returns, per component, the pids stopped. A component stays what it is (dead); only its leftovers go."""
    stopped: dict[str, list[int]] = {}
    for comp in components:
        if not comp.pid or is_alive(comp.pid, comp.start_time):
            continue
        members = set(_group_members({comp.pid})) if not is_alive(comp.pid) else set()  # a reused pid: not our group
        tagged = set(tagged_processes(run_dir, comp.name)) if run_dir is not None else set()
        if members:
            _signal_groups({comp.pid}, signal.SIGKILL)
        for pid in tagged - members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if members | tagged:
            stopped[comp.name] = sorted(members | tagged)
    return stopped


def tagged_processes(run_dir: Path, component: str | None = None) -> list[int]:
    """Live processes started by the run in `run_dir`, found by the environment tag `start` gives them (their
    children inherit it): a process the run state does not name, because `up` was killed between starting it
    and recording it, or because it left its process group, is still found. Never this process."""
    wanted = {RUN_DIR_ENV: str(Path(run_dir).resolve())}
    if component is not None:
        wanted[COMPONENT_ENV] = component
    me = os.getpid()
    found: list[int] = []
    for proc in psutil.process_iter(["status"]):
        if proc.pid == me or proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            continue
        try:
            environ = proc.environ()
        except psutil.Error:  # gone, or not ours to read
            continue
        if all(environ.get(k) == v for k, v in wanted.items()):
            found.append(proc.pid)
    return sorted(found)


def stop_tagged(run_dir: Path, grace_s: float = 5.0, component: str | None = None) -> list[int]:
    """SIGTERM every tagged process of the run (of one component when named), SIGKILL after `grace_s`;
    returns the pids that were stopped."""
    pids = tagged_processes(run_dir, component)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 3.0)):
        live = [p for p in pids if is_alive(p)]
        if not live:
            break
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while any(is_alive(p) for p in live) and time.monotonic() < deadline:
            time.sleep(0.02)
    return pids


def _signal_groups(pgids: set[int], sig: int) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


@dataclass
class StopReport:
    seconds: float
    killed: list[int]  # pids that needed SIGKILL
    remaining: list[int]  # pids still alive at the end (should be empty)
    killed_groups: list[int] = field(default_factory=list)  # process groups (= component pids) that needed SIGKILL


def stop(
    components: list[ComponentState], grace_s: float = 5.0, procs: dict[str, subprocess.Popen] | None = None
) -> StopReport:
    """SIGTERM every component's process group, SIGKILL what is left after `grace_s`, verify nothing remains."""
    t0 = time.monotonic()
    groups = _owned_groups(components)
    _signal_groups(groups, signal.SIGTERM)
    killed: list[int] = []
    deadline = t0 + grace_s
    members = _group_members(groups)
    while members and time.monotonic() < deadline:
        _reap(procs)
        time.sleep(0.02)
        members = _group_members(groups)
    killed_groups: list[int] = []
    if members:
        killed = sorted(members)
        killed_groups = sorted(set(members.values()))
        _signal_groups(set(members.values()), signal.SIGKILL)
        end = time.monotonic() + 3.0
        while members and time.monotonic() < end:
            _reap(procs)
            time.sleep(0.02)
            members = _group_members(groups)
    _reap(procs)
    return StopReport(time.monotonic() - t0, killed, sorted(members), killed_groups)


def _reap(procs: dict[str, subprocess.Popen] | None) -> None:
    for proc in (procs or {}).values():
        with contextlib.suppress(Exception):
            proc.poll()


def stop_front_to_back(
    components: list[ComponentState], grace_s: float = 5.0, procs: dict[str, subprocess.Popen] | None = None
) -> StopReport:
    """Stop the router first (no new traffic, and its shutdown never waits on vanished pods), then the pods."""
    front = [c for c in components if c.kind == "router"]
    back = [c for c in components if c.kind != "router"]
    reports = [stop(group, grace_s, procs) for group in (front, back) if group]
    return StopReport(
        seconds=sum(r.seconds for r in reports),
        killed=sorted(p for r in reports for p in r.killed),
        remaining=sorted(p for r in reports for p in r.remaining),
        killed_groups=sorted(g for r in reports for g in r.killed_groups),
    )
