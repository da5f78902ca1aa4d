"""Kubernetes objects for a profile: pure functions from a `Profile` and `RenderOptions` to plain dicts.

The object shapes live as YAML templates in `manifests/templates/` (readable by users, diffable in review);
this module only fills them. A template string that is exactly `${name}` is replaced by any value (a list,
a mapping, a number; `None` removes the key), a string containing `${name}` gets the value's text. A
template variable nobody supplies is a bug and raises at once.

Every object carries `app.kubernetes.io/managed-by: llmdctl` and `llmd.ai/stack: NAME`: `down` on an
existing cluster deletes by exactly those labels. Model-server pods carry llm-d's labels
(`llm-d.ai/inferenceServing`, `llm-d.ai/model`, `llm-d.ai/role`), which the InferencePool and the router
select on; the router's own pod never carries `llm-d.ai/inferenceServing`, so no selector picks it.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from llmdctl import __version__
from llmdctl.paths import manifests_dir
from llmdctl.profile import PoolSpec, Profile

Target = Literal["kind", "kube", "kserve"]

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "llmdctl"
STACK_LABEL = "llmd.ai/stack"
POOL_LABEL = "llmd.ai/pool"
ROLE_LABEL = "llm-d.ai/role"
POOL_GROUP_LABEL = "llm-d.ai/pool"  # the router's per-pool grouping (speed learning), as local stacks label pods
SERVING_LABEL = "llm-d.ai/inferenceServing"
MODEL_LABEL = "llm-d.ai/model"
COMPONENT_LABEL = "app.kubernetes.io/component"

DEFAULT_IMAGE = f"llmdctl:{__version__}"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"  # the vLLM release the KV-event capture vectors come from
DEFAULT_EPP_IMAGE = "ghcr.io/llm-d/llm-d-inference-scheduler:v0.7.1"
DEFAULT_SIDECAR_IMAGE = "ghcr.io/llm-d/llm-d-routing-sidecar:v0.7.1"  # llm-d's P/D routing proxy (decode pods)
SIDECAR_VLLM_PORT = 8200  # decode vLLM behind the routing sidecar, as llm-d's P/D guide runs it
DEFAULT_NAMESPACE = "llmd"
SERVER_PORT = 8000  # model servers: rank r listens on SERVER_PORT + r (vLLM's and sim_gpu's rule)
ROUTER_PORT = 8000
KV_EVENTS_PORT = 5557  # vLLM's default ZMQ publisher port; rank r publishes on KV_EVENTS_PORT + r
MAX_TARGET_PORTS = 8  # InferencePool.spec.targetPorts maxItems
RUN_DIR = "/var/lib/llmd"  # the pods' writable state (emptyDir); root filesystems stay read-only
UID = 10001  # the llmdctl image's non-root user

_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")
_VAR = re.compile(r"\$\{([a-z_]+)\}")


class RenderError(ValueError):
    """A profile/option combination that cannot become valid Kubernetes objects; one line."""


@dataclass
class RenderOptions:
    """What the target adds to a profile. Defaults render a simulator stack for a kind cluster."""

    target: Target = "kind"
    namespace: str = DEFAULT_NAMESPACE
    stack: str | None = None  # label value and name prefix; default: the profile's name
    image: str = DEFAULT_IMAGE  # llmdctl image: router + simulator
    gateway: bool = False  # also render llm-d's upstream EPP, a Gateway and an HTTPRoute
    gateway_class: str = "istio"
    gpus: bool = False  # kind --gpus: real vLLM pods on nvidia.com/gpu with the nvidia RuntimeClass
    engine: str | None = None  # override every pool's engine ("sim" or "vllm")
    vllm_image: str = DEFAULT_VLLM_IMAGE
    epp_image: str = DEFAULT_EPP_IMAGE
    runtime_class: str | None = None  # pods of vLLM pools; default "nvidia" with gpus, else none
    hf_token_secret: str = "llm-d-hf-token"  # optional Secret with key HF_TOKEN for gated models
    # The router's API key. None: the output only references its Secret (renders stay byte-identical, no
    # key churn in GitOps); `up` creates it once with a random key and never replaces it. A value: the
    # Secret is rendered with it.
    router_api_key: str | None = None
    hash_seed: str = "42"  # vLLM pods' PYTHONHASHSEED, and the precise scorer's hashSeed to match it
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    monitoring: bool = False  # PodMonitor/ServiceMonitor objects (the cluster runs the Prometheus Operator)


@dataclass
class Rendered:
    """The objects in apply order, plus notes the user should read (one line each)."""

    stack: str
    namespace: str
    objects: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def by_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str) -> dict[str, Any]:
        for o in self.objects:
            if o["kind"] == kind and o["metadata"]["name"] == name:
                return o
        raise KeyError(f"{kind}/{name}")


# -- templates -------------------------------------------------------------------------------------------


def templates_dir() -> Path:
    return manifests_dir() / "templates"


def fill(node: Any, values: dict[str, Any], source: str) -> Any:
    """Substitute `${var}` in a loaded template (see the module docstring); drops keys whose value is None."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            filled = fill(v, values, source)
            if filled is not None:
                out[k] = filled
        return out
    if isinstance(node, list):
        return [x for x in (fill(v, values, source) for v in node) if x is not None]
    if isinstance(node, str):
        whole = _VAR.fullmatch(node)
        if whole:
            return _value(whole.group(1), values, source)
        return _VAR.sub(lambda m: str(_value(m.group(1), values, source)), node)
    return node


