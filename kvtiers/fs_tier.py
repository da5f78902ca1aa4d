"""The filesystem tier: real KV block bytes, one file per block, in a directory many pods share.

Safety is the point of this module, since any pod may read what any other wrote:

- a file's name is the block hash in lowercase hex and nothing else (anything else is rejected, so no
  name can climb out of the directory);
- a block is written to a dot-prefixed temporary name and renamed into place atomically, so readers see
  a whole file or none, and concurrent writers of one block each publish a whole, identical file;
- every file starts with a header (magic, checksum algorithm, payload length, checksum of name and payload:
  xxh3-128 by default, crc32 or blake2b-128 on request) that is verified on each read: a corrupt, truncated
  or misplaced file is a miss, is counted and removed, and is never served. xxh3 runs at ~60 GB/s where
  crc32 runs at ~4 GB/s: with crc32 the checksum alone was slower than the disk (bench/bench_kvtiers.py (c));
- each file is handed to the disk as soon as it is written (`sync_file_range`, asynchronous), so the disk
  writes block k while Python copies block k+1, and a later `flush` has little left to wait for;
- reads go straight into reused buffers (no joined or sliced copies), large files with direct I/O, and the
  files of the blocks read next are read meanwhile on a few threads (see fs_reader.py), checksummed there;
- the directory has a size cap; the least recently used files (by mtime, bumped on every hit) go first;
- a full disk (ENOSPC/EDQUOT) pauses writing with a warning; reads keep serving; writing is retried after
  `resume_after_s` or as soon as eviction frees space.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import re
import secrets
import stat
import struct
import sys
import time
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import xxhash

from kvtiers.fs_reader import AlignedBuffer, ReadAhead, read_whole

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[0-9a-f]{16,128}")
MAGIC = b"KVT1"
VERSION = 1
_HEADER = struct.Struct(">4sBB2xQ16s")  # magic, version, checksum algorithm, pad, payload length, digest
HEADER_SIZE = _HEADER.size
_TMP_PREFIX = ".tmp."
_STALE_TMP_S = 300.0
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class KVTierWarning(RuntimeWarning):
    """A lower tier stopped taking blocks (e.g. the disk is full); serving continues without it."""


class PutStatus(str, Enum):
    STORED = "stored"
    EXISTS = "exists"  # another writer (maybe another pod) already published this block
    PAUSED = "paused"  # disk full: offload paused, nothing written
    FAILED = "failed"  # any other I/O error: nothing written, counted


@dataclass
class FsStats:
    """Counters of one FsTier instance (its view of the shared directory)."""

    writes: int = 0
    write_bytes: int = 0
    exists: int = 0
    reads: int = 0
    read_bytes: int = 0
    misses: int = 0
    corrupt: int = 0
    truncated: int = 0
    enospc: int = 0
    paused_skips: int = 0
    write_errors: int = 0
    evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_name(name: str) -> str:
    """`name` if it is a block hash in lowercase hex (16-128 digits); ValueError otherwise."""
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise ValueError(f"filesystem tier: block name must be 16-128 lowercase hex digits, got {name!r}")
    return name


def _blake2b(name: str, payload: bytes | memoryview) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(name.encode())
    h.update(payload)
    return h.digest()


def _xxh3(name: str, payload: bytes | memoryview) -> bytes:
    h = xxhash.xxh3_128()
    h.update(name.encode())
    h.update(payload)
    return h.digest()


def _crc32(name: str, payload: bytes | memoryview) -> bytes:
    return zlib.crc32(payload, zlib.crc32(name.encode())).to_bytes(4, "big") + bytes(12)


# The header names its algorithm, so pods configured differently still read each other's files.
CHECKSUMS: dict[str, tuple[int, Callable[[str, bytes | memoryview], bytes]]] = {
    "xxh3": (3, _xxh3),
    "crc32": (1, _crc32),
    "blake2b": (2, _blake2b),
}
DEFAULT_CHECKSUM = "xxh3"
_BY_ID = {i: fn for i, fn in CHECKSUMS.values()}


def block_header(name: str, payload: bytes | memoryview, checksum: str = DEFAULT_CHECKSUM) -> bytes:
    """The header a block file starts with (magic, version, algorithm, payload length, checksum)."""
    algo, fn = CHECKSUMS[checksum]
    return _HEADER.pack(MAGIC, VERSION, algo, len(payload), fn(name, payload))


def encode_block(name: str, payload: bytes, checksum: str = DEFAULT_CHECKSUM) -> bytes:
    """The whole file content for one block: header then payload."""
    return block_header(name, payload, checksum) + payload


class FsTier:
    """One pod's handle on the shared block directory `root`, capped at `capacity_bytes` in total.

    `fsync` makes every `put` durable before it returns; otherwise `early_writeback` (on by default) starts each
    file's write to disk as it is written and `flush` waits for it; off, the kernel picks the moment.
    Up to `spare_files` removed or evicted files are set aside (as temp files, beyond the cap, for at most
    `_STALE_TMP_S`) for later `put`s to rewrite in place: see `_retire`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        capacity_bytes: int,
        *,
        fsync: bool = False,
        early_writeback: bool = True,
        spare_files: int = 32,
        checksum: str = DEFAULT_CHECKSUM,
        resume_after_s: float = 5.0,
        rescan_every: int = 256,
        low_watermark: float = 0.9,
        pin_budget: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"filesystem tier capacity: expected a positive number of bytes, got {capacity_bytes!r}")
        if checksum not in CHECKSUMS:
            raise ValueError(f"filesystem tier checksum: expected one of {', '.join(CHECKSUMS)}, got {checksum!r}")
        self.checksum = checksum
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.capacity_bytes = capacity_bytes
        self.fsync = fsync
        self.early_writeback = early_writeback
        if spare_files < 0:
            raise ValueError(f"filesystem tier spare_files: expected a count >= 0, got {spare_files!r}")
        self.spare_files = spare_files
        self._spares: deque[tuple[Path, float]] = deque()  # set-aside files and when, oldest first
        self.resume_after_s = resume_after_s
        self.rescan_every = rescan_every
        self.low_watermark = low_watermark
        if not 0.0 <= pin_budget <= 1.0:
            raise ValueError(f"filesystem tier pin_budget: expected a fraction in [0, 1], got {pin_budget!r}")
        self.pin_budget = pin_budget
        self.clock = clock
        self.stats = FsStats()
        self._paused_at: float | None = None
        self._writes_since_scan = 0
        self._usage = self._scan()[0]
        self._reader: ReadAhead[tuple[os.stat_result, memoryview, str | None]] = ReadAhead(self._read_one)

    # -- naming ---------------------------------------------------------------------------------------------

    def path_of(self, name: str) -> Path:
        return self.root / check_name(name)

    @property
    def paused(self) -> bool:
        """True while offload is paused by a full disk (and the retry delay has not passed)."""
        return self._paused_at is not None and self.clock() - self._paused_at < self.resume_after_s

    # -- reads ----------------------------------------------------------------------------------------------

    def contains(self, name: str) -> bool:
        """Whether a file for `name` exists (unverified: `get` verifies)."""
        return os.path.exists(self.path_of(name))

    def get(self, name: str) -> bytearray | None:
        """The verified payload of block `name` in a buffer of its own, or None (see `read`)."""
        view = self.read(name)
        return None if view is None else bytearray(view)

    def read(self, name: str, then: Sequence[str] = ()) -> memoryview | None:
        """The verified payload of block `name` as a view into one of this tier's read buffers, valid until the
        next `read` on this FsTier; None if missing, corrupt or truncated (then removed). No allocation per hit:
        a fresh 2 MiB buffer per block costs hundreds of page faults, more than reading the block did.

        `then` names the blocks the caller will read next (a prefix run): their files are read now, a few at a
        time on other threads, so the disk works on them while this block is checksummed (see fs_reader.py)."""
        path = self.path_of(name)
        ahead = [check_name(n) for n in then]
        try:
            try:
                st, data, problem = self._reader.get(name, ahead)
            except FileNotFoundError:
                problem = "missing"
            if problem is not None:
                # The result may come from a read ahead, of the file as it was then: one set aside and rewritten
                # (see `_retire`), replaced, or written since reads differently now; only a second read, now,
                # tells damage (or absence) from change.
                st, data, problem = self._reader.get(name)
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        except OSError as exc:
            log.warning("filesystem tier: reading %s failed: %s", path, exc)
            self.stats.misses += 1
            return None
        if problem is not None:
            if problem == "truncated":
                self.stats.truncated += 1
            else:
                self.stats.corrupt += 1
            log.warning("filesystem tier: %s is %s; removed, treated as a miss", path, problem)
            self._unlink_if_same(path, st)
            return None
        try:
            os.utime(path)  # LRU by mtime: a hit makes the block young again
        except FileNotFoundError:
            self.stats.misses += 1  # removed since it was read ahead: gone for every other reader too
            return None
        except OSError:
            pass
        payload = data[HEADER_SIZE:]
        self.stats.reads += 1
        self.stats.read_bytes += len(payload)
        return payload

    def queued_reads(self) -> list[str]:
        """Blocks read ahead and not yet asked for, oldest first."""
        return self._reader.queued()

    def _read_one(self, name: str, buf: AlignedBuffer) -> tuple[os.stat_result, memoryview, str | None]:
        """Read and check one block file (on a reader thread): its stat, its bytes, what is wrong with it."""
        st, data = read_whole(self.root / name, buf)
        problem = _verify(name, data[:HEADER_SIZE], data[HEADER_SIZE:]) if len(data) >= HEADER_SIZE else "truncated"
        return st, data, problem

    def _unlink_if_same(self, path: Path, st: os.stat_result) -> None:
        """Remove a bad file unless a writer has meanwhile renamed a fresh one over it."""
        try:
            now = os.stat(path)
            if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                os.unlink(path)
                self._usage = max(0, self._usage - st.st_size)
        except FileNotFoundError:
            pass

    # -- writes ---------------------------------------------------------------------------------------------

    def put(self, name: str, payload: bytes, pinned: bool = False) -> tuple[PutStatus, list[str]]:
        """Publish block `name`; returns the status and the names evicted to stay under the cap.

        A `pinned` block is evicted only after every unpinned one (within `pin_budget` of the capacity; the
        oldest pinned bytes beyond it fall back to LRU). Pinned files are read-only (mode 0444): every pod
        sharing the directory sees the pin in the `stat` its size scan already makes, with no index to keep."""
        path = self.path_of(name)
        if os.path.exists(path):
            self.stats.exists += 1
            if pinned:
                try:
                    os.chmod(path, _PINNED_MODE)  # an unpinned copy becomes pinned; a raced removal is a no-op
                except FileNotFoundError:
                    pass
            return PutStatus.EXISTS, []
        if self.paused:
            self.stats.paused_skips += 1
            return PutStatus.PAUSED, []
        header = block_header(name, payload, self.checksum)
        tmp = self.root / f"{_TMP_PREFIX}{name}.{os.getpid()}.{secrets.token_hex(4)}"
        mode = _PINNED_MODE if pinned else _FILE_MODE
        try:
            reused = self._claim_spare(tmp)
            if reused:
                os.chmod(tmp, _FILE_MODE)  # writable again: it may have held a pinned (read-only) block
                fd = os.open(tmp, os.O_WRONLY)
            else:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            try:
                self._write(fd, [header, payload])
                if reused:
                    os.ftruncate(fd, HEADER_SIZE + len(payload))  # the old block may have been longer
                    os.fchmod(fd, mode)
                if self.fsync:
                    os.fsync(fd)
                elif self.early_writeback:
                    _start_writeback(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            _remove_quietly(tmp)
            if exc.errno in _DISK_FULL:
                self._pause(exc)
                return PutStatus.PAUSED, []
            self.stats.write_errors += 1
            log.warning("filesystem tier: writing %s failed: %s", path, exc)
            return PutStatus.FAILED, []
        if self._paused_at is not None:
            log.info("filesystem tier %s: writing again", self.root)
            self._paused_at = None
        self.stats.writes += 1
        self.stats.write_bytes += len(payload)
        self._usage += HEADER_SIZE + len(payload)
        self._writes_since_scan += 1
        evicted: list[str] = []
        if self._writes_since_scan >= self.rescan_every or self._usage > self.capacity_bytes:
            evicted = self.enforce_cap(keep=name)
        return PutStatus.STORED, evicted

    def flush(self, names: Iterable[str]) -> int:
        """Make the files of blocks `names` durable (fdatasync); returns how many were flushed (a block another
        pod evicted meanwhile is skipped). The files are flushed concurrently: one at a time, each waits for its
        own few-MiB write and journal commit with the disk otherwise idle, which ran at 0.45 of dd's speed on a
        virtio disk; in flight together they reached 1.15 (bench/bench_kvtiers.py (c))."""
        fds: list[int] = []
        try:
            for name in names:
                try:
                    fds.append(os.open(self.path_of(name), os.O_RDONLY))
                except FileNotFoundError:
                    continue
            if len(fds) > 1:
                with ThreadPoolExecutor(min(_FLUSH_THREADS, len(fds))) as pool:
                    list(pool.map(os.fdatasync, fds))
            elif fds:
                os.fdatasync(fds[0])
            return len(fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _write(self, fd: int, parts: list[bytes | memoryview]) -> None:
        """Write all of `parts` to `fd` in order with `writev`, so the payload is never copied into a joined
        buffer (the one place bytes hit the disk; tests inject failures here)."""
        views = [memoryview(p).cast("B") for p in parts]
        while views:
            n = os.writev(fd, views)
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if views:
                views[0] = views[0][n:]

    def _pause(self, exc: OSError) -> None:
        self.stats.enospc += 1
        self._drop_spares()  # their space is wanted now
        if self._paused_at is None:
            msg = (
                f"kvtiers: filesystem tier {self.root}: disk full ({errno.errorcode.get(exc.errno, exc.errno)}); "
                "offload paused, serving continues"
            )
            warnings.warn(msg, KVTierWarning, stacklevel=3)
            log.warning(msg)
        self._paused_at = self.clock()

    def remove(self, name: str) -> bool:
        path = self.path_of(name)
        self._reader.discard(name)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return False
        if not self._retire(path):
            return False
        self._usage = max(0, self._usage - size)
        return True

    def _retire(self, path: Path) -> bool:
        """Take a block file out of the directory; False if it was gone already. It is renamed aside (up to
        `spare_files`) for a later `put` to rewrite, else unlinked: rewriting an allocated file skips block
        allocation, and on a thin-provisioned or discard-mounted disk the free-then-allocate cycle of unlink
        and create ran 2-9x slower than rewriting in place (bench/bench_kvtiers.py (c)). To readers it is gone
        either way; one that opened it before sees a changed file, which fails its checksum and is read again."""
        if len(self._spares) < self.spare_files and self._paused_at is None and _own_file(path):
            spare = self.root / f"{_TMP_PREFIX}spare.{os.getpid()}.{secrets.token_hex(4)}"
            try:
                os.rename(path, spare)
            except FileNotFoundError:
                return False
            except OSError:
                pass  # unlink it instead
            else:
                try:
                    os.utime(spare)  # young again: scans remove temp files older than _STALE_TMP_S
                except OSError:
                    pass
                self._spares.append((spare, self.clock()))
                return True
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def _claim_spare(self, tmp: Path) -> bool:
        """Rename the oldest set-aside file to `tmp` (the oldest: any reader of its old block is long done);
        False if there is none left. One set aside for half the stale age is removed instead: a scan may be
        about to remove it as a stale temp file, under the writer's feet."""
        while self._spares:
            spare, since = self._spares.popleft()
            if self.clock() - since > _STALE_TMP_S / 2:
                _remove_quietly(spare)
                continue
            try:
                os.rename(spare, tmp)
            except FileNotFoundError:
                continue  # a scan removed it as stale after all
            return True
        return False

    def _drop_spares(self) -> None:
        while self._spares:
            _remove_quietly(self._spares.popleft()[0])

    # -- capacity -------------------------------------------------------------------------------------------

    def _scan(self) -> tuple[int, list[tuple[float, int, str, bool]]]:
        """(total bytes, [(mtime, size, name, pinned)]) of the block files; stale temp files are cleaned up."""
        total = 0
        files: list[tuple[float, int, str, bool]] = []
        now = time.time()
        with os.scandir(self.root) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.name.startswith(_TMP_PREFIX):
                    if now - st.st_mtime > _STALE_TMP_S:
                        _remove_quietly(Path(entry.path))
                    continue
                if NAME_RE.fullmatch(entry.name) is None or not entry.is_file(follow_symlinks=False):
                    continue  # not ours: never counted, never touched
                total += st.st_size
                files.append((st.st_mtime, st.st_size, entry.name, not st.st_mode & stat.S_IWUSR))
        return total, files

    def usage_bytes(self) -> int:
        """Bytes of block files in the directory right now (all pods' writes)."""
        self._usage = self._scan()[0]
        return self._usage

    def enforce_cap(self, keep: str | None = None) -> list[str]:
        """Evict files until the directory is under `low_watermark` of the cap: least recently used first,
        pinned files (the newest `pin_budget` of the capacity of them) last."""
        self._writes_since_scan = 0
        total, files = self._scan()
        self._usage = total
        if total <= self.capacity_bytes:
            return []
        target = int(self.capacity_bytes * self.low_watermark)
        evicted: list[str] = []
        for _mtime, size, name in self._eviction_order(files):
            if total <= target:
                break
            if name == keep:
                continue
            self._reader.discard(name)
            if self._retire(self.root / name):
                evicted.append(name)
                self.stats.evictions += 1
            # else another pod evicted it first; it is gone either way
            total -= size
        self._usage = max(0, total)
        if evicted and self._paused_at is not None:
            self._paused_at = None  # space was freed: try writing again
        return evicted

    def _eviction_order(self, files: list[tuple[float, int, str, bool]]) -> list[tuple[float, int, str]]:
        budget = int(self.capacity_bytes * self.pin_budget)
        protected: list[tuple[float, int, str]] = []
        lru: list[tuple[float, int, str]] = []
        for mtime, size, name, pinned in sorted(files, key=lambda f: -f[0]):  # newest first
            if pinned and size <= budget:
                budget -= size
                protected.append((mtime, size, name))
            else:
                lru.append((mtime, size, name))
        return sorted(lru) + sorted(protected)


_FLUSH_THREADS = 16  # fdatasyncs in flight in `flush` (they wait on the disk, not on the GIL)
_FILE_MODE = 0o644
_PINNED_MODE = 0o444  # read-only marks a pinned block (see FsTier.put)


def _verify(name: str, header: bytes | bytearray, payload: memoryview) -> str | None:
    """None if `header` + `payload` are a whole, intact file for block `name`, else what is wrong with it."""
    magic, version, algo, length, digest = _HEADER.unpack_from(header)
    fn = _BY_ID.get(algo)
    if magic != MAGIC or version != VERSION or fn is None:
        return "corrupt"
    if len(payload) < length:
        return "truncated"
    if len(payload) > length:
        return "corrupt"
    if fn(name, payload) != digest:
        return "corrupt"
    return None


def _start_writeback(fd: int) -> None:
    """Start writing `fd`'s dirty pages to disk now, without waiting (Linux `sync_file_range(WRITE)`). Left to
    the kernel, a block's pages sit dirty until a flush or the 30 s timer, then go out all at once while the
    disk idled meanwhile: 64 MiB of blocks written then flushed ran at 1 273 MB/s, with each file's write-back
    started as it was written at 1 988 MB/s (dd: 1 169; virtio disk, same run; bench/bench_kvtiers.py (c))."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # advice only: an error here (EINVAL, EIO) is
        # not checked; a real I/O error surfaces at flush, as it would have without this call


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range, or None where there is none (macOS, non-glibc without it)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range() if sys.platform.startswith("linux") else None
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start write-out of dirty pages in the range, do not wait


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _own_file(path: Path) -> bool:
    """Whether this process's user owns `path`: only such a file is set aside for rewriting (a shared tier
    directory may hold another pod's files, which renaming allows but reopening for writing does not)."""
    if not hasattr(os, "geteuid"):
        return True
    try:
        return os.stat(path).st_uid == os.geteuid()
    except OSError:
        return False
