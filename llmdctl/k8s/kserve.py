"""`render --target kserve`: a profile as KServe `LLMInferenceService` objects (serving.kserve.io/v1alpha2).

On KServe one LLMInferenceService is a whole llm-d stack: KServe's controller creates the model-server
workloads, the InferencePool, llm-d's endpoint picker (the "scheduler") and the Gateway route from it. So
this module renders no Deployment of its own; it reuses the kube target's pieces (one flow, no copies):

- each pool's pod spec is the pod template of the kube target's model-server Deployment (same image, args,
  env, probes, security), with the container renamed `main`, the name KServe's presets merge by;
- the scheduler config, inline under `spec.router.scheduler.config.inline`, is the EndpointPickerConfig the
  `--gateway` path gives llm-d's own EPP (router_lite-only plugins dropped, the precise scorer completed);
- P/D is KServe's shape: the decode pool is the service's `spec`, the prefill pool is `spec.prefill`, and
  the decode server listens on 8001 behind the routing sidecar KServe adds on 8000 (its decode preset's
  ports). A profile with several aggregated pools becomes one service per pool.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from llmdctl.k8s.render import (
    COMPONENT_LABEL,
    SERVER_PORT,
    Rendered,
    RenderError,
    RenderOptions,
    _label,
    common_labels,
    dns_label,
    epp_config,
    load_template,
    model_server_objects,
    upstream_epp_config,
)
from llmdctl.profile import PoolSpec, Profile

API_VERSION = "serving.kserve.io/v1alpha2"
KIND = "LLMInferenceService"
CONTAINER = "main"  # KServe merges spec.template with its preset container of this name
DECODE_PORT = 8001  # KServe's decode preset: vLLM on 8001, its routing sidecar on 8000


def pod_spec(
    profile: Profile,
    pool: PoolSpec,
    opts: RenderOptions,
    stack: str,
    namespace: str,
    notes: list[str],
    port: int = SERVER_PORT,
) -> dict[str, Any]:
    """The kube target's model-server pod spec for `pool`, as KServe's `template` (a PodSpec)."""
    deployment = model_server_objects(profile, pool, opts, stack, namespace, notes)[0]
    spec = deployment["spec"]["template"]["spec"]
    server = spec["containers"][0]
    server["name"] = CONTAINER
    if port != SERVER_PORT:
        args = server["args"]
        args[args.index("--port") + 1] = str(port)
        for p in server["ports"]:
            if p["name"] == "http":
                p["containerPort"] = port
    return spec


def parallelism(pool: PoolSpec) -> dict[str, Any] | None:
    """KServe's `parallelism` for a pool: tensor, and data-parallel ranks that all live in one pod."""
    out: dict[str, Any] = {}
    if pool.tensor_parallel_size > 1:
        out["tensor"] = pool.tensor_parallel_size
    if pool.data_parallel_size > 1:
        out["data"] = out["dataLocal"] = pool.data_parallel_size
    if "--enable-expert-parallel" in pool.args:
        out["expert"] = True
    return out or None


def workload(
    profile: Profile,
    pool: PoolSpec,
    opts: RenderOptions,
    stack: str,
    namespace: str,
    notes: list[str],
    port: int = SERVER_PORT,
) -> dict[str, Any]:
    """The fields KServe's `spec` and `spec.prefill` share: replicas, parallelism, pod template."""
    out: dict[str, Any] = {"replicas": pool.replicas}
    if (par := parallelism(pool)) is not None:
        out["parallelism"] = par
    out["template"] = pod_spec(profile, pool, opts, stack, namespace, notes, port)
    return out


def _services(profile: Profile) -> list[tuple[PoolSpec, PoolSpec | None]]:
    """(main pool, prefill pool or None) per LLMInferenceService."""
    prefill = [p for p in profile.pools if p.role == "prefill"]
    decode = [p for p in profile.pools if p.role == "decode"]
    both = [p for p in profile.pools if p.role == "both"]
    if prefill or decode:
        if len(prefill) != 1 or len(decode) != 1 or both:
            names = ", ".join(f"{p.name} ({p.role})" for p in profile.pools)
            raise RenderError(
                f"--target kserve: an LLMInferenceService holds one decode pool and one prefill pool; "
                f"the profile has {names}"
            )
        return [(decode[0], prefill[0])]
    return [(p, None) for p in both]


def render_kserve(profile: Profile, opts: RenderOptions, stack: str, namespace: str) -> Rendered:
    """The Namespace and one LLMInferenceService per served pool (P/D: one for the pair)."""
    opts = dataclasses.replace(opts, gateway=False)  # KServe adds the decode routing sidecar itself
    notes: list[str] = []
    config, dropped = upstream_epp_config(epp_config(profile, opts))
    if dropped:
        notes.append(
            f"KServe runs llm-d's own endpoint picker: router_lite-only plugins {', '.join(dropped)} are left out of "
            "spec.router.scheduler.config.inline"
        )
    services = _services(profile)
    if len(services) > 1:
        notes.append(
            f"KServe runs one scheduler per LLMInferenceService: pools {', '.join(p.name for p, _ in services)} "
            "are routed separately, each with the profile's router config"
        )
    labels = {**common_labels(stack), COMPONENT_LABEL: "inference-service"}
    objects: list[dict[str, Any]] = [_label(load_template("namespace.yaml", namespace=namespace), common_labels(stack))]
    for main, prefill in services:
        name = stack if len(services) == 1 else dns_label(f"{stack}-{main.name}", 63)
        spec: dict[str, Any] = {
            # llmdctl's pods fetch their model themselves (vLLM from Hugging Face; the simulator needs none)
            "model": {"uri": f"hf://{profile.model}", "name": profile.model},
            "storageInitializer": {"enabled": False},
            **workload(profile, main, opts, stack, namespace, notes, DECODE_PORT if prefill else SERVER_PORT),
            "router": {"scheduler": {"config": {"inline": config}}, "route": {}, "gateway": {}},
        }
        if prefill is not None:
            spec["prefill"] = workload(profile, prefill, opts, stack, namespace, notes)
        objects.append(
            _label(
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": spec,
                },
                labels,
            )
        )
    notes.append(
        "KServe's presets serve the model servers over TLS; llmdctl's containers speak plain HTTP on the same ports: "
        "keep the gateway-to-pod hop plain HTTP (or front the pods with a TLS sidecar)"
    )
    return Rendered(stack=stack, namespace=namespace, objects=objects, notes=list(dict.fromkeys(notes)))