def _value(name: str, values: dict[str, Any], source: str) -> Any:
    if name not in values:
        raise KeyError(f"{source}: template variable ${{{name}}} has no value")
    return values[name]


def load_template(template: str, **values: Any) -> dict[str, Any]:
    path = templates_dir() / template
    doc = yaml.safe_load(path.read_text())
    return fill(doc, values, str(path))


# -- names and labels ------------------------------------------------------------------------------------


def dns_label(text: str, max_len: int = 63) -> str:
    """A DNS-1123 label from free text: lower case, [a-z0-9-], starting and ending alphanumeric."""
    out = _DNS_LABEL.sub("-", text.lower()).strip("-")
    out = re.sub(r"-{2,}", "-", out)[:max_len].strip("-")
    if not out:
        raise RenderError(f"{text!r}: cannot make a Kubernetes name from it; use letters and digits")
    return out


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends): models have slashes."""
    out = _LABEL_VALUE.sub("_", text)[:63].strip("_.-")
    return out


def common_labels(stack: str) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGER,
        STACK_LABEL: stack,
        "app.kubernetes.io/part-of": "llmdctl",
        "app.kubernetes.io/instance": stack,
    }


def stack_selector(stack: str) -> str:
    """The label selector that finds everything llmdctl applied for `stack` (what `down` deletes)."""
    return f"{MANAGED_BY}={MANAGER},{STACK_LABEL}={stack}"


def _label(obj: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    meta = obj.setdefault("metadata", {})
    meta["labels"] = {**labels, **(meta.get("labels") or {})}
    return obj


# -- security --------------------------------------------------------------------------------------------


def pod_security(uid: int = UID) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(read_only_root: bool = True) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# -- model servers ---------------------------------------------------------------------------------------


def _builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


def sim_args(profile: Profile, pool: PoolSpec) -> list[str]:
    """sim_gpu flags for one pod, from the local planner's builder so the two targets never drift."""
    from llmdctl.local.plan import sim_argv

    argv = sim_argv(profile, pool, SERVER_PORT, KV_EVENTS_PORT, 1, Path(RUN_DIR))
    args = argv[4:]  # drop "<python> -m sim_gpu serve"
    args[args.index("--host") + 1] = "0.0.0.0"
    return args


