"""From a Profile to the processes of a local stack: command lines, ports, environments, generated files.

Pure: nothing here starts a process or touches the network (port choice happens before, in `up`).
Simulated pods of one pool share a process (`sim_gpu serve --pods N`, consecutive ports) so a 4-pod stack
costs one Python interpreter, not four; real engines get one process per pod from their own builder.
Ports: pod i, data-parallel rank r of a pool listing gets HTTP port `pod_base + k` and KV-events port
`events_base + k`, k counting endpoints in profile order — the same offset-by-rank rule vLLM applies.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from kvtiers.hashing import seed_from_env
from llmdctl.local.flow import router_config
from llmdctl.local.state import ADMIN_KEY_FILE, ComponentState, PodState
from llmdctl.profile import PoolSpec, Profile, shipped_router_configs
from llmdctl.simtokenizer import BUILTIN

NAMED_CONFIGS_DIR = "router-configs"  # next to router-config.yaml: the configs the admin API may switch to by name

ROLE_LABEL = "llm-d.ai/role"
SIM_PODS_PER_PROCESS = 8  # one interpreter serves up to this many simulated pods (cores are scarce)


class PlanError(ValueError):
    """The profile cannot be laid out locally (e.g. an engine that is not available); one line."""


@dataclass(frozen=True)
class PortLayout:
    router: int
    pod_base: int
    events_base: int


@dataclass
class Plan:
    profile: Profile
    ports: PortLayout
    components: list[ComponentState] = field(default_factory=list)
    pods: list[PodState] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> content, written before start
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. a feature this build lacks)
    model: str = ""  # the model name clients send

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.router}"

    def all_ports(self) -> list[int]:
        return sorted({p for c in self.components for p in c.ports})


def endpoint_count(profile: Profile) -> int:
    """HTTP endpoints (= KV-event publishers) the profile needs: replicas x data-parallel ranks, all pools."""
    return sum(p.replicas * max(1, p.data_parallel_size) for p in profile.pools)


def _python() -> str:
    return sys.executable or "python3"


def sim_argv(
    profile: Profile,
    pool: PoolSpec,
    first_port: int,
    first_events_port: int,
    pods: int,
    home: Path,
    events_bind: bool = True,
) -> list[str]:
    """`python -m sim_gpu serve` for `pods` pods of `pool` on consecutive ports from `first_port`.

    KV events: with `events_bind` the pods bind `tcp://*:PORT` as vLLM does by default (what a cluster needs);
    without it they connect to `tcp://127.0.0.1:PORT`, where the router binds its SUB — the local target uses
    this so nothing listens beyond loopback.
    """
    argv = [
        _python(),
        "-m",
        "sim_gpu",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(first_port),
        "--pods",
        str(pods),
        "--model",
        profile.model,
        "--hardware",
        pool.hardware,
        "--model-profile",
        pool.model_profile,
        "--role",
        pool.role,
        "--block-size",
        str(pool.block_size),
        "--max-num-seqs",
        str(pool.max_num_seqs),
        "--max-num-batched-tokens",
        str(pool.max_num_batched_tokens),
        "--scheduling-policy",
        pool.scheduling_policy,
        "--max-model-len",
        str(pool.max_model_len),
        "--tp",
        str(pool.tensor_parallel_size),
        "--data-parallel-size",
        str(pool.data_parallel_size),
        "--gpu-memory-utilization",
        str(pool.gpu_memory_utilization),
        "--prefix-caching-hash-algo",
        pool.hash_algo,
        "--time-scale",
        str(pool.time_scale),
        "--network",
        profile.network,
    ]
    argv += ["--hash-seed", seed_from_env()]  # explicit, so engine and router hash alike whatever their environments
    argv += ["--enable-prompt-tokens-details"]  # usage reports cached tokens (bench, demos); vLLM's flag of that name
    argv += ["--enable-scale-out"]  # the Renderer API, which peer routers' prefix policies call (vLLM's flag)
    if profile.tokenizer and profile.tokenizer != BUILTIN:
        argv += ["--tokenizer", profile.tokenizer]
    if pool.num_gpu_blocks is not None:
        argv += ["--num-gpu-blocks", str(pool.num_gpu_blocks)]
    if pool.kv_events:
        host = "*" if events_bind else "127.0.0.1"
        argv += ["--kv-events-endpoint", f"tcp://{host}:{first_events_port}"]
    if profile.kv_tiers is not None:
        tiers = dict(_builtins(profile.kv_tiers))
        fs = tiers.get("filesystem")
        if fs and not os.path.isabs(fs["path"]):
            fs["path"] = str(home / "run" / fs["path"])
        argv += ["--kv-tiers", json.dumps(tiers, separators=(",", ":"))]
    return argv + list(pool.args)


def _builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


def sim_components(
    profile: Profile, pool: PoolSpec, pod_base: int, events_base: int, home: Path, logs: Path
) -> tuple[list[ComponentState], list[PodState]]:
    """Sim processes for one pool, each hosting up to SIM_PODS_PER_PROCESS pods, and the pods' endpoints."""
    dp = max(1, pool.data_parallel_size)
    comps: list[ComponentState] = []
    pods: list[PodState] = []
    for first in range(0, pool.replicas, SIM_PODS_PER_PROCESS):
        n = min(SIM_PODS_PER_PROCESS, pool.replicas - first)
        name = (
            f"sim-{pool.name}"
            if pool.replicas <= SIM_PODS_PER_PROCESS
            else f"sim-{pool.name}-{first // SIM_PODS_PER_PROCESS}"
        )
        port0 = pod_base + first * dp
        events0 = events_base + first * dp
        ports = list(range(port0, port0 + n * dp))
        for i in range(n):
            for r in range(dp):
                k = i * dp + r
                pods.append(
                    PodState(
                        name=f"{pool.name}-{first + i}" + (f"-r{r}" if dp > 1 else ""),
                        pool=pool.name,
                        role=pool.role,
                        port=port0 + k,
                        process=name,
                        rank=r,
                        kv_events=f"tcp://127.0.0.1:{events0 + k}" if pool.kv_events else None,
                        kv_topic=f"kv@127.0.0.1:{port0 + k}@{profile.model}"
                        if pool.kv_events
                        else None,  # sim_gpu's default topic
                        block_size=pool.block_size,
                        hash_seed=seed_from_env(),
                        kv_events_bind=bool(pool.kv_events),
                    )
                )
        comps.append(
            ComponentState(
                name=name,
                kind="sim",
                argv=sim_argv(profile, pool, port0, events0, n, home, events_bind=False),
                ports=ports + ([*range(events0, events0 + n * dp)] if pool.kv_events else []),
                health=[f"http://127.0.0.1:{p}/health" for p in ports],
                log=str(logs / f"{name}.log"),
                env=dict(pool.env),  # e.g. VLLM_ALLOW_RUNTIME_LORA_UPDATING, read by the simulator as by vLLM
            )
        )
    return comps, pods


