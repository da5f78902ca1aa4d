"""LoRA adapters inside the engine: vLLM's per-batch `max_loras` cap and the cost of bringing an adapter in.

vLLM's scheduler lets a waiting request with an adapter into the batch only while the batch's distinct
adapters stay within `max_loras` (otherwise it is skipped and waits; requests behind it may go). The model
runner then activates the batch's adapters in `max_loras` GPU slots (LRU): an adapter not in a slot is copied
in from the CPU cache (`max_cpu_loras`, LRU), and one not in the CPU cache is first read from storage. Those
copies lengthen the step that needs them: `bytes / bandwidth` for each.

The scheduler calls two things (a seam, nothing else of it knows about LoRA): `admits(name, active)` for a
waiting request, and `activate(active)` once per step, which returns the step's extra seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class LoraSlots:
    """Adapter residency of one engine: GPU slots and CPU cache (both LRU), and what loading costs."""

    max_loras: int = 1
    max_cpu_loras: int | None = None  # None: as vLLM, max_loras
    adapter_bytes: dict[str, int] = field(default_factory=dict)  # name -> weight bytes (registered adapters)
    adapter_ids: dict[str, int] = field(default_factory=dict)  # name -> vLLM's lora_int_id (KV events' lora_id)
    storage_gbps: float = 2.0  # storage -> host read bandwidth, GB/s (first use, or after CPU eviction)
    pcie_gbps: float = 32.0  # host -> device, GB/s (activation into a GPU slot)
    gpu: OrderedDict[str, None] = field(default_factory=OrderedDict)
    cpu: OrderedDict[str, None] = field(default_factory=OrderedDict)
    loads: int = 0  # activations into a GPU slot so far
    load_s: float = 0.0  # seconds they added to steps

    def __post_init__(self) -> None:
        if self.max_loras < 1:
            raise ValueError(f"max_loras: expected >= 1, got {self.max_loras}")
        if self.max_cpu_loras is None:
            self.max_cpu_loras = self.max_loras
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})")

    def register(self, name: str, lora_id: int, nbytes: int) -> None:
        """A served adapter (loaded at start or through the load endpoint); its weights come in on first use."""
        self.adapter_ids[name] = lora_id
        self.adapter_bytes[name] = max(0, int(nbytes))

    def admits(self, name: str, active: set[str]) -> bool:
        """May a request for adapter `name` join a batch already using the adapters in `active`?"""
        return name in active or len(active) < self.max_loras

    def activate(self, active: Iterable[str]) -> float:
        """Make the batch's adapters resident; the seconds the copies add to this step (0 when all are in)."""
        seconds = 0.0
        gpu, cpu = self.gpu, self.cpu
        for name in active:
            if name in gpu:
                gpu.move_to_end(name)
                continue
            size = self.adapter_bytes.get(name, 0)
            if name in cpu:
                cpu.move_to_end(name)
            else:
                seconds += size / (self.storage_gbps * 1e9)
                cpu[name] = None
                while len(cpu) > self.max_cpu_loras:  # type: ignore[operator]
                    cpu.popitem(last=False)
            seconds += size / (self.pcie_gbps * 1e9)
            gpu[name] = None
            while len(gpu) > self.max_loras:
                gpu.popitem(last=False)
            self.loads += 1
        self.load_s += seconds
        return seconds

    def forget(self, name: str) -> None:
        """An adapter was unloaded: drop it from both caches (a later load of that name reads it again)."""
        self.gpu.pop(name, None)
        self.cpu.pop(name, None)
        self.adapter_bytes.pop(name, None)
        self.adapter_ids.pop(name, None)
