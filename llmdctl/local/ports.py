"""Free-port checks, and who holds a port when the OS tells us (psutil: Linux and macOS), so a conflict is one
clear line."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class PortHolder:
    """A process listening on a port; pid/command are None when the OS does not say (another user's process)."""

    port: int
    pid: int | None = None
    command: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return f"port {self.port} is in use (holder unknown)"
        return f"port {self.port} is in use by pid {self.pid} ({self.command or '?'})"


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port and we could bind it now (SO_REUSEADDR, as servers do)."""
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def all_free(ports: list[int], host: str = "127.0.0.1") -> bool:
    return all(is_free(p, host) for p in ports)


def find_free_block(
    start: int, count: int, host: str = "127.0.0.1", avoid: set[int] | None = None, limit: int = 2000
) -> int:
    """The first base >= start such that base..base+count-1 are all free and none is in `avoid`."""
    avoid = avoid or set()
    base = start
    while base + count <= 65535 and base < start + limit:
        block = range(base, base + count)
        clash = next((p for p in block if p in avoid or not is_free(p, host)), None)
        if clash is None:
            return base
        base = clash + 1
    raise OSError(f"no {count} consecutive free ports between {start} and {min(start + limit, 65535)}")


def _listeners(ports: set[int]) -> dict[int, int | None]:
    """port -> pid (None when the OS will not say) of the sockets listening on any of `ports`.

    psutil's system-wide table where the OS gives it (Linux; pids of other users' sockets come back None); on
    macOS that table needs root, so there it falls back to each of our own processes' sockets.
    """
    found: dict[int, int | None] = {}
    try:
        conns = [(c, c.pid) for c in psutil.net_connections(kind="tcp")]
    except psutil.AccessDenied:
        conns = []
        for proc in psutil.process_iter():
            try:
                conns += [(c, proc.pid) for c in proc.net_connections(kind="tcp")]
            except psutil.Error:
                continue
    for conn, pid in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports:
            if found.get(conn.laddr.port) is None:
                found[conn.laddr.port] = pid
    return found


def listening_ports(ports: list[int]) -> list[int]:
    """Those of `ports` that some socket listens on (any address)."""
    held = _listeners(set(ports))
    return [p for p in ports if p in held]


def _command_of(pid: int) -> str | None:
    try:
        parts = psutil.Process(pid).cmdline()
    except psutil.Error:
        return None
    text = " ".join(parts)
    return text[:120] + ("..." if len(text) > 120 else "") if text else None


def holder_of(port: int) -> PortHolder:
    """Who listens on `port` (pid and command line when the OS tells us)."""
    pid = _listeners({port}).get(port)
    return PortHolder(port, pid, _command_of(pid)) if pid is not None else PortHolder(port)