def vllm_args(profile: Profile, pool: PoolSpec) -> list[str]:
    """vLLM server flags for one GPU pod (the local engine builder's GPU flags, bound to all interfaces)."""
    from llmdctl.engines.vllm_local import vllm_pod_argv

    topic = f"kv@$(POD_IP):{SERVER_PORT}@{profile.model}"  # the kubelet expands $(POD_IP) from the env
    argv = vllm_pod_argv(
        "python3",
        profile.model,
        profile.model,
        SERVER_PORT,
        KV_EVENTS_PORT,
        topic,
        pool.block_size,
        None,
        pool.max_model_len,
        max_num_seqs=pool.max_num_seqs,
        max_num_batched_tokens=pool.max_num_batched_tokens,
        hash_algo=pool.hash_algo,
        kv_events=pool.kv_events,
        build="gpu",
        gpu_memory_utilization=pool.gpu_memory_utilization,
        tensor_parallel_size=pool.tensor_parallel_size,
        kv_events_host="*",  # the router runs in another pod
        scheduling_policy=pool.scheduling_policy,
    )
    args = argv[3:]  # drop "python3 -m vllm.entrypoints.openai.api_server"
    args[args.index("--host") + 1] = "0.0.0.0"
    # No --num-gpu-blocks-override: it is vLLM's testing flag and would cap a real GPU's KV cache at the
    # simulator's figure; on GPUs the cache is what --gpu-memory-utilization leaves.
    if pool.data_parallel_size > 1:
        args += ["--data-parallel-size", str(pool.data_parallel_size)]
    if pool.role in ("prefill", "decode"):
        args += [
            "--kv-transfer-config",
            json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"}, separators=(",", ":")),
        ]
    return args + list(pool.args)


def _ports(pool: PoolSpec) -> list[dict[str, Any]]:
    ports = []
    for r in range(max(1, pool.data_parallel_size)):
        ports.append({"name": "http" if r == 0 else f"http-r{r}", "containerPort": SERVER_PORT + r, "protocol": "TCP"})
    if pool.kv_events:
        for r in range(max(1, pool.data_parallel_size)):
            ports.append(
                {"name": "kv" if r == 0 else f"kv-r{r}", "containerPort": KV_EVENTS_PORT + r, "protocol": "TCP"}
            )
    return ports


