"""The filesystem tier on a real directory: integrity, names, capacity, full disk, concurrent writers."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from kvtiers.fs_reader import DIRECT_MIN_BYTES, ReadAhead
from kvtiers.fs_tier import HEADER_SIZE, FsTier, KVTierWarning, PutStatus, check_name
from tests.kvtiers.pagecache import dirty_or_skip, page_state
from tests.kvtiers.test_fs_reader import InlineExecutor

REPO = Path(__file__).resolve().parents[2]
A = "00000000000000aa"
B = "00000000000000bb"


def payload(n: int = 4096, seed: int = 1) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


def test_round_trip_and_second_writer_sees_exists(tmp_path):
    fs = FsTier(tmp_path, 1 << 20)
    assert fs.put(A, payload()) == (PutStatus.STORED, [])
    assert fs.get(A) == payload()
    assert fs.put(A, payload()) == (PutStatus.EXISTS, [])
    assert fs.get(B) is None and fs.stats.misses == 1
    assert (tmp_path / A).stat().st_size == HEADER_SIZE + 4096
    assert sorted(os.listdir(tmp_path)) == [A]  # no temp files left behind


@pytest.mark.parametrize(
    "name",
    ["../" + A, A + "/../x", "/etc/passwd", A.upper(), "abc", "g" * 16, A + "\x00", "", A + ".tmp", "." + A, "a" * 129],
)
def test_path_tricks_are_rejected(tmp_path, name):
    fs = FsTier(tmp_path / "d", 1 << 20)
    for call in (lambda: fs.put(name, b"x"), lambda: fs.get(name), lambda: fs.contains(name), lambda: fs.remove(name)):
        with pytest.raises(ValueError, match="block name must be 16-128 lowercase hex digits"):
            call()
    assert not (tmp_path / "d").exists() or os.listdir(tmp_path / "d") == []
    with pytest.raises(ValueError):
        check_name(123)  # type: ignore[arg-type]


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[HEADER_SIZE + 100] ^= 0x01
    elif how == "truncate":
        data = data[: len(data) - 10]
    elif how == "short_header":
        data = data[:7]
    elif how == "magic":
        data[0:4] = b"XXXX"
    elif how == "trailing":
        data += b"junk"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "how, counter",
    [
        ("flip", "corrupt"),
        ("magic", "corrupt"),
        ("trailing", "corrupt"),
        ("truncate", "truncated"),
        ("short_header", "truncated"),
    ],
)
@pytest.mark.parametrize("size", [4096, 1 << 20], ids=["page-cache", "direct-io"])
def test_damaged_file_is_a_counted_miss_and_removed(tmp_path, how, counter, size):
    assert (size >= DIRECT_MIN_BYTES) == (size == 1 << 20)
    fs = FsTier(tmp_path, 1 << 24)
    fs.put(A, payload(size))
    _damage(tmp_path / A, how)
    assert fs.get(A) is None
    assert getattr(fs.stats, counter) == 1
    assert not (tmp_path / A).exists()  # removed: the next reader cannot be served it either
    assert fs.get(A) is None and fs.stats.misses == 1
    assert fs.put(A, payload(size)) == (PutStatus.STORED, [])  # and it can be written again
    assert fs.get(A) == payload(size)


def test_damage_found_by_a_read_ahead_is_counted_when_the_block_is_asked_for(tmp_path):
    fs = FsTier(tmp_path, 1 << 24)
    fs.put(A, payload(1 << 20, 1))
    fs.put(B, payload(1 << 20, 2))
    _damage(tmp_path / B, "flip")
    assert fs.read(A, [B]) == payload(1 << 20, 1) and fs.stats.corrupt == 0  # B checked on a reader thread
    assert fs.read(B) is None and fs.stats.corrupt == 1 and not (tmp_path / B).exists()


@pytest.mark.parametrize("checksum", ["xxh3", "crc32", "blake2b"])
def test_misplaced_file_fails_its_checksum(tmp_path, checksum):
    fs = FsTier(tmp_path, 1 << 20, checksum=checksum)
    fs.put(A, payload())
    shutil.copy(tmp_path / A, tmp_path / B)  # a valid file under the wrong name
    assert fs.get(B) is None and fs.stats.corrupt == 1


def test_size_cap_evicts_least_recently_used(tmp_path):
    size = HEADER_SIZE + 1000
    fs = FsTier(tmp_path, 5 * size, low_watermark=1.0)
    names = [f"{i:016x}" for i in range(5)]
    for t, n in enumerate(names):
        fs.put(n, payload(1000, t))
        os.utime(tmp_path / n, (1000 + t, 1000 + t))
    fs.get(names[0])  # a hit makes block 0 the youngest
    status, evicted = fs.put(f"{9:016x}", payload(1000))
    assert status is PutStatus.STORED
    assert evicted == [names[1]]
    assert fs.usage_bytes() <= 5 * size and fs.stats.evictions == 1
    assert fs.get(names[0]) is not None


def test_pods_with_different_checksums_read_each_other(tmp_path):
    FsTier(tmp_path, 1 << 20, checksum="blake2b").put(A, payload())
    crc = FsTier(tmp_path, 1 << 20)
    assert crc.get(A) == payload()
    with pytest.raises(ValueError, match="checksum: expected one of xxh3, crc32, blake2b"):
        FsTier(tmp_path, 1 << 20, checksum="md5")


def test_foreign_and_temp_files_are_never_counted_or_evicted(tmp_path):
    (tmp_path / "README").write_text("not a block")
    fs = FsTier(tmp_path, 1 << 20)
    fs.put(A, payload())
    assert fs.usage_bytes() == HEADER_SIZE + 4096
    fs.enforce_cap()
    assert (tmp_path / "README").exists()


class FullDiskTier(FsTier):
    """Injected writer error: the disk is full after `room` writes."""

    room = 1

    def _write(self, fd, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= 1
        super()._write(fd, data)


def test_disk_full_injected_pauses_offload_keeps_serving(tmp_path):
    now = [0.0]
    fs = FullDiskTier(tmp_path, 1 << 20, resume_after_s=10.0, clock=lambda: now[0])
    assert fs.put(A, payload())[0] is PutStatus.STORED
    with pytest.warns(KVTierWarning, match="disk full .*offload paused, serving continues"):
        assert fs.put(B, payload())[0] is PutStatus.PAUSED
    assert fs.paused and fs.stats.enospc == 1
    assert fs.put("00000000000000cc", payload())[0] is PutStatus.PAUSED  # skipped without touching the disk
    assert fs.stats.paused_skips == 1 and fs.stats.enospc == 1
    assert fs.get(A) == payload()  # serving goes on
    assert sorted(os.listdir(tmp_path)) == [A]  # no partial or temp file left
    now[0] = 11.0  # retry after the delay: space was freed meanwhile
    fs.room = 1
    assert not fs.paused
    assert fs.put(B, payload())[0] is PutStatus.STORED
    assert fs.get(B) == payload()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root; the injected-error test covers ENOSPC")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_on_a_real_tiny_tmpfs(tiny_tmpfs):
    fs = FsTier(tiny_tmpfs, 100 << 20)  # cap far above the 256 KiB device: the disk fills first
    stored = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(200):
            status, _ = fs.put(f"{i:016x}", payload(16 << 10, i))
            if status is PutStatus.STORED:
                stored += 1
            elif status is PutStatus.PAUSED:
                break
    assert fs.stats.enospc == 1 and fs.paused
    assert 0 < stored < 200
    assert sum(issubclass(w.category, KVTierWarning) for w in caught) == 1
    assert not [n for n in os.listdir(tiny_tmpfs) if n.startswith(".tmp.")]  # partial write cleaned up
    for i in range(stored):  # everything written before the disk filled is still served, intact
        assert fs.get(f"{i:016x}") == payload(16 << 10, i)


WRITER = textwrap.dedent(
    """
    import json, sys
    from kvtiers.fs_tier import FsTier
    root, names, rounds = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    fs = FsTier(root, 1 << 30)
    def payload(name):
        return (name.encode() * 4000)[:64 << 10]
    bad = 0
    for _ in range(rounds):
        for n in names:
            fs.remove(n)  # race the other writers: remove and re-publish the same blocks
            fs.put(n, payload(n))
            got = fs.get(n)
            if got is not None and got != payload(n):
                bad += 1
    print(json.dumps({"bad": bad, "corrupt": fs.stats.corrupt, "truncated": fs.stats.truncated}))
    """
)


def test_concurrent_writers_of_the_same_blocks(tmp_path):
    names = [f"{i:016x}" for i in range(8)]
    import json

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), json.dumps(names), "25"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs)
    assert results == [{"bad": 0, "corrupt": 0, "truncated": 0}] * 4
    fs = FsTier(tmp_path, 1 << 30)
    for n in names:
        assert fs.get(n) == (n.encode() * 4000)[: 64 << 10]
    left = sorted(os.listdir(tmp_path))
    spares = _spares(tmp_path)
    assert [n for n in left if n not in spares] == names  # every write's temp file was renamed or removed
    assert len(spares) <= 4 * fs.spare_files  # what is left is set aside for reuse, within each writer's bound
    assert fs.stats.corrupt == 0


def test_read_serves_a_view_of_one_reused_buffer_and_get_a_buffer_of_its_own(tmp_path):
    fs = FsTier(tmp_path, 1 << 22)
    fs.put(A, payload(64 << 10, 1))
    fs.put(B, payload(4096, 2))
    kept = fs.get(A)
    first = fs.read(A)
    assert first == payload(64 << 10, 1) and kept == payload(64 << 10, 1)
    second = fs.read(B)
    assert second == payload(4096, 2) and second.obj is first.obj  # the same scratch memory, no allocation
    assert kept == payload(64 << 10, 1)  # get's buffer is its own: later reads leave it alone
    assert fs.stats.reads == 3 and fs.stats.read_bytes == 2 * (64 << 10) + 4096


def test_read_with_read_ahead_reads_the_next_files_and_tolerates_missing_ones(tmp_path):
    fs = FsTier(tmp_path, 1 << 22)
    names = [f"{i:016x}" for i in range(1, 6)]
    for i, n in enumerate(names):
        fs.put(n, payload(8192, i))
    missing = "00000000000000ff"
    for i, n in enumerate(names):
        assert fs.read(n, names[i + 1 : i + 4] + [missing]) == payload(8192, i)
        assert missing in fs.queued_reads() and n not in fs.queued_reads()
    assert fs.queued_reads() == [missing]  # every block was asked for: only the missing one stays queued
    assert fs.stats.misses == 0 and fs.stats.reads == 5  # a queued name with no file is not a miss; a read is
    assert fs.read(missing) is None and fs.stats.misses == 1 and fs.queued_reads() == []


def test_a_block_removed_after_it_was_read_ahead_is_a_miss(tmp_path):
    """Another pod evicts a block between its read-ahead and the read: the bytes in memory are not served."""
    fs = FsTier(tmp_path, 1 << 22)
    fs.put(A, payload(8192, 1))
    fs.put(B, payload(8192, 2))
    assert fs.read(A, [B]) == payload(8192, 1) and fs.queued_reads() == [B]
    os.unlink(tmp_path / B)  # behind this FsTier's back, as another pod's eviction would
    assert fs.read(B) is None and fs.stats.misses == 1


def test_short_reads_and_writes_are_completed(tmp_path, monkeypatch):
    """preadv/writev may move fewer bytes than asked (signals, network filesystems): the loops finish the job,
    for a small file through the page cache and for a large one read with direct I/O."""
    real_preadv, real_writev = os.preadv, os.writev
    calls = []

    def short_preadv(fd, bufs, offset):
        calls.append(offset)
        return real_preadv(fd, [memoryview(bufs[0])[:1000]], offset)

    def short_writev(fd, bufs):
        return real_writev(fd, [memoryview(bufs[0])[:777]])

    for size in (10_000, 300_000):
        monkeypatch.setattr(os, "writev", short_writev)
        fs = FsTier(tmp_path / str(size), 1 << 22)
        assert fs.put(A, payload(size, 3))[0] is PutStatus.STORED
        monkeypatch.setattr(os, "writev", real_writev)
        assert os.path.getsize(fs.root / A) == HEADER_SIZE + size
        monkeypatch.setattr(os, "preadv", short_preadv)
        calls.clear()
        assert fs.read(A) == payload(size, 3) and fs.get(A) == payload(size, 3)
        assert len(calls) > 2 * (size // 1000)  # every read went through the short preadv, many times
        monkeypatch.setattr(os, "preadv", real_preadv)


def test_a_file_longer_than_its_header_says_is_corrupt(tmp_path):
    fs = FsTier(tmp_path, 1 << 20)
    fs.put(A, payload())
    with open(tmp_path / A, "ab") as f:
        f.write(b"extra")
    assert fs.read(A) is None and fs.stats.corrupt == 1 and not (tmp_path / A).exists()


def _flood_from_another_process(root: Path, capacity: int, n: int) -> None:
    """Another pod (same profile: same cap and pin budget): its own FsTier on the same directory writes `n`
    unpinned 4 KiB blocks."""
    code = textwrap.dedent(
        f"""
        from kvtiers.fs_tier import FsTier
        fs = FsTier({str(root)!r}, {capacity}, rescan_every=1, pin_budget=0.25)
        for i in range({n}):
            fs.put(format(0x1000 + i, "016x"), bytes(4096))
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("pinned", [True, False])
def test_pinned_blocks_survive_another_pods_flood_and_lru_ones_do_not(tmp_path, pinned):
    cap = 16 * (HEADER_SIZE + 4096)
    fs = FsTier(tmp_path, cap, pin_budget=0.25)
    head = [format(0xA0 + i, "016x") for i in range(3)]  # 3 of 16 slots: within a 0.25 budget
    for name in head:
        fs.put(name, payload(), pinned=pinned)
    _flood_from_another_process(tmp_path, cap, 40)  # it knows of the pins only from the files
    left = set(os.listdir(tmp_path))
    assert set(head) <= left if pinned else not set(head) & left
    assert fs.get(head[0]) == (payload() if pinned else None)


