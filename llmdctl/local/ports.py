"""Free-port checks, and who holds a port when the kernel tells us (Linux /proc), so a conflict is one clear line."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's state column


@dataclass(frozen=True)
class PortHolder:
    """A process listening on a port; pid/command are None when /proc does not say (other user, other OS)."""

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


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != _LISTEN:
                continue
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def listening_ports(ports: list[int]) -> list[int]:
    """Those of `ports` that some socket listens on (any address), per /proc/net/tcp[6]."""
    return [p for p in ports if _listening_inodes(p)]


def _command_of(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    text = " ".join(parts)
    return text[:120] + ("..." if len(text) > 120 else "") if text else None


def holder_of(port: int) -> PortHolder:
    """Who listens on `port`: scans /proc/*/fd for the listening socket's inode (our own user's processes)."""
    inodes = _listening_inodes(port)
    if inodes:
        targets = {f"socket:[{i}]" for i in inodes}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                for fd in os.scandir(f"/proc/{entry.name}/fd"):
                    try:
                        if os.readlink(fd.path) in targets:
                            pid = int(entry.name)
                            return PortHolder(port, pid, _command_of(pid))
                    except OSError:
                        continue
            except OSError:
                continue
    return PortHolder(port)
