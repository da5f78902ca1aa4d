"""LoRA adapters as vLLM 0.32 serves them: flags, `--lora-modules`, the load/unload endpoints, model cards.

`--enable-lora` with `--max-loras` (adapters in one batch), `--max-lora-rank`, `--max-cpu-loras` and
`--lora-modules name=path` (or vLLM's JSON form `{"name", "path", "base_model_name"}`) registers adapters at
start; `POST /v1/load_lora_adapter` / `/v1/unload_lora_adapter` exist only when
`VLLM_ALLOW_RUNTIME_LORA_UPDATING` is true, as in vLLM, and answer vLLM's messages and error types. An adapter
is a `model` name clients send; `/v1/models` lists it with `parent` = the base model.

The simulator has no weights: a path that exists locally is read for its `adapter_config.json` (rank `r`) and
weight file size; any other path is taken as a hub id (vLLM would download it) and sized from the model
profile at `--max-lora-rank`; a local-looking path (`/`, `./`, `~`) that does not exist is vLLM's
"No adapter found" (404). The engine side — max_loras per batch, load time — is sim_gpu/engine/lora.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim_gpu.api import APIError, model_card
from sim_gpu.engine.lora import LoraSlots
from sim_gpu.hw_profiles import ModelProfile

RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
SUPPORTED_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values
_LOCAL_PREFIXES = ("/", "./", "../", "~")


def runtime_updating_allowed(env: dict[str, str] | None = None) -> bool:
    """vLLM's envs.VLLM_ALLOW_RUNTIME_LORA_UPDATING: "1" or "true" (any case) turns the endpoints on."""
    return (os.environ if env is None else env).get(RUNTIME_ENV, "0").strip().lower() in ("1", "true")


@dataclass(frozen=True)
class LoraModule:
    """One `--lora-modules` entry."""

    name: str
    path: str
    base_model_name: str | None = None


def parse_lora_module(spec: str) -> LoraModule:
    """`name=path` or vLLM's JSON `{"name": ..., "path": ..., "base_model_name": ...}`; ValueError names the flag."""
    text = spec.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--lora-modules: invalid JSON {spec!r}: {exc.msg}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(obj.get("path"), str):
            raise ValueError(f'--lora-modules: expected {{"name": str, "path": str}}, got {spec!r}')
        base = obj.get("base_model_name")
        return LoraModule(obj["name"], obj["path"], base if isinstance(base, str) else None)
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"--lora-modules: expected name=path or a JSON object, got {spec!r}")
    return LoraModule(name.strip(), path.strip())


def estimated_bytes(model: ModelProfile, rank: int) -> int:
    """Weights of a rank-`rank` adapter on every attention and MLP projection (A: r x in, B: out x r)."""
    h, q = model.hidden_size, model.num_attention_heads * model.head_dim
    kv, inter = model.num_kv_heads * model.head_dim, model.intermediate_size
    per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h)  # q, k, v, o, gate, up, down
    return model.num_layers * rank * per_layer * model.dtype_bytes


@dataclass
class LoraConfig:
    """The LoRA flags of `sim serve` (vLLM's names)."""

    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    modules: list[LoraModule] = field(default_factory=list)

    def validate(self) -> None:
        if self.max_loras < 1:
            raise ValueError(f"--max-loras: expected >= 1, got {self.max_loras}")
        if self.max_lora_rank not in SUPPORTED_RANKS:
            raise ValueError(
                f"--max-lora-rank: expected one of {', '.join(map(str, SUPPORTED_RANKS))}, got {self.max_lora_rank}"
            )
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"--max-cpu-loras ({self.max_cpu_loras}) must be >= --max-loras ({self.max_loras})")
        names = [m.name for m in self.modules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"--lora-modules: adapter name {sorted(dup)[0]!r} given twice")


@dataclass
class Adapter:
    name: str
    path: str
    lora_id: int
    rank: int
    nbytes: int
    base_model_name: str