def test_pins_beyond_the_budget_fall_back_to_lru_oldest_first(tmp_path):
    cap = 16 * (HEADER_SIZE + 4096)
    fs = FsTier(tmp_path, cap, pin_budget=0.25)  # room for 4 pinned files
    pins = [format(0xA0 + i, "016x") for i in range(6)]
    for i, name in enumerate(pins):
        fs.put(name, payload())
        fs.put(name, payload(), pinned=True)  # an existing file becomes pinned
        os.utime(tmp_path / name, (1000 + i, 1000 + i))  # oldest first
    _flood_from_another_process(tmp_path, cap, 40)
    assert [n for n in pins if (tmp_path / n).exists()] == pins[2:]  # the two oldest pins went as LRU
    with pytest.raises(ValueError, match="pin_budget: expected a fraction in"):
        FsTier(tmp_path, cap, pin_budget=1.5)


def test_flush_makes_the_named_blocks_durable_and_skips_gone_ones(tmp_path):
    fs = FsTier(tmp_path, 1 << 20)
    names = [format(0xB0 + i, "016x") for i in range(5)]
    for name in names:
        fs.put(name, payload())
    os.unlink(tmp_path / names[0])  # another pod evicted it meanwhile
    assert fs.flush(names) == 4 and fs.flush([]) == 0
    assert all(fs.get(n) == payload() for n in names[1:])