def served_name(model: str) -> str:
    """What clients put in `model` for a real engine: a local directory's name, or the hub id as given."""
    path = Path(model).expanduser()
    return path.name if path.is_dir() else model


def vllm_pool_components(
    profile: Profile, pool: PoolSpec, pod_base: int, events_base: int, logs: Path, first_index: int, total: int
) -> tuple[list[ComponentState], list[PodState]]:
    """One real vLLM process per replica, built by the engine helper (llmdctl.engines.vllm_local).

    `profile.model` is the model to load (a local directory or a hub id); pods serve it as `served_name()`.
    """
    try:
        from llmdctl.engines.vllm_local import vllm_components
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        raise PlanError(f"--engine vllm: engine support is not available ({exc})") from None
    if pool.data_parallel_size > 1:
        raise PlanError(
            f"pool {pool.name}: data_parallel_size {pool.data_parallel_size} is not supported with --engine vllm on "
            "the local target; use --set pools.N.data_parallel_size=1"
        )
    ports = list(range(pod_base, pod_base + pool.replicas))
    zports = list(range(events_base, events_base + pool.replicas))
    try:
        served = msgspec.structs.replace(profile, model=served_name(profile.model))
        vpods = vllm_components(
            served, pool, ports, zports, model=profile.model, first_index=first_index, total_instances=total
        )
    except Exception as exc:  # the engine helper reports missing venv/model as exceptions with a message
        raise PlanError(f"--engine vllm: {exc}") from None
    comps, pods = [], []
    for vp in vpods:
        env = {k: v for k, v in vp.env.items() if os.environ.get(k) != v}
        unset = sorted(k for k in os.environ if k not in vp.env)
        comps.append(
            ComponentState(
                name=vp.name,
                kind="vllm",
                argv=vp.argv,
                ports=[vp.port] + ([vp.kv_events_port] if pool.kv_events else []),
                health=[vp.health_url],
                log=str(logs / f"{vp.name}.log"),
                env=env,
                env_unset=unset,
            )
        )
        # vLLM's ZMQ publisher binds only wildcard (tcp://*) and ipc endpoints and *connects* to any other; a local
        # pod publishes to tcp://127.0.0.1:Z (loopback: the events carry prompt token ids), so the router must
        # bind it, as for the simulator. With both sides connecting no event ever arrived and the precise index
        # ran on speculative credits alone.
        pods.append(
            PodState(
                name=vp.name,
                pool=pool.name,
                role=pool.role,
                port=vp.port,
                process=vp.name,
                kv_events=vp.kv_events_endpoint if pool.kv_events else None,
                kv_topic=vp.topic if pool.kv_events else None,
                block_size=vp.block_size,
                hash_seed=vp.hash_seed,
                kv_events_bind=bool(pool.kv_events),
            )
        )
    return comps, pods


