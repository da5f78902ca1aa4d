"""Reading whole block files at the disk's speed: direct I/O into huge-page buffers, a few files in flight.

Why not the page cache: its read-ahead of a small file (`POSIX_FADV_WILLNEED`, or a plain read) fills order-0
pages, so one request carries at most the queue's segment limit (254 pages: ~1 MiB), and a virtio disk serves
requests one after another: 2 MiB block files read at ~0.6 of dd, whose sequential read-ahead builds 4 MiB
requests out of large folios. A direct read into a 2 MiB-aligned transparent huge page is one 2 MiB request per
file; with eight in flight the tier read at 0.77-2.08 of dd over five runs, the low end under load, where
dd's twice larger requests count most (bench/bench_kvtiers.py (c)). Small files (below
`DIRECT_MIN_BYTES`), files the page cache already holds whole (just written, or read by another process) and
filesystems without direct I/O are read through the page cache, on the same threads.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Generic, TypeVar

DEPTH = 8  # files read ahead of the one the caller waits for (each 2 MiB request keeps the disk busy)
DIRECT_MIN_BYTES = 256 << 10  # smaller files: one page-cache read is cheaper than a trip to the disk
_PAGE = mmap.PAGESIZE  # direct I/O: buffer, offset and length aligned to the logical block size (<= a page)
_HUGE = 2 << 20  # a transparent huge page: a buffer aligned to it is a handful of DMA segments, not 512
_O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere every read goes through the page cache
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)

T = TypeVar("T")


class AlignedBuffer:
    """A reusable read buffer at a page boundary (a huge-page boundary once it holds 2 MiB or more)."""

    def __init__(self) -> None:
        self._mem: mmap.mmap | None = None
        self._view = memoryview(bytearray())

    def view(self, size: int) -> memoryview:
        """`size` writable bytes, aligned; reallocated only when a larger file than ever before comes."""
        if len(self._view) < size:
            want = -(-size // _PAGE) * _PAGE
            pad = _HUGE if want >= _HUGE else 0
            mem = mmap.mmap(-1, want + pad, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if pad and _MADV_HUGEPAGE is not None:
                mem.madvise(_MADV_HUGEPAGE)  # advice: without huge pages the reads still work, in smaller requests
            whole = memoryview(mem)
            start = -_address(whole) % _HUGE if pad else 0
            self._mem, self._view = mem, whole[start : start + want]  # the old mapping lives while views of it do
        return self._view[:size]


def _address(view: memoryview) -> int:
    """Where `view`'s memory starts (for alignment)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def read_whole(path: str | os.PathLike[str], buf: AlignedBuffer) -> tuple[os.stat_result, memoryview]:
    """The whole file at `path` read into `buf`: its stat (taken on the open file) and a view of its bytes.

    Large files are read with O_DIRECT in one request where the filesystem allows it (else through the page
    cache); fewer bytes than `st_size` only if the file shrank meanwhile. Raises OSError (FileNotFoundError
    for a missing file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        size = st.st_size
        direct = _O_DIRECT and size >= DIRECT_MIN_BYTES and not _all_cached(fd, size) and _set_direct(fd, True)
        # direct: ask for whole blocks; the read stops at end of file. A file grown since fstat reads as
        # longer (up to the next page) and fails its length check, as it would have through the page cache.
        view = buf.view(-(-size // _PAGE) * _PAGE if direct else size)
        got = 0
        while got < len(view):
            if direct and got % _PAGE:
                direct = _set_direct(fd, False)  # a short direct read (a signal): finish through the cache
            try:
                n = os.preadv(fd, [view[got:]], got)
            except OSError as exc:
                if not (direct and exc.errno == errno.EINVAL):
                    raise
                direct = _set_direct(fd, False)  # a filesystem that took the flag but not the I/O
                continue
            if n == 0:
                break
            got += n
        return st, view[:got]
    finally:
        os.close(fd)


class _CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint64) for f in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


_SYS_CACHESTAT = 451  # Linux 6.5+, one number on every architecture
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_cachestat_ok = _libc is not None


def _all_cached(fd: int, size: int) -> bool:
    """Whether the page cache holds every page of the file (`cachestat`): then a read from memory beats a trip
    to the disk. False where the kernel cannot say (before 6.5, not Linux): such files are read directly."""
    global _cachestat_ok
    if not _cachestat_ok or _libc is None:
        return False
    rng, st = _CacheStatRange(0, 0), _CacheStat()
    args = (ctypes.c_long(_SYS_CACHESTAT), ctypes.c_long(fd), ctypes.byref(rng), ctypes.byref(st), ctypes.c_long(0))
    if _libc.syscall(*args) != 0:  # variadic: every argument passed as a full register
        if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
            _cachestat_ok = False  # no such call here (or a sandbox forbids it): ask no more
        return False
    return st.cache * _PAGE >= size


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for `fd`; whether it is on now (some filesystems refuse it: EINVAL)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    return on


class ReadAhead(Generic[T]):
    """Reads of named files on worker threads, each into a buffer of its own from a ring of `depth + 1`.

    `get(name, then)` returns `read_one(name, buffer)`'s result, reading it now unless an earlier `get` queued
    it, and queues the reads of `then` (the names the caller reads next) while buffers are free. A result's
    buffer is reused from the next `get` on: results are valid until then. Queued reads that a `get` with a
    `then` no longer names (the caller left that run) are dropped. One caller thread per ReadAhead; the reads
    run on `executor` (default: this process's reader threads)."""

    def __init__(
        self,
        read_one: Callable[[str, AlignedBuffer], T],
        depth: int = DEPTH,
        executor: Executor | None = None,
    ) -> None:
        if depth < 0:
            raise ValueError(f"read-ahead depth: expected a count >= 0, got {depth!r}")
        self.read_one = read_one
        self.depth = depth
        self._executor = executor
        self._free = [AlignedBuffer() for _ in range(depth + 1)]
        self._queued: OrderedDict[str, tuple[Future[T], AlignedBuffer]] = OrderedDict()  # oldest first
        self._held: AlignedBuffer | None = None

    def get(self, name: str, then: Sequence[str] = ()) -> T:
        if self._held is not None:
            self._free.append(self._held)
            self._held = None
        entry = self._queued.pop(name, None)
        ahead = then[: self.depth]
        if ahead:
            for stale in [n for n in self._queued if n not in ahead]:
                self.discard(stale)  # a run the caller left: its buffers are wanted for this one
        if entry is None and ahead:
            entry = self._submit(name, self._take())  # first, so the disk starts on it before the others
        for nxt in ahead:
            if not self._free:
                break
            if nxt != name and nxt not in self._queued:
                self._queued[nxt] = self._submit(nxt, self._free.pop())
        if entry is None:
            buf = self._take()
            self._held = buf
            return self.read_one(name, buf)
        future, buf = entry
        self._held = buf
        return future.result()

    def queued(self) -> list[str]:
        """Names whose reads are queued or done and not yet asked for, oldest first."""
        return list(self._queued)

    def discard(self, name: str) -> None:
        """Forget a queued read of `name` (its file changed or went): the next `get` reads it afresh."""
        entry = self._queued.pop(name, None)
        if entry is not None:
            _drop(entry[0])
            self._free.append(entry[1])

    def _take(self) -> AlignedBuffer:
        if self._free:
            return self._free.pop()
        _name, (future, buf) = self._queued.popitem(last=False)  # the oldest queued read was not wanted
        _drop(future)
        return buf

    def _submit(self, name: str, buf: AlignedBuffer) -> tuple[Future[T], AlignedBuffer]:
        return (self._executor or _executor()).submit(self.read_one, name, buf), buf


def _drop(future: Future) -> None:
    """Cancel a read nobody wants, or let it finish if it started, before its buffer is reused (its error, if
    any, is nobody's)."""
    if future.cancel():
        return
    try:
        future.result()
    except Exception:  # noqa: BLE001 - a dropped read's outcome is not reported
        pass


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """The reader threads of this process, shared by every ReadAhead (made again in a forked child, whose
    copy of the parent's pool has no threads behind it)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=DEPTH, thread_name_prefix="kvtiers-fs-read")
            _pool_pid = os.getpid()
        return _pool
