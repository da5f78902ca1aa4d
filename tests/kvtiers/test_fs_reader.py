"""The read-ahead ring and whole-file reads (fs_reader): buffer lifetimes, dropped runs, direct I/O."""

from __future__ import annotations

import os
from concurrent.futures import Executor, Future

import pytest

from kvtiers.fs_reader import DIRECT_MIN_BYTES, AlignedBuffer, ReadAhead, read_whole
from tests.kvtiers.pagecache import dirty_or_skip, drop, page_state


class InlineExecutor(Executor):
    """Runs each read at once, at submit: the order of reads and buffer hand-outs becomes deterministic."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future, as a pool would
            f.set_exception(exc)
        return f


def stamping_reader(log: list[tuple[str, int]]):
    """A read_one that writes the name into its buffer and returns a view of it."""

    def read_one(name: str, buf: AlignedBuffer) -> memoryview:
        if name.startswith("missing"):
            raise FileNotFoundError(name)
        log.append((name, id(buf)))
        view = buf.view(len(name))
        view[:] = name.encode()
        return view

    return read_one


@pytest.mark.parametrize("executor", [InlineExecutor(), None], ids=["inline", "threads"])
def test_a_result_stays_intact_until_the_next_get_and_buffers_are_bounded(executor):
    log: list[tuple[str, int]] = []
    ra = ReadAhead(stamping_reader(log), depth=4, executor=executor)
    names = [f"block-{i:03d}" for i in range(40)]
    for i, name in enumerate(names):
        view = ra.get(name, names[i + 1 : i + 6])  # asks for 5 ahead: 4 are queued
        queued = ra.queued()
        assert len(queued) <= 4 and name not in queued
        for q in queued:  # everything queued is still to be read, and reads into other memory
            assert q in names[i + 1 :]
        assert bytes(view) == name.encode()  # not overwritten by the reads queued after it
    assert sorted(n for n, _ in log) == names  # each name read exactly once
    assert len({b for _, b in log}) <= 5  # depth + 1 buffers, reused


def test_a_run_the_caller_left_is_dropped_and_a_single_read_keeps_the_queue():
    log: list[tuple[str, int]] = []
    ra = ReadAhead(stamping_reader(log), depth=3, executor=InlineExecutor())
    assert bytes(ra.get("a", ["b", "c", "d"])) == b"a" and ra.queued() == ["b", "c", "d"]
    assert bytes(ra.get("x")) == b"x" and ra.queued() == ["b", "c", "d"]  # no run named: nothing dropped
    assert bytes(ra.get("p", ["q", "r"])) == b"p" and ra.queued() == ["q", "r"]  # b, c, d abandoned
    assert bytes(ra.get("b")) == b"b"  # read afresh
    assert [n for n, _ in log].count("b") == 2


def test_a_failed_read_reaches_the_caller_and_frees_its_buffer():
    log: list[tuple[str, int]] = []
    ra = ReadAhead(stamping_reader(log), depth=2, executor=InlineExecutor())
    ra.get("a", ["missing-1", "b"])
    with pytest.raises(FileNotFoundError):
        ra.get("missing-1", ["b", "c"])
    assert bytes(ra.get("b", ["c"])) == b"b" and bytes(ra.get("c")) == b"c"
    with pytest.raises(ValueError, match="read-ahead depth: expected a count >= 0, got -1"):
        ReadAhead(stamping_reader(log), depth=-1)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, DIRECT_MIN_BYTES - 1, DIRECT_MIN_BYTES, (2 << 20) + 32])
def test_read_whole_returns_the_exact_bytes_below_and_above_the_direct_io_size(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    buf = AlignedBuffer()
    st, view = read_whole(path, buf)
    assert st.st_size == size and bytes(view) == data
    again = tmp_path / "g"
    again.write_bytes(data[::-1])
    assert bytes(read_whole(again, buf)[1]) == data[::-1]  # the buffer is reused for the next file
    with pytest.raises(FileNotFoundError):
        read_whole(tmp_path / "none", buf)


def test_large_buffers_start_on_a_huge_page_boundary():
    view = AlignedBuffer().view((2 << 20) + 32)
    import ctypes

    assert ctypes.addressof(ctypes.c_char.from_buffer(view)) % (2 << 20) == 0 and len(view) == (2 << 20) + 32
    small = AlignedBuffer().view(100)
    assert ctypes.addressof(ctypes.c_char.from_buffer(small)) % os.sysconf("SC_PAGESIZE") == 0


def test_large_files_are_read_around_the_page_cache_small_ones_through_it(tmp_path):
    big, small = tmp_path / "big", tmp_path / "small"
    big.write_bytes(os.urandom(DIRECT_MIN_BYTES))
    small.write_bytes(os.urandom(DIRECT_MIN_BYTES - 1))
    expected = {path: path.read_bytes() for path in (big, small)}
    for path in (big, small):
        drop(path)
        assert page_state(path)["cache"] == 0
        assert bytes(read_whole(path, AlignedBuffer())[1]) == expected[path]
    assert page_state(big)["cache"] == 0  # direct I/O: straight from the disk into the buffer
    assert page_state(small)["cache"] > 0  # a small file is cheaper from the cache


def test_a_large_file_the_page_cache_holds_whole_is_read_from_it(tmp_path):
    """Read from memory: its dirty pages stay dirty. A direct read would have had them written first."""
    path = tmp_path / "f"
    data = os.urandom(1 << 20)
    path.write_bytes(data)  # dirty in the page cache, nothing written back yet
    dirty = dirty_or_skip(path)
    assert bytes(read_whole(path, AlignedBuffer())[1]) == data
    assert page_state(path)["dirty"] == dirty