def engine_components(
    profile: Profile,
    pool: PoolSpec,
    pod_base: int,
    events_base: int,
    home: Path,
    logs: Path,
    first_index: int,
    total: int,
) -> tuple[list[ComponentState], list[PodState]]:
    """The hook: dispatch one pool to its engine's builder (sim in-tree, vLLM from llmdctl.engines)."""
    engine = profile.engine_of(pool)
    if engine == "sim":
        return sim_components(profile, pool, pod_base, events_base, home, logs)
    if engine == "vllm":
        return vllm_pool_components(profile, pool, pod_base, events_base, logs, first_index, total)
    raise PlanError(f"pool {pool.name}: unknown engine {engine!r}; expected sim or vllm")


def endpoints_document(
    pods: list[PodState], model: str, pool_labels: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """The router's endpoints file (llm-d file-discovery style): address, name, labels, KV events, DP rank.
    Each pod carries its pool's profile labels (`pool_labels` by pool name), as its Kubernetes pod would."""
    ranked = {p.process for p in pods if p.rank}
    out = []
    for pod in pods:
        labels = {**(pool_labels or {}).get(pod.pool, {})}
        labels.update({ROLE_LABEL: pod.role, "llm-d.ai/pool": pod.pool, "llm-d.ai/model": model})
        entry: dict[str, Any] = {"name": pod.name, "address": f"127.0.0.1:{pod.port}", "labels": labels}
        if pod.process in ranked:
            entry["dpRank"] = pod.rank
        if pod.kv_events:
            # sim pods connect to the router's loopback SUB; real vLLM pods bind 127.0.0.1 and the router connects
            entry["kvEvents"] = {"endpoint": pod.kv_events, "topic": pod.kv_topic or "", "bind": pod.kv_events_bind}
        out.append(entry)
    return {"endpoints": out}


def router_argv(
    profile: Profile, port: int, config_path: Path, endpoints_path: Path, pods: list[PodState] | None = None
) -> list[str]:
    """`python -m router_lite serve`; the pods' hash seed and block size are passed when they all agree."""
    argv = [
        _python(),
        "-m",
        "router_lite",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(config_path),
        "--endpoints-file",
        str(endpoints_path),
        "--request-timeout",
        str(profile.router.request_timeout_s),
        "--header-timeout",
        str(profile.router.header_timeout_s),
        "--idle-timeout",
        str(profile.router.idle_timeout_s),
        "--admin-key-file",
        str(config_path.parent / ADMIN_KEY_FILE),  # written by `up` (ensure_admin_key)
        "--queue-size",
        str(profile.router.queue_size),
        "--queue-ttl",
        str(profile.router.queue_ttl_s),
        "--named-configs",
        str(config_path.parent / NAMED_CONFIGS_DIR),  # the shipped profiles' router configs
    ]
    for name, priority in sorted(profile.router.objectives.items()):
        argv += ["--objective", f"{name}={priority}"]
    tokenizer = router_tokenizer(profile)
    if tokenizer:
        argv += ["--tokenizer", tokenizer]
    seeds = {p.hash_seed for p in pods or [] if p.hash_seed is not None}
    sizes = {p.block_size for p in pods or [] if p.block_size is not None}
    algos = {pool.hash_algo for pool in profile.pools if pool.replicas}
    if len(seeds) == 1:
        argv += ["--hash-seed", seeds.pop()]
    if len(sizes) == 1:
        argv += ["--block-size", str(sizes.pop())]
    if len(algos) == 1:
        argv += ["--hash-algo", algos.pop()]
    return argv


def router_tokenizer(profile: Profile) -> str | None:
    """The tokenizer the router loads: its own setting, else the pods' when its config tokenizes requests.

    A router whose plugins need no tokens loads none: loading a 32k-entry tokenizer costs ~0.2 s of CPU at
    start, and with one the router would tokenize every request for nothing. Switched later to a config that
    needs tokens, it asks the pods' /tokenize: the same ids, one round trip slower.
    """
    if profile.router.tokenizer:
        return profile.router.tokenizer
    if not profile.tokenizer or profile.tokenizer == BUILTIN:
        return None
    from router_lite.config import load_config

    return profile.tokenizer if load_config(profile.router.config, origin="router.config").uses_tokens() else None


def build_plan(profile: Profile, ports: PortLayout, home: Path) -> Plan:
    """Every component of the stack with its argv, ports, health URLs and log; generated files included."""
    logs = home / "logs"
    run = home / "run"
    uses_vllm = any(profile.engine_of(p) == "vllm" and p.replicas for p in profile.pools)
    plan = Plan(profile=profile, ports=ports, model=served_name(profile.model) if uses_vllm else profile.model)
    offset = 0
    vllm_total = sum(p.replicas for p in profile.pools if profile.engine_of(p) == "vllm")
    vllm_index = 0
    for pool in profile.pools:
        if pool.replicas == 0:
            continue
        comps, pods = engine_components(
            profile, pool, ports.pod_base + offset, ports.events_base + offset, home, logs, vllm_index, vllm_total
        )
        if profile.engine_of(pool) == "vllm":
            vllm_index += pool.replicas
        offset += pool.replicas * max(1, pool.data_parallel_size)
        plan.components += comps
        plan.pods += pods
    if not plan.pods:
        raise PlanError(f"profile {profile.name}: every pool has 0 replicas; nothing to serve")
    config_path = run / "router-config.yaml"
    endpoints_path = run / "endpoints.yaml"
    plan.files[str(config_path)] = yaml.safe_dump(router_config(profile), sort_keys=False)
    for name, config in shipped_router_configs().items():  # what POST /admin/profile {"profile": NAME} may name
        plan.files[str(run / NAMED_CONFIGS_DIR / f"{name}.yaml")] = yaml.safe_dump(config, sort_keys=False)
    endpoints_doc = endpoints_document(plan.pods, plan.model, {pool.name: pool.labels for pool in profile.pools})
    plan.files[str(endpoints_path)] = yaml.safe_dump(endpoints_doc, sort_keys=False)
    plan.components.append(
        ComponentState(
            name="router",
            kind="router",
            argv=router_argv(profile, ports.router, config_path, endpoints_path, plan.pods),
            ports=[ports.router],
            # readiness: the router has scraped every pod healthy, so the first request finds a full pool
            health=[f"http://127.0.0.1:{ports.router}/health?min_healthy={len(endpoints_doc['endpoints'])}"],
            log=str(logs / "router.log"),
        )
    )
    if vllm_total:  # real vLLM pods: the router hashes with their seed and tokenizes with their tokenizer
        from llmdctl.engines.vllm_local import router_args

        extra = router_args(profile)
        argv = plan.components[-1].argv
        for flag in {a for a in extra if a.startswith("--")} & set(argv):  # theirs win over the generic ones
            i = argv.index(flag)
            del argv[i : i + 2]
        argv += extra
    return plan
