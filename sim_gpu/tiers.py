"""KV tiers below a simulated pod's GPU (`sim serve --kv-tiers`): parse the spec, build and attach one store
per pod, type each request's blocks, and read the per-tier figures `/metrics` exposes.

The spec is a profile's `kv_tiers` section (the keys `llmdctl up` passes as JSON), inline or in a file::

    {"cpu_blocks": 8192, "pcie_gbps": 32, "filesystem": {"path": "kv-shared", "capacity_mb": 1024,
     "bandwidth_gbps": 5}, "policies": {"system_prompt": {"pin": true}}}

Every pod of every process pointed at the same filesystem path shares that tier: one file per block, so what
any pod offloaded any other pod loads. A relative path is resolved against `base_dir` (the spec file's
directory, else the working directory); `llmdctl up` passes absolute paths under its run directory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvtiers.engine_hook import EngineTiers, attach_tiers, build_store
from kvtiers.fs_tier import HEADER_SIZE
from kvtiers.policy import PolicyConfig
from kvtiers.store import FilesystemTier, MemoryTier
from kvtiers.types import OVERRIDE_FIELD, request_block_types

FLAG = "--kv-tiers"
_KEYS = ("cpu_blocks", "pcie_gbps", "filesystem", "policies")
_FS_KEYS = ("path", "capacity_mb", "bandwidth_gbps")
PAYLOAD_BYTES = 16 << 10  # bytes written per block file (see attach_pod_tiers)
_FS_SCAN_EVERY_S = 1.0  # the shared directory is rescanned for occupancy at most this often per pod


def parse_spec(value: str) -> tuple[dict[str, Any], str | None]:
    """(spec, base_dir) from `--kv-tiers`: inline JSON, or a JSON/YAML file (relative paths then resolve
    against the file's directory). ValueError naming the flag and key on bad input."""
    text = value.strip()
    base: str | None = None
    if not text.startswith("{"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError(f"{FLAG}: expected inline JSON or a readable file, got {value!r} (no such file)")
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"{FLAG}: cannot read {path}: {exc.strerror}") from None
        base = str(path.resolve().parent)
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{FLAG}: {path} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
        if isinstance(doc, Mapping) and "kv_tiers" in doc and set(doc) - set(_KEYS):
            doc = doc["kv_tiers"]  # a whole profile: take its kv_tiers section
    else:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{FLAG}: not valid JSON: {exc}") from None
    return validate_spec(doc), base


def validate_spec(doc: Any) -> dict[str, Any]:
    """The spec with defaults, or a one-line ValueError naming `--kv-tiers.<key>`."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{FLAG}: expected a mapping of {', '.join(_KEYS)}, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise ValueError(f"{FLAG}.{unknown[0]}: unknown key; expected one of {', '.join(_KEYS)}")
    spec: dict[str, Any] = {
        "cpu_blocks": doc.get("cpu_blocks", 0) or 0,
        "pcie_gbps": doc.get("pcie_gbps", 32.0),
        "filesystem": None,
        "policies": doc.get("policies") or {},
    }
    if isinstance(spec["cpu_blocks"], bool) or not isinstance(spec["cpu_blocks"], int) or spec["cpu_blocks"] < 0:
        raise ValueError(f"{FLAG}.cpu_blocks: expected an integer >= 0, got {doc.get('cpu_blocks')!r}")
    _positive(spec["pcie_gbps"], "pcie_gbps")
    fs = doc.get("filesystem")
    if fs is not None:
        if not isinstance(fs, Mapping):
            raise ValueError(f"{FLAG}.filesystem: expected a mapping of {', '.join(_FS_KEYS)}")
        unknown = sorted(set(fs) - set(_FS_KEYS))
        if unknown:
            raise ValueError(f"{FLAG}.filesystem.{unknown[0]}: unknown key; expected one of {', '.join(_FS_KEYS)}")
        if not isinstance(fs.get("path"), str) or not fs["path"]:
            raise ValueError(f"{FLAG}.filesystem.path: required (a directory shared by the pods)")
        out = {
            "path": fs["path"],
            "capacity_mb": fs.get("capacity_mb", 1024),
            "bandwidth_gbps": fs.get("bandwidth_gbps", 5.0),
        }
        if isinstance(out["capacity_mb"], bool) or not isinstance(out["capacity_mb"], int) or out["capacity_mb"] <= 0:
            raise ValueError(f"{FLAG}.filesystem.capacity_mb: expected a positive integer, got {out['capacity_mb']!r}")
        _positive(out["bandwidth_gbps"], "filesystem.bandwidth_gbps")
        spec["filesystem"] = out
    if not isinstance(spec["policies"], Mapping):
        raise ValueError(f"{FLAG}.policies: expected a mapping of block type to policy")
    try:
        PolicyConfig.from_config(spec["policies"], where=f"{FLAG}.policies")
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if spec["cpu_blocks"] == 0 and spec["filesystem"] is None:
        raise ValueError(f"{FLAG}: names no tier (cpu_blocks is 0 and there is no filesystem)")
    return spec


def _positive(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{FLAG}.{key}: expected a positive number, got {value!r}")


@dataclass
class TierFigures:
    """What `/metrics` shows about one pod's tiers (hits in tokens, as vLLM counts prefix hits)."""

    hit_tokens: dict[str, int]  # medium -> tokens loaded from it instead of recomputed
    blocks: dict[str, int]  # medium -> blocks held now (DISK: the whole shared directory)
    capacity: dict[str, int]  # medium -> capacity in blocks
    stored: dict[str, int]
    evicted: dict[str, int]
    load_s: float
    loads: int
    dropped: int
    bad_reads: int
    fs: dict[str, int]  # filesystem counters: corrupt, truncated, enospc, paused_skips, write_errors
    fs_paused: bool
    skipped: int = 0  # evicted blocks a typed policy kept out of the lower tiers (finished scratchpads)


class PodTiers:
    """One pod's store and engine hook, with the request typing and metric reading the HTTP shell needs."""

    def __init__(self, hook: EngineTiers, count_tokens: Callable[[str], int]) -> None:
        self.hook = hook
        self.store = hook.store
        self.count_tokens = count_tokens
        self.typed = not self.store.policy.is_lru  # untyped (blind LRU) stores need no per-request typing
        self._fs_blocks = 0
        self._fs_scanned = -1e9
        self._fs_file_bytes: int | None = None

    def note_request(self, body: Mapping[str, Any], prompt: list[int], cache_salt: str | None) -> None:
        """Type the prompt's blocks from chat structure / `kv_block_type`; ValueError on a bad override."""
        if not self.typed:
            if body.get(OVERRIDE_FIELD) is not None:  # still reject a malformed override
                request_block_types(body, 0, self.store.block_size, self.count_tokens)
            return
        types = request_block_types(body, len(prompt), self.store.block_size, self.count_tokens)
        if types:
            self.hook.note_request(prompt, types, cache_salt)

    @property
    def num_cpu_blocks(self) -> int:
        return sum(t.capacity for t in self.store.tiers if isinstance(t, MemoryTier))

    def figures(self) -> TierFigures:
        s, c = self.store.stats, self.hook.counters
        blocks: dict[str, int] = {}
        capacity: dict[str, int] = {}
        fs_stats: dict[str, int] = {}
        paused = False
        for t in self.store.tiers:
            if isinstance(t, MemoryTier):
                blocks[t.medium] = len(t)
                capacity[t.medium] = t.capacity
            elif isinstance(t, FilesystemTier):
                now = time.monotonic()
                if now - self._fs_scanned >= _FS_SCAN_EVERY_S:
                    try:
                        self._fs_blocks = len(t)
                    except OSError:
                        pass
                    self._fs_scanned = now
                if self._fs_file_bytes is None:
                    self._fs_file_bytes = len(t.payload(0)) + HEADER_SIZE
                blocks[t.medium] = self._fs_blocks
                capacity[t.medium] = t.fs.capacity_bytes // self._fs_file_bytes
                st = t.fs.stats
                fs_stats = {
                    "corrupt": st.corrupt,
                    "truncated": st.truncated,
                    "enospc": st.enospc,
                    "paused_skips": st.paused_skips,
                    "write_errors": st.write_errors,
                }
                paused = t.fs.paused
        return TierFigures(
            hit_tokens={"CPU": c.hit_tokens_cpu, "DISK": c.hit_tokens_disk},
            blocks=blocks,
            capacity=capacity,
            stored={m: n for m, n in s.stored.items()},
            evicted={m: n for m, n in s.evicted.items()},
            load_s=c.load_s,
            loads=s.loads,
            dropped=s.dropped,
            bad_reads=s.bad_reads,
            fs=fs_stats,
            fs_paused=paused,
            skipped=s.skipped_eager,
        )


def attach_pod_tiers(
    engine: Any, spec: Mapping[str, Any], *, block_bytes: int, base_dir: str | None, count_tokens: Callable[[str], int]
) -> PodTiers:
    """Build one pod's store from `spec` and attach it below `engine`'s GPU pool."""
    # Files hold 16 KiB stand-in bytes per block (checksummed, real I/O): at time scale 1 the shell's file I/O
    # runs on the request path in wall time, and 64 KiB reads cost ~6x more here; the latency model still
    # prices the real `block_bytes`.
    store = build_store(
        spec,
        block_size=engine.config.block_size,
        block_bytes=block_bytes,
        base_dir=base_dir if base_dir is not None else os.getcwd(),
        payload_bytes=min(block_bytes, PAYLOAD_BYTES),
    )
    if store is None:  # validate_spec refuses specs without a tier; defensive
        raise ValueError(f"{FLAG}: names no tier")
    return PodTiers(attach_tiers(engine, store), count_tokens)
