"""Processes on loopback: free ports, start a server in its own process group, wait for HTTP, stop the group.

One copy for everything that starts simulator pods, routers or real engines outside `llmdctl up` (tests,
bench/ scripts, `sim calibrate`). It lives in sim_gpu, the lowest package that starts processes, so
calibration may use it too. A free port is free *now*: a caller binds it soon after, and the rare loser of a
race retries, as every user of these helpers does through a fresh pick.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"


class StartError(RuntimeError):
    """A process died before it answered, or did not answer in time (the message ends with its log tail)."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """`n` distinct TCP ports on `host` that are free right now (held open together so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_block(n: int, host: str = LOOPBACK, tries: int = 200) -> int:
    """The first of `n` consecutive TCP ports on `host` that are free right now (pods take consecutive ports)."""
    for _ in range(tries):
        base = free_port(host)
        if base + n >= 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports on {host}")


def spawn(
    argv: Sequence[str], log: Path | None = None, env: dict[str, str] | None = None, cwd: str | Path | None = None
) -> subprocess.Popen:
    """Start `argv` in a new process group (so `stop` reaches its children); output to `log`, else a pipe."""
    out = log.open("wb") if log is not None else subprocess.PIPE
    try:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]  # the child holds its own descriptor


def output_tail(proc: subprocess.Popen, log: Path | None = None, chars: int = 3000) -> str:
    """The last output of a process: from its log file, else from its pipe once it has exited."""
    try:
        if log is not None:
            text = log.read_text(errors="replace")
        elif proc.stdout is not None and proc.poll() is not None:
            text = proc.stdout.read().decode(errors="replace")
        else:
            return ""
    except (OSError, ValueError):
        return ""
    return text[-chars:]


def wait_http(
    url: str,
    proc: subprocess.Popen | None = None,
    timeout_s: float = 20.0,
    *,
    log: Path | None = None,
    expect: int = 200,
    interval_s: float = 0.05,
) -> None:
    """Poll `url` until it answers `expect`; StartError as soon as `proc` exits, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                raise StartError(
                    f"{_name(proc)} exited with {proc.returncode} before {url} answered:\n{output_tail(proc, log)}"
                )
            try:
                if client.get(url).status_code == expect:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                tail = output_tail(proc, log) if proc is not None else ""
                where = f":\n{tail}" if tail else ""
                raise StartError(f"{url} did not answer {expect} within {timeout_s:g} s{where}")
            time.sleep(interval_s)


def stop(proc: subprocess.Popen, grace_s: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after `grace_s`: to the process's group when it leads one (`spawn`), else to it
    alone (never to the caller's own group). Returns the exit code (None if it could not be reaped)."""
    leads_group = _leads_group(proc)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None and not leads_group:
            break
        try:
            if leads_group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(grace_s)
            if not leads_group:
                break
            leads_group = _group_alive(proc.pid)  # children of the group may outlive their leader
            if not leads_group:
                break
        except subprocess.TimeoutExpired:
            continue
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        return None


def _leads_group(proc: subprocess.Popen) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid and proc.pid != os.getpgrp()
    except ProcessLookupError:  # already reaped
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _name(proc: subprocess.Popen) -> str:
    args = proc.args if isinstance(proc.args, (list, tuple)) else [str(proc.args)]
    return " ".join(str(a) for a in args[:4])
