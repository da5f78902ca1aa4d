"""The tiered store: write-behind offload, demotion, promotion, load costs, typed tiers, tier events."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kvtiers.fs_tier import FsTier
from kvtiers.kvevents import BlockRemoved, BlockStored, KVEventBatch, decode_payload, encode_payload
from kvtiers.policy import semantic_defaults
from kvtiers.store import (
    CostModel,
    FilesystemTier,
    MemoryTier,
    TieredStore,
    key_from_hex,
    key_hex,
    kv_bytes_per_block,
    synthetic_payload,
)
from kvtiers.types import BlockType

T = BlockType
REPO = Path(__file__).resolve().parents[2]
MB = 1 << 20
COST = CostModel(block_bytes=2 * MB, pcie_gbps=20.0, disk_read_gbps=4.0, disk_write_gbps=2.0, disk_latency_s=0.0)


def store(cpu=2, disk=10, policy=None, **kw) -> TieredStore:
    return TieredStore(
        [MemoryTier("CPU", cpu, policy), MemoryTier("DISK", disk, shared=True)], COST, policy=policy, **kw
    )


def media_events(events):
    return [(type(e).__name__, e.medium, list(e.block_hashes)) for e in events]


def test_kv_bytes_and_costs():
    assert kv_bytes_per_block(32, 8, 128, 16) == 2 * MB  # Llama-3.1-8B, bf16, 16-token blocks
    assert COST.load_seconds(["CPU"] * 10) == pytest.approx(10 * 2 * MB / 20e9)
    assert COST.load_seconds(["DISK"] * 10) == pytest.approx(10 * 2 * MB / 4e9)
    assert COST.store_seconds("DISK", 3) == pytest.approx(3 * 2 * MB / 2e9)
    with pytest.raises(ValueError, match="cost model pcie_gbps"):
        CostModel(block_bytes=1, pcie_gbps=0)


def test_hex_names_round_trip():
    assert key_hex(0xAB) == "00000000000000ab" and key_from_hex("00000000000000ab") == 0xAB
    assert key_from_hex(key_hex(b"\x01" * 32)) == b"\x01" * 32
    with pytest.raises(ValueError):
        key_hex(-1)


def test_demotion_cpu_to_disk_and_promotion_on_hit():
    s = store(cpu=2)
    s.offer([1, 2])
    assert [s.holds(h) for h in (1, 2)] == ["CPU", "CPU"]
    s.offer([3])  # CPU full: LRU block 1 is demoted to disk
    assert [s.holds(h) for h in (1, 2, 3)] == ["DISK", "CPU", "CPU"]
    assert media_events(s.take_events()) == [
        ("BlockStored", "CPU", [1, 2]),
        ("BlockRemoved", "CPU", [1]),
        ("BlockStored", "DISK", [1]),
        ("BlockStored", "CPU", [3]),
    ]
    look = s.lookup([1, 3, 99, 2])
    assert (look.num_blocks, look.media) == (2, ("DISK", "CPU"))
    assert look.load_s == pytest.approx(COST.load_seconds(["DISK", "CPU"]))
    got = s.load([1])
    assert got.media == ("DISK",) and s.stats.promoted == 1
    assert s.holds(1) == "CPU"  # promoted; its disk copy stays for other pods
    assert s.tiers[1].contains(1)
    assert s.stats.hits == {"DISK": 1}
    s.offer([1])  # evicted from GPU again: already in CPU, no new write
    assert s.stats.stored["CPU"] == 4


def test_write_behind_lands_after_the_transfer_time():
    s = store(cpu=4)
    per_block = COST.store_seconds("CPU")
    s.offer([1, 2], now=0.0)
    assert s.pending() == 2 and s.lookup([1], now=0.0).num_blocks == 0  # still in flight
    assert s.lookup([1, 2], now=per_block).num_blocks == 1  # the copies queue on one link
    assert s.lookup([1, 2], now=2 * per_block).num_blocks == 2
    assert s.pending() == 0


def test_events_are_wire_compatible():
    s = store(cpu=1)
    s.offer([10, 11])
    batch = KVEventBatch(ts=1.0, events=s.take_events())
    back = decode_payload(encode_payload(batch))
    assert [type(e) for e in back.events] == [BlockStored, BlockRemoved, BlockStored, BlockStored]
    assert [e.medium for e in back.events] == ["CPU", "CPU", "DISK", "CPU"]
    assert back.events[0].token_ids == [] and back.events[0].parent_block_hash is None


def test_throwaway_blocks_are_not_offloaded_and_pinned_blocks_outlive_a_flood():
    pol = semantic_defaults()
    typed = TieredStore([MemoryTier("CPU", 20, pol)], COST, policy=pol)
    lru = TieredStore([MemoryTier("CPU", 20)], COST)
    sysp = [f"s{i}" for i in range(4)]
    for st in (typed, lru):
        st.offer(sysp, [T.SYSTEM_PROMPT] * 4)
        st.offer(["r1", "r2"], [T.REASONING_BRANCH] * 2)
        for i in range(100):  # a flood of one-off blocks
            st.offer([f"o{i}"], [T.OTHER])
    assert typed.stats.skipped_eager == 2 and typed.holds("r1") is None
    assert typed.lookup(sysp).num_blocks == 4
    assert lru.lookup(sysp).num_blocks == 0
    assert lru.holds("r1") is None  # flooded out too, after taking CPU room


def test_replicated_types_are_written_through_and_prewarm_peers():
    pol = semantic_defaults()
    shared = MemoryTier("DISK", 100, shared=True)
    a = TieredStore([MemoryTier("CPU", 10, pol), shared], COST, policy=pol)
    b = TieredStore([MemoryTier("CPU", 10, pol), shared], COST, policy=pol)
    a.peers = [b]
    n = a.on_computed([1, 2, 3], [T.SYSTEM_PROMPT, T.TOOL_DEFINITION, T.CONVERSATION])
    assert n == 2
    assert a.holds(1) == "DISK" and a.holds(3) is None  # written through to the shared tier only
    assert b.holds(1) == "CPU" and b.holds(2) == "CPU"  # pre-warmed into the peer's CPU tier
    assert media_events(a.take_events()) == [("BlockStored", "DISK", [1, 2])]
    assert media_events(b.take_events()) == [("BlockStored", "CPU", [1, 2])]


def test_cross_pod_reuse_through_a_shared_tier_in_process():
    shared = MemoryTier("DISK", 100, shared=True)
    a = TieredStore([MemoryTier("CPU", 1), shared], COST)
    b = TieredStore([MemoryTier("CPU", 4), shared], COST)
    a.offer([1, 2, 3])  # pod A's CPU holds one block: 1 and 2 spill to the shared tier
    hit = b.lookup([1, 2, 3])
    assert (hit.num_blocks, hit.media) == (2, ("DISK", "DISK"))
    assert b.load([1, 2]).num_blocks == 2 and b.holds(1) == "CPU"


def fs_store(root: Path, cpu: int = 1, payload_size: int = 8192) -> TieredStore:
    fs = FilesystemTier(FsTier(root, 64 * MB), synthetic_payload(payload_size))
    return TieredStore([MemoryTier("CPU", cpu), fs], COST)


def test_cross_pod_reuse_through_the_filesystem_two_stores(tmp_path):
    a, b = fs_store(tmp_path), fs_store(tmp_path)
    a.offer([0x11, 0x22, 0x33])
    assert sorted(p.name for p in tmp_path.iterdir()) == [key_hex(0x11), key_hex(0x22)]
    got = b.load([0x11, 0x22, 0x33])
    assert got.media == ("DISK", "DISK") and b.stats.hits == {"DISK": 2}


def test_corrupt_file_ends_the_run_and_is_reported_removed(tmp_path):
    a = fs_store(tmp_path)
    a.offer([1, 2, 3])
    a.take_events()
    path = tmp_path / key_hex(2)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    b = fs_store(tmp_path, cpu=4)
    assert b.lookup([1, 2]).num_blocks == 2  # lookup only sees that files exist
    got = b.load([1, 2])
    assert got.num_blocks == 1 and b.stats.bad_reads == 1  # never served: the engine recomputes from block 2
    assert b.tiers[1].fs.stats.corrupt == 1 and not path.exists()
    assert ("BlockRemoved", "DISK", [2]) in media_events(b.take_events())


POD = textwrap.dedent(
    """
    import json, sys
    from kvtiers.fs_tier import FsTier
    from kvtiers.store import CostModel, FilesystemTier, MemoryTier, TieredStore, synthetic_payload
    root, role, hashes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    fs = FilesystemTier(FsTier(root, 1 << 26), synthetic_payload(8192))
    s = TieredStore([MemoryTier("CPU", 0), fs], CostModel(block_bytes=1 << 21))
    if role == "write":
        s.offer(hashes)
    got = s.load(hashes)
    ev = [[type(e).__name__, e.medium, len(e.block_hashes)] for e in s.take_events()]
    print(json.dumps({"media": list(got.media), "events": ev, "stats": fs.fs.stats.as_dict()}))
    """
)


def test_cross_pod_reuse_through_the_filesystem_two_processes(tmp_path):
    hashes = [0xA0 + i for i in range(6)]

    def pod(role: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-c", POD, str(tmp_path), role, json.dumps(hashes)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    a = pod("write")
    assert a["stats"]["writes"] == 6 and a["events"][0] == ["BlockStored", "DISK", 6]
    b = pod("read")
    assert b["media"] == ["DISK"] * 6 and b["stats"]["reads"] == 6 and b["stats"]["writes"] == 0


def test_filesystem_tier_writes_pinned_types_pinned_and_never_writes_evict_on_finish_types(tmp_path):
    from kvtiers.fs_tier import FsTier
    from kvtiers.policy import PolicyConfig
    from kvtiers.store import FilesystemTier, synthetic_payload
    from kvtiers.types import BlockType

    policy = PolicyConfig.from_config(
        {"system_prompt": {"pin": True, "pin_budget": 0.3}, "reasoning_branch": {"evict": "eager"}}
    )
    assert policy.pin_budget_total() == 0.3
    tier = FilesystemTier(FsTier(tmp_path, 1 << 20), synthetic_payload(1024), policy=policy)
    assert tier.write(0xA1, BlockType.SYSTEM_PROMPT)[0] and tier.write(0xA2, BlockType.CONVERSATION)[0]
    assert tier.write(0xA3, BlockType.REASONING_BRANCH) == (False, []) and tier.skipped_eager == 1
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {format(0xA1, "016x"): 0o444, format(0xA2, "016x"): 0o644}