@pytest.mark.parametrize("early", [True, False])
def test_put_hands_the_file_to_the_disk_at_once_unless_told_not_to(tmp_path, early):
    """Early write-back: no page of a just-written block is left dirty (all written or under write-back); without
    it the kernel holds them dirty for its own flush (30 s or memory pressure), which this test would outrun."""
    fs = FsTier(tmp_path, 1 << 24, early_writeback=early)
    fs.put(A, payload(1 << 20))
    state = page_state(tmp_path / A)
    if early:
        assert state["dirty"] == 0 and state["cache"] > 0
    else:
        assert dirty_or_skip(tmp_path / A) > 0
    assert fs.flush([A]) == 1 and page_state(tmp_path / A)["dirty"] == 0 and fs.get(A) == payload(1 << 20)


def _spares(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root) if n.startswith(".tmp.spare."))


def test_removed_files_are_set_aside_and_rewritten_in_place_by_later_puts(tmp_path):
    fs = FsTier(tmp_path, 1 << 24, spare_files=2)
    names = [f"{i:016x}" for i in range(1, 5)]
    for i, n in enumerate(names):
        fs.put(n, payload(8192, i), pinned=(i == 0))
    inodes = {n: (tmp_path / n).stat().st_ino for n in names}
    for n in names:
        assert fs.remove(n)
        assert not fs.contains(n) and fs.get(n) is None  # gone for readers at once
    assert len(_spares(tmp_path)) == 2  # two kept (the first two removed), the others unlinked
    assert fs.usage_bytes() == 0  # set-aside files are not blocks
    fs.put(B, payload(100, 7))  # shorter than the file it reuses
    fs.put(A, payload(4096, 8), pinned=True)
    assert {(tmp_path / B).stat().st_ino, (tmp_path / A).stat().st_ino} == {inodes[names[0]], inodes[names[1]]}
    assert _spares(tmp_path) == []
    assert fs.get(B) == payload(100, 7) and (tmp_path / B).stat().st_size == HEADER_SIZE + 100
    assert fs.get(A) == payload(4096, 8)
    assert (tmp_path / B).stat().st_mode & 0o777 == 0o644  # was the pinned block's read-only file
    assert (tmp_path / A).stat().st_mode & 0o777 == 0o444
    assert fs.put("00000000000000cc", payload())[0] is PutStatus.STORED  # no spare left: a new file
    assert fs.get("00000000000000cc") == payload()