def model_server_objects(
    profile: Profile, pool: PoolSpec, opts: RenderOptions, stack: str, namespace: str, notes: list[str]
) -> list[dict[str, Any]]:
    engine = opts.engine or ("vllm" if opts.gpus else profile.engine_of(pool))
    name = dns_label(f"{stack}-{pool.name}", 50)
    selector = {STACK_LABEL: stack, POOL_LABEL: dns_label(pool.name)}
    for key, value in pool.labels.items():
        if key in (STACK_LABEL, POOL_LABEL, POOL_GROUP_LABEL, SERVING_LABEL, ROLE_LABEL, MANAGED_BY):
            raise RenderError(f"pools[{pool.name}].labels: {key!r} is set by llmdctl; remove it")
    pod_labels = {
        **pool.labels,
        **common_labels(stack),
        "app.kubernetes.io/name": "vllm" if engine == "vllm" else "sim-gpu",
        COMPONENT_LABEL: "model-server",
        **selector,
        SERVING_LABEL: "true",
        MODEL_LABEL: label_value(profile.model),
        ROLE_LABEL: pool.role,
        POOL_GROUP_LABEL: dns_label(pool.name),
    }
    dp = max(1, pool.data_parallel_size)
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "HOME", "value": RUN_DIR},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    mounts = [{"name": "run", "mountPath": RUN_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": "run", "emptyDir": {"sizeLimit": "2Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    if engine == "vllm":
        if profile.model == "sim-model":
            raise RenderError(
                "real vLLM pods need a real model: pass --model (a Hugging Face id), e.g. --model Qwen/Qwen3-0.6B"
            )
        gpus = max(1, pool.tensor_parallel_size) * dp
        image, command, args = (
            opts.vllm_image,
            ["python3", "-m", "vllm.entrypoints.openai.api_server"],
            vllm_args(profile, pool),
        )
        env += [
            {"name": "HF_HOME", "value": f"{RUN_DIR}/hf"},
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            {"name": "DO_NOT_TRACK", "value": "1"},
            {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": opts.hf_token_secret, "key": "HF_TOKEN", "optional": True}},
            },
            {
                "name": "PYTHONHASHSEED",
                "value": opts.hash_seed,
            },  # seeds vLLM's block hashes; hashSeed in the EPP config
        ]
        env += [{"name": k, "value": v} for k, v in pool.env.items()]
        if pool.num_gpu_blocks:
            notes.append(
                f"pool {pool.name}: num_gpu_blocks ({pool.num_gpu_blocks}) sizes the simulator only; real vLLM pods "
                "size their KV cache from --gpu-memory-utilization"
            )
        resources = {
            "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": str(gpus)},
            "limits": {"memory": "64Gi", "nvidia.com/gpu": str(gpus)},
        }
        # torch/NCCL need a large /dev/shm; model weights and compile caches go to the emptyDir under RUN_DIR.
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        volumes = [
            {"name": "run", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
        ]
        # vLLM's image writes caches in places (triton, torch inductor, flashinfer) that move between releases.
        read_only_root, startup_failures = False, 360  # up to 30 min for a download + load
        # kind --gpus registers the nvidia handler itself; cloud clusters run GPU pods on their default runtime
        runtime_class = opts.runtime_class or ("nvidia" if opts.gpus and opts.target == "kind" else None)
    elif engine == "sim":
        image, command, args = opts.image, ["python", "-m", "sim_gpu", "serve"], sim_args(profile, pool)
        resources = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
        read_only_root, startup_failures, runtime_class = True, 24, None
    else:
        raise RenderError(f"pool {pool.name}: unknown engine {engine!r}; expected sim or vllm")
    if profile.kv_tiers is not None and profile.kv_tiers.filesystem is not None:
        notes.append(
            f"pool {pool.name}: the filesystem KV tier lives in each pod's emptyDir ({RUN_DIR}/run); "
            "sharing it across pods needs a ReadWriteMany volume"
        )
    deployment = load_template(
        "model-server-deployment.yaml",
        name=name,
        namespace=namespace,
        replicas=pool.replicas,
        selector=selector,
        max_surge=0 if engine == "vllm" else 1,
        pod_labels=pod_labels,
        runtime_class=runtime_class,
        pod_security=pod_security(),
        image=image,
        command=command,
        args=args,
        env=env,
        ports=_ports(pool),
        startup_failures=startup_failures,
        resources=resources,
        container_security=container_security(read_only_root),
        volume_mounts=mounts,
        volumes=volumes,
    )
    if engine == "vllm" and pool.role == "decode" and opts.gateway:
        if dp > 1:
            notes.append(
                f"pool {pool.name}: no routing sidecar with data_parallel_size > 1 (one sidecar fronts one port)"
            )
        else:
            add_routing_sidecar(deployment, opts)
    deployment = _label(
        deployment, {**common_labels(stack), COMPONENT_LABEL: "model-server", POOL_LABEL: selector[POOL_LABEL]}
    )
    service_ports = [
        {"name": p["name"], "port": p["containerPort"], "targetPort": p["name"], "protocol": "TCP"}
        for p in _ports(pool)
        if p["name"].startswith("http")
    ]
    service = load_template(
        "model-server-service.yaml", name=name, namespace=namespace, selector=selector, ports=service_ports
    )
    service = _label(
        service, {**common_labels(stack), COMPONENT_LABEL: "model-server", POOL_LABEL: selector[POOL_LABEL]}
    )
    return [deployment, service]


def add_routing_sidecar(deployment: dict[str, Any], opts: RenderOptions) -> None:
    """llm-d's P/D routing sidecar on a decode pod, as its P/D guide deploys it: a native sidecar
    (restartable init container) owns the pod's serving port 8000 and reads `x-prefiller-host-port` (set by
    the upstream EPP's disagg-headers-handler) to run the prefill leg; vLLM moves to 8200 behind it."""
    spec = deployment["spec"]["template"]["spec"]
    server = spec["containers"][0]
    args = server["args"]
    args[args.index("--port") + 1] = str(SIDECAR_VLLM_PORT)
    for port in server["ports"]:
        if port["name"] == "http":
            port.update(name="vllm", containerPort=SIDECAR_VLLM_PORT)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        server[probe]["httpGet"]["port"] = "vllm"
    spec["initContainers"] = [
        {
            "name": "routing-proxy",
            "image": opts.sidecar_image,
            "imagePullPolicy": "IfNotPresent",
            "args": [
                f"--port={SERVER_PORT}",
                f"--vllm-port={SIDECAR_VLLM_PORT}",
                "--connector=nixlv2",
                "--secure-proxy=false",
            ],
            "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
            "restartPolicy": "Always",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            "securityContext": container_security(True),
        }
    ]


# -- router ----------------------------------------------------------------------------------------------


def pool_selector(stack: str) -> dict[str, str]:
    """What the InferencePool and the router select: this stack's serving pods, never the router."""
    return {SERVING_LABEL: "true", STACK_LABEL: stack}


def target_ports(profile: Profile) -> list[int]:
    dp = max(max(1, p.data_parallel_size) for p in profile.pools)
    if dp > MAX_TARGET_PORTS:
        raise RenderError(
            f"data_parallel_size {dp}: an InferencePool lists at most {MAX_TARGET_PORTS} target ports (one per rank); "
            "split the ranks over more pods"
        )
    return [SERVER_PORT + r for r in range(dp)]


def router_rules() -> list[dict[str, Any]]:
    """The router's whole permission set: read pods in its own namespace."""
    return [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def epp_rules() -> list[dict[str, Any]]:
    """llm-d's upstream EPP reads its InferencePool and objectives besides pods (its chart's Role)."""
    return [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["inference.networking.k8s.io"],
            "resources": ["inferencepools"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["inference.networking.x-k8s.io"],
            "resources": ["inferenceobjectives", "inferencemodelrewrites"],
            "verbs": ["get", "list", "watch"],
        },
    ]


def router_args(profile: Profile, stack: str) -> list[str]:
    selector = ",".join(f"{k}={v}" for k, v in pool_selector(stack).items())
    args = [
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(ROUTER_PORT),
        "--config",
        "/etc/llmd/epp.yaml",
        "--discovery",
        "kubernetes",
        "--namespace",
        "$(POD_NAMESPACE)",
        "--selector",
        selector,
        "--target-ports",
        ",".join(str(p) for p in target_ports(profile)),
        "--request-timeout",
        str(profile.router.request_timeout_s),
    ]
    if any(p.kv_events for p in profile.pools):
        args += ["--kv-events-port", str(KV_EVENTS_PORT)]
    if profile.router.tokenizer:
        args += ["--tokenizer", profile.router.tokenizer]
    return args


def _rbac(stack: str, namespace: str, name: str, rules: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    labels = {**common_labels(stack), COMPONENT_LABEL: component}
    return [
        _label(load_template("serviceaccount.yaml", name=name, namespace=namespace), labels),
        _label(load_template("role.yaml", name=name, namespace=namespace, rules=rules), labels),
        _label(
            load_template("rolebinding.yaml", name=name, namespace=namespace, role=name, service_account=name), labels
        ),
    ]


ROUTER_API_KEY_ENV = "LLMD_ROUTER_API_KEY"  # what `router serve --api-key` reads
API_KEY_SECRET_KEY = "api-key"


def router_api_key_secret_name(stack: str) -> str:
    return dns_label(f"{stack}-router-api-key", 63)


def router_api_key_secret(stack: str, namespace: str, key: str | None) -> dict[str, Any]:
    """The router's API key: the router binds 0.0.0.0 in the cluster, so its admin API must need a key."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": router_api_key_secret_name(stack), "namespace": namespace},
        "type": "Opaque",
        "stringData": {API_KEY_SECRET_KEY: key or secrets.token_urlsafe(32)},
    }


def ensure_api_key_secret(rendered: Rendered) -> Rendered:
    """For `up`: add the router's Secret with a fresh random key when the render only references it.
    Apply never replaces an existing Secret, so this creates the key once per cluster."""
    name = router_api_key_secret_name(rendered.stack)
    if any(o["kind"] == "Secret" and o["metadata"]["name"] == name for o in rendered.objects):
        return rendered
    secret = _label(
        router_api_key_secret(rendered.stack, rendered.namespace, None),
        {**common_labels(rendered.stack), COMPONENT_LABEL: "router"},
    )
    return Rendered(rendered.stack, rendered.namespace, sort_for_apply(rendered.objects + [secret]), rendered.notes)


def _engine(profile: Profile, opts: RenderOptions) -> str:
    return opts.engine or ("vllm" if opts.gpus else profile.engine_of(profile.pools[0]))


def epp_config(profile: Profile, opts: RenderOptions) -> dict[str, Any]:
    """The EndpointPickerConfig both pickers read, with the precise scorer's parameters completed from the
    pools' engine settings, as llm-d's precise-prefix-cache guide sets them: blockSize = vLLM --block-size,
    hashSeed = the pods' PYTHONHASHSEED (vLLM pods), the tokenizer = the served model, and kvEventsConfig
    dialling each pod's KV-event socket (discoverPods, socketPort). Values the profile sets are kept."""
    import copy

    config = copy.deepcopy(profile.router.config)
    pool = next((p for p in profile.pools if p.kv_events), profile.pools[0])
    vllm = _engine(profile, opts) == "vllm"
    for plugin in config.get("plugins") or []:
        if plugin.get("type") not in ("precise-prefix-cache-scorer", "precise-prefix-cache-producer"):
            continue
        params = plugin.setdefault("parameters", {})
        tpc = params.setdefault("tokenProcessorConfig", {})
        tpc.setdefault("blockSize", pool.block_size)
        if vllm:
            tpc.setdefault("hashSeed", opts.hash_seed)
        pool_cfg = params.setdefault("indexerConfig", {}).setdefault("tokenizersPoolConfig", {})
        if not pool_cfg.get("model") and not pool_cfg.get("modelName"):
            pool_cfg["modelName"] = profile.model
        kec = params.setdefault("kvEventsConfig", {})
        if "zmqEndpoint" not in kec:
            kec.setdefault("topicFilter", "kv@")
            kec.setdefault("discoverPods", True)
            kec.setdefault("podDiscoveryConfig", {}).setdefault("socketPort", KV_EVENTS_PORT)
    return config


def upstream_epp_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`config` as llm-d's own EPP can load it: router_lite-only plugins dropped (with their profile refs) and
    router_lite-only parameters removed. Returns (config, names of the plugins dropped)."""
    from router_lite.registry import lookup

    dropped: list[str] = []
    plugins = []
    for plugin in config.get("plugins") or []:
        form = lookup(plugin["type"]).cls.upstream_form(dict(plugin.get("parameters") or {}))
        if form is None:
            dropped.append(plugin.get("name") or plugin["type"])
            continue
        plugins.append(
            {**plugin, "parameters": form} if form else {k: v for k, v in plugin.items() if k != "parameters"}
        )
    profiles = [
        {**prof, "plugins": [r for r in prof.get("plugins") or [] if r.get("pluginRef") not in dropped]}
        for prof in config.get("schedulingProfiles") or []
    ]
    return {**config, "plugins": plugins, "schedulingProfiles": profiles}, dropped


def router_objects(
    profile: Profile, opts: RenderOptions, stack: str, namespace: str, notes: list[str]
) -> list[dict[str, Any]]:
    name = dns_label(f"{stack}-router", 55)
    labels = {**common_labels(stack), COMPONENT_LABEL: "router"}
    selector = {STACK_LABEL: stack, COMPONENT_LABEL: "router"}
    config_yaml = yaml.safe_dump(epp_config(profile, opts), sort_keys=False)
    env = [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {
            "name": ROUTER_API_KEY_ENV,
            "valueFrom": {"secretKeyRef": {"name": router_api_key_secret_name(stack), "key": API_KEY_SECRET_KEY}},
        },
    ]
    objs = _rbac(stack, namespace, name, router_rules(), "router")
    if opts.router_api_key:
        objs.append(_label(router_api_key_secret(stack, namespace, opts.router_api_key), labels))
    else:
        notes.append(
            f"the router reads its API key from Secret {router_api_key_secret_name(stack)} (key {API_KEY_SECRET_KEY}); "
            f"`up` creates it once; with kubectl: kubectl -n {namespace} create secret generic "
            f"{router_api_key_secret_name(stack)} --from-literal={API_KEY_SECRET_KEY}=$(openssl rand -base64 32)"
        )
    objs.append(
        _label(load_template("configmap-epp.yaml", name=name, namespace=namespace, config_yaml=config_yaml), labels)
    )
    objs.append(_label(load_template("router-service.yaml", name=name, namespace=namespace, selector=selector), labels))
    objs.append(
        _label(
            load_template(
                "router-deployment.yaml",
                name=name,
                namespace=namespace,
                selector=selector,
                pod_labels={**labels, "app.kubernetes.io/name": "router-lite", **selector},
                service_account=name,
                pod_security=pod_security(),
                image=opts.image,
                args=router_args(profile, stack),
                env=env,
                container_security=container_security(True),
                config_map=name,
            ),
            labels,
        )
    )
    return objs


def gateway_objects(
    profile: Profile, opts: RenderOptions, stack: str, namespace: str, pool_name: str
) -> list[dict[str, Any]]:
    """llm-d's upstream EPP (ext-proc) + Gateway + HTTPRoute -> InferencePool, for Gateway implementations."""
    name = dns_label(f"{stack}-epp", 55)
    labels = {**common_labels(stack), COMPONENT_LABEL: "endpoint-picker"}
    selector = {STACK_LABEL: stack, COMPONENT_LABEL: "endpoint-picker"}
    objs = _rbac(stack, namespace, name, epp_rules(), "endpoint-picker")
    upstream, _ = upstream_epp_config(epp_config(profile, opts))  # the EPP is llm-d's: only its own plugins
    objs.append(
        _label(
            load_template(
                "configmap-epp.yaml",
                name=name,
                namespace=namespace,
                config_yaml=yaml.safe_dump(upstream, sort_keys=False),
            ),
            labels,
        )
    )
    objs.append(
        _label(
            load_template(
                "epp-service.yaml", name=name, namespace=namespace, selector=selector, kv_events_port=KV_EVENTS_PORT
            ),
            labels,
        )
    )
    objs.append(
        _label(
            load_template(
                "epp-deployment.yaml",
                name=name,
                namespace=namespace,
                selector=selector,
                pod_labels={**labels, "app.kubernetes.io/name": "llm-d-inference-scheduler", **selector},
                service_account=name,
                pod_security=pod_security(65532),
                image=opts.epp_image,
                pool_name=pool_name,
                kv_events_port=KV_EVENTS_PORT,
                hf_token_secret=opts.hf_token_secret,
                container_security=container_security(True),
                config_map=name,
            ),
            labels,
        )
    )
    gw = dns_label(f"{stack}-gateway", 63)
    objs.append(
        _label(
            load_template("gateway.yaml", name=gw, namespace=namespace, gateway_class=opts.gateway_class),
            {**common_labels(stack), COMPONENT_LABEL: "gateway"},
        )
    )
    timeout = f"{int(profile.router.request_timeout_s)}s"
    objs.append(
        _label(
            load_template(
                "httproute.yaml",
                name=dns_label(f"{stack}-route", 63),
                namespace=namespace,
                gateway=gw,
                pool=pool_name,
                request_timeout=timeout,
            ),
            {**common_labels(stack), COMPONENT_LABEL: "gateway"},
        )
    )
    return objs


def monitoring_objects(profile: Profile, opts: RenderOptions, stack: str, namespace: str) -> list[dict[str, Any]]:
    """A PodMonitor per pool (vLLM's or the simulator's /metrics; behind a routing sidecar, vLLM's own port)
    and ServiceMonitors for router_lite and, with --gateway, the upstream EPP (its metrics port 9090)."""
    from llmdctl.k8s.monitoring import pod_monitor, service_monitor

    labels = {**common_labels(stack), COMPONENT_LABEL: "monitoring"}
    objs = []
    for pool in profile.pools:
        engine = opts.engine or ("vllm" if opts.gpus else profile.engine_of(pool))
        sidecar = engine == "vllm" and pool.role == "decode" and opts.gateway and max(1, pool.data_parallel_size) == 1
        match = {STACK_LABEL: stack, POOL_LABEL: dns_label(pool.name)}
        objs.append(
            _label(
                pod_monitor(dns_label(f"{stack}-{pool.name}", 63), namespace, match, "vllm" if sidecar else "http"),
                labels,
            )
        )
    objs.append(
        _label(
            service_monitor(
                dns_label(f"{stack}-router", 63), namespace, {STACK_LABEL: stack, COMPONENT_LABEL: "router"}, "http"
            ),
            labels,
        )
    )
    if opts.gateway:
        objs.append(
            _label(
                service_monitor(
                    dns_label(f"{stack}-epp", 63),
                    namespace,
                    {STACK_LABEL: stack, COMPONENT_LABEL: "endpoint-picker"},
                    "http-metrics",
                ),
                labels,
            )
        )
    return objs


# -- the stack -------------------------------------------------------------------------------------------

# Dependency order for apply (reverse for delete): identities before what runs as them, config before
# pods, servers before the router that discovers them, the pool and routes last.
APPLY_ORDER = [
    "CustomResourceDefinition",
    "Namespace",
    "RuntimeClass",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "DaemonSet",
    "Deployment",
    "InferencePool",
    "LLMInferenceService",
    "Gateway",
    "HTTPRoute",
    "PodMonitor",
    "ServiceMonitor",
]


def _order_key(obj: dict[str, Any]) -> tuple[int, int]:
    kind = obj["kind"]
    rank = APPLY_ORDER.index(kind) if kind in APPLY_ORDER else len(APPLY_ORDER)
    pickers_last = {"router": 1, "endpoint-picker": 2}.get(
        obj["metadata"].get("labels", {}).get(COMPONENT_LABEL, ""), 0
    )
    return (rank, pickers_last)


def sort_for_apply(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(objects, key=_order_key)  # stable: template order within a kind


def render(profile: Profile, opts: RenderOptions | None = None) -> Rendered:
    """Every object of the stack, labelled and in apply order. Raises RenderError for impossible input."""
    opts = opts or RenderOptions()
    if opts.target not in ("kind", "kube", "kserve"):
        raise RenderError(f"--target {opts.target!r}: expected kind, kube or kserve")
    stack = dns_label(opts.stack or profile.name, 40)
    namespace = dns_label(opts.namespace)
    if opts.engine not in (None, "sim", "vllm"):
        raise RenderError(f"--engine {opts.engine!r}: expected sim or vllm")
    if profile.tokenizer:
        raise RenderError(
            f"tokenizer: {profile.tokenizer} is a directory on this machine, which cluster pods cannot "
            "read; drop it for kind/kube (the local target only)"
        )
    if opts.target == "kserve":
        from llmdctl.k8s.kserve import render_kserve

        return render_kserve(profile, opts, stack, namespace)
    notes: list[str] = []
    objects: list[dict[str, Any]] = [_label(load_template("namespace.yaml", namespace=namespace), common_labels(stack))]
    for pool in profile.pools:
        objects += model_server_objects(profile, pool, opts, stack, namespace, notes)
    objects += router_objects(profile, opts, stack, namespace, notes)
    pool_name = dns_label(stack, 63)
    router_service = dns_label(f"{stack}-router", 55)
    picker, picker_port = (dns_label(f"{stack}-epp", 55), 9002) if opts.gateway else (router_service, ROUTER_PORT)
    inference_pool = load_template(
        "inferencepool.yaml",
        name=pool_name,
        namespace=namespace,
        selector=pool_selector(stack),
        target_ports=[{"number": p} for p in target_ports(profile)],
        picker_service=picker,
        picker_port=picker_port,
    )
    objects.append(_label(inference_pool, {**common_labels(stack), COMPONENT_LABEL: "inference-pool"}))
    from llmdctl.k8s.dashboards import dashboards_configmap

    if opts.monitoring:
        objects += monitoring_objects(profile, opts, stack, namespace)

    objects.append(
        _label(dashboards_configmap(stack, namespace), {**common_labels(stack), COMPONENT_LABEL: "dashboards"})
    )
    if opts.gateway:
        objects += gateway_objects(profile, opts, stack, namespace, pool_name)
    elif opts.target == "kube":
        notes.append(
            "the InferencePool's endpointPickerRef names router_lite (HTTP, not ext-proc): use --gateway to "
            "render llm-d's upstream EPP for a Gateway implementation"
        )
    if opts.target == "kube" and opts.image == DEFAULT_IMAGE:
        notes.append(
            f"--target kube: the cluster must be able to pull {opts.image}; push it to a registry and pass --image "
            "REGISTRY/llmdctl:TAG"
        )
    return Rendered(stack=stack, namespace=namespace, objects=sort_for_apply(objects), notes=notes)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, width=10_000)


def write_dir(rendered: Rendered, out: Path) -> list[Path]:
    """One numbered file per object (`00-namespace-llmd.yaml`, ...) so `kubectl apply -f DIR` keeps the order."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, obj in enumerate(rendered.objects):
        path = out / f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False, width=10_000))
        paths.append(path)
    return paths
