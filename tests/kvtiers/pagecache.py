"""The kernel's view of one file's pages (Linux `cachestat`, 6.5+): what is cached, dirty, under write-back."""

from __future__ import annotations

import ctypes
import errno
import os
import sys

import pytest

_SYS_CACHESTAT = 451  # the same number on every architecture (syscalls added since 5.1 share one table)
MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


def page_state(path: str | os.PathLike[str]) -> dict[str, int]:
    """Pages of the file at `path` that are cached, dirty and under write-back; skips the test where the kernel
    cannot tell (not Linux, or older than 6.5)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("cachestat is Linux-only: page-cache state cannot be observed here")
    if _fstype(path) in MEMORY_FILESYSTEMS:
        pytest.skip(f"{path} is on a memory filesystem: its pages are never written back or evicted to a disk")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        rng, st = _Range(0, 0), _Stat()
        args = (ctypes.c_long(_SYS_CACHESTAT), ctypes.c_long(fd), ctypes.byref(rng), ctypes.byref(st), ctypes.c_long(0))
        if libc.syscall(*args) != 0:
            err = ctypes.get_errno()
            if err == errno.ENOSYS:
                pytest.skip("kernel without cachestat (before 6.5): page-cache state cannot be observed")
            raise OSError(err, os.strerror(err), str(path))
        return {"cache": st.cache, "dirty": st.dirty, "writeback": st.writeback}
    finally:
        os.close(fd)


def drop(path: str | os.PathLike[str]) -> None:
    """Write the file back and evict its pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _fstype(path: str | os.PathLike[str]) -> str:
    """The type of the filesystem holding `path` (its longest mount point prefix)."""
    import psutil

    real = os.path.realpath(path)
    best, kind = "", ""
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") or "/"
        if (real == mount or real.startswith(mount + "/") or mount == "/") and len(mount) > len(best):
            best, kind = mount, part.fstype
    return kind


def dirty_or_skip(path: str | os.PathLike[str]) -> int:
    """Dirty pages of a file just written; skips when the kernel's write-back took them first (a busy machine
    starts it early), since then there is nothing dirty left to observe."""
    dirty = page_state(path)["dirty"]
    if dirty == 0:
        pytest.skip("the kernel wrote the file back before it could be observed dirty")
    return dirty