class LoraAdapters:
    """The adapters one pod serves (vLLM's OpenAIServingModels.lora_requests), feeding its engine's LoraSlots."""

    def __init__(self, cfg: LoraConfig, base_model: str, model: ModelProfile, slots: LoraSlots) -> None:
        self.cfg = cfg
        self.base_model = base_model
        self.model = model
        self.slots = slots
        self.adapters: dict[str, Adapter] = {}
        self._next_id = 0  # vLLM's lora_id_counter: ids start at 1, never reused
        for m in cfg.modules:
            try:
                self._add(m.name, m.path, m.base_model_name)
            except APIError as exc:  # a bad static module stops the start, as in vLLM
                raise ValueError(f"--lora-modules: {m.name}={m.path}: {exc.message}") from None

    def names(self) -> list[str]:
        return list(self.adapters)

    def _resolve(self, name: str, path: str) -> tuple[int, int]:
        """(rank, bytes) of the adapter at `path`, or vLLM's errors."""
        local = Path(path).expanduser()
        if local.exists():
            rank = self.cfg.max_lora_rank
            cfg_file = local / "adapter_config.json"
            if cfg_file.is_file():
                try:
                    rank = int(json.loads(cfg_file.read_text()).get("r", rank))
                except (ValueError, OSError, AttributeError):
                    raise APIError(400, f"Loading lora {name} failed: invalid {cfg_file}") from None
            weights = [p for p in local.glob("adapter_model.*") if p.is_file()] if local.is_dir() else [local]
            nbytes = sum(p.stat().st_size for p in weights) or estimated_bytes(self.model, rank)
        elif path.startswith(_LOCAL_PREFIXES):
            raise APIError(404, f"Loading lora {name} failed: No adapter found for {path}", err_type="NotFoundError")
        else:  # a hub id: vLLM would download it; sized as a max-rank adapter
            rank = self.cfg.max_lora_rank
            nbytes = estimated_bytes(self.model, rank)
        if rank > self.cfg.max_lora_rank:
            raise APIError(400, f"LoRA rank {rank} is greater than max_lora_rank {self.cfg.max_lora_rank}.")
        return rank, nbytes

    def _add(self, name: str, path: str, base: str | None) -> Adapter:
        rank, nbytes = self._resolve(name, path)
        self._next_id += 1
        adapter = Adapter(name, path, self._next_id, rank, nbytes, base or self.base_model)
        self.adapters[name] = adapter
        self.slots.register(name, adapter.lora_id, nbytes)
        return adapter

    def load(self, body: dict[str, Any]) -> str:
        """POST /v1/load_lora_adapter: `{lora_name, lora_path, load_inplace?}` -> vLLM's success text."""
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise APIError(400, "Both 'lora_name' and 'lora_path' must be provided.", err_type="InvalidUserInput")
        inplace = body.get("load_inplace") is True
        if name in self.adapters and not inplace:
            raise APIError(
                400,
                f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in place, "
                "set 'load_inplace' to True.",
                err_type="InvalidUserInput",
            )
        if inplace and name in self.adapters:
            self.slots.forget(name)  # new weights: the next use reads them again
        self._add(name, path, None)
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict[str, Any]) -> str:
        """POST /v1/unload_lora_adapter: `{lora_name}` -> vLLM's success text."""
        name = body.get("lora_name")
        if not isinstance(name, str) or not name:
            raise APIError(
                400, "'lora_name' needs to be provided to unload a LoRA adapter.", err_type="InvalidUserInput"
            )
        if name not in self.adapters:
            raise APIError(404, f"The lora adapter '{name}' cannot be found.", err_type="NotFoundError")
        del self.adapters[name]
        self.slots.forget(name)
        return f"Success: LoRA adapter '{name}' removed successfully."

    def cards(self, created: int) -> list[dict[str, Any]]:
        """/v1/models entries: vLLM lists each adapter with `root` = its path and `parent` = its base model."""
        return [model_card(a.name, created, a.path, a.base_model_name, None) for a in self.adapters.values()]