def test_set_aside_files_go_stale_like_temp_files_and_on_a_full_disk(tmp_path):
    fs = FullDiskTier(tmp_path, 1 << 24, spare_files=4)
    fs.room = 3
    for n in (A, B, "00000000000000cc"):
        fs.put(n, payload())
    fs.remove(A)
    fs.remove(B)
    old = _spares(tmp_path)[0]
    os.utime(tmp_path / old, (1, 1))  # as if set aside long ago
    FsTier(tmp_path, 1 << 24).usage_bytes()  # any pod's scan removes stale temp files
    assert len(_spares(tmp_path)) == 1
    with pytest.warns(KVTierWarning):
        assert fs.put("00000000000000dd", payload())[0] is PutStatus.PAUSED  # the disk is full
    assert _spares(tmp_path) == []  # the space they held is wanted
    fs.room = 1
    fs.remove("00000000000000cc")  # while paused: unlinked, not set aside
    assert _spares(tmp_path) == []


@pytest.mark.parametrize("then", ["damaged", "missing"])
def test_a_file_replaced_after_its_read_ahead_is_read_again(tmp_path, then):
    """A read-ahead saw B damaged (or not there yet); another pod writes it anew before B is asked for: the
    stale outcome is not trusted, the file is read again and served."""
    fs = FsTier(tmp_path, 1 << 24)
    fs._reader = ReadAhead(fs._read_one, executor=InlineExecutor())  # the read-ahead done before the rewrite
    other_pod = FsTier(tmp_path, 1 << 24)
    fs.put(A, payload(8192, 1))
    if then == "damaged":
        fs.put(B, payload(8192, 2))
        _damage(tmp_path / B, "flip")
    assert fs.read(A, [B]) == payload(8192, 1)  # B read ahead
    if then == "damaged":
        os.unlink(tmp_path / B)
    other_pod.put(B, payload(8192, 2))
    assert fs.read(B) == payload(8192, 2)  # the file read now is good
    assert fs.stats.corrupt == 0 and fs.stats.misses == 0 and (tmp_path / B).exists()


def test_a_file_set_aside_for_half_the_stale_age_is_removed_not_reused(tmp_path):
    """A scan removes temp files older than five minutes: one about to go stale is not handed to a writer."""
    now = [0.0]
    fs = FsTier(tmp_path, 1 << 24, clock=lambda: now[0])
    fs.put(A, payload(4096, 1))
    fs.put(B, payload(4096, 1))
    for t, name in ((0.0, A), (151.0, B)):
        now[0] = t
        fs.remove(name)
    assert len(_spares(tmp_path)) == 2
    watch = {n: tmp_path / f"watch-{i}" for i, n in enumerate(_spares(tmp_path))}
    for n, w in watch.items():
        os.link(tmp_path / n, w)  # a second name for each set-aside file: shows whether a put rewrites it
    now[0] = 200.0  # A's file was set aside 200 s ago, B's 49 s ago
    assert fs.put("00000000000000cc", payload(4096, 9))[0] is PutStatus.STORED
    rewritten = [w for w in watch.values() if w.read_bytes()[HEADER_SIZE:] == payload(4096, 9)]
    assert len(rewritten) == 1 and _spares(tmp_path) == []  # the old one removed, the young one rewritten
    assert fs.get("00000000000000cc") == payload(4096, 9)
