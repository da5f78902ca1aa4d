"""`render --target kube --gateway --engine vllm --gpus` for precise-prefix-cache and pd-disaggregation,
checked field by field against llm-d's guides (the table in docs/kubernetes.md): the EPP config, vLLM args,
Services, sidecars; strictly valid; byte-identical across renders."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from llmdctl.k8s.dashboards import dashboards_json
from llmdctl.k8s.render import KV_EVENTS_PORT, RenderOptions, render, to_yaml
from llmdctl.k8s.validate import validate_objects
from llmdctl.local.stack import resolve_profile
from router_lite.config import load_config
from tests.router.test_epp_metrics import EPP_FAMILIES

MODEL = "Qwen/Qwen3-0.6B"


def _render(name: str, **kw):
    prof, _ = resolve_profile(name, engine="vllm", model=MODEL, replicas=None, sets=[])
    opts = RenderOptions(
        target="kube", gateway=True, gpus=True, engine="vllm", image="registry.example/llmdctl:1", **kw
    )
    return prof, render(prof, opts)


def _container(rendered, deployment: str) -> dict:
    return rendered.find("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", ["precise-prefix-cache", "pd-disaggregation"])
def test_renders_are_valid_and_byte_identical(name):
    _, a = _render(name, monitoring=True)
    _, b = _render(name, monitoring=True)
    assert to_yaml(a.objects) == to_yaml(b.objects)
    assert validate_objects(a.objects) == []
    assert not a.by_kind("Secret")  # the API key is referenced, never generated per render


def test_precise_prefix_cache_matches_the_guide():
    prof, r = _render("precise-prefix-cache")
    pool = prof.pools[0]
    args = _container(r, "precise-prefix-cache-pod")["args"]
    env = {e["name"]: e for e in _container(r, "precise-prefix-cache-pod")["env"]}
    assert "--num-gpu-blocks-override" not in args
    block_size = int(args[args.index("--block-size") + 1])
    assert block_size == pool.block_size
    kv = json.loads(args[args.index("--kv-events-config") + 1])
    assert kv["endpoint"] == f"tcp://*:{KV_EVENTS_PORT}" and kv["topic"] == f"kv@$(POD_IP):8000@{MODEL}"
    ports = {p["name"]: p["containerPort"] for p in _container(r, "precise-prefix-cache-pod")["ports"]}
    assert ports["kv"] == KV_EVENTS_PORT  # what the EPP dials (pod discovery)
    for cm in ("precise-prefix-cache-epp", "precise-prefix-cache-router"):
        doc = yaml.safe_load(r.find("ConfigMap", cm)["data"]["epp.yaml"])
        params = next(p for p in doc["plugins"] if p["type"] == "precise-prefix-cache-scorer")["parameters"]
        assert params["tokenProcessorConfig"] == {"blockSize": block_size, "hashSeed": env["PYTHONHASHSEED"]["value"]}
        assert params["indexerConfig"]["tokenizersPoolConfig"]["modelName"] == MODEL
        assert params["kvEventsConfig"] == {
            "topicFilter": "kv@",
            "discoverPods": True,
            "podDiscoveryConfig": {"socketPort": KV_EVENTS_PORT},
        }
        cfg = load_config(doc)  # router_lite reads the same document
        assert cfg.precise_prefix_settings().block_size == block_size
    svc = {p["name"]: p["port"] for p in r.find("Service", "precise-prefix-cache-epp")["spec"]["ports"]}
    assert svc == {"grpc-ext-proc": 9002, "http-metrics": 9090, "kv-events": KV_EVENTS_PORT}


def test_pd_decode_pods_carry_the_routing_sidecar():
    _, r = _render("pd-disaggregation")
    decode = r.find("Deployment", "pd-disaggregation-decode")["spec"]["template"]["spec"]
    (sidecar,) = decode["initContainers"]
    assert sidecar["restartPolicy"] == "Always" and sidecar["name"] == "routing-proxy"
    assert "--port=8000" in sidecar["args"] and "--vllm-port=8200" in sidecar["args"]
    assert sidecar["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    server = decode["containers"][0]
    assert server["args"][server["args"].index("--port") + 1] == "8200"
    assert server["readinessProbe"]["httpGet"]["port"] == "vllm"
    prefill = r.find("Deployment", "pd-disaggregation-prefill")["spec"]["template"]["spec"]
    assert "initContainers" not in prefill
    epp = yaml.safe_load(r.find("ConfigMap", "pd-disaggregation-epp")["data"]["epp.yaml"])
    assert "disagg-headers-handler" in [p["type"] for p in epp["plugins"]]  # sets x-prefiller-host-port for the sidecar
    # without --gateway (router_lite runs the prefill leg itself) no sidecar is added
    prof, _ = resolve_profile("pd-disaggregation", engine="vllm", model=MODEL, replicas=None, sets=[])
    plain = render(prof, RenderOptions(target="kube", gpus=True, engine="vllm", image="x/y:1"))
    assert "initContainers" not in plain.find("Deployment", "pd-disaggregation-decode")["spec"]["template"]["spec"]


def test_monitors_and_dashboards_use_the_served_metric_names():
    _, r = _render("pd-disaggregation", monitoring=True)
    monitors = {o["metadata"]["name"]: o for o in r.objects if o["apiVersion"] == "monitoring.coreos.com/v1"}
    assert (
        monitors["pd-disaggregation-decode"]["spec"]["podMetricsEndpoints"][0]["port"] == "vllm"
    )  # behind the sidecar
    assert monitors["pd-disaggregation-prefill"]["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert monitors["pd-disaggregation-epp"]["spec"]["endpoints"][0]["port"] == "http-metrics"
    bad = dict(monitors["pd-disaggregation-epp"], spec={"selector": {}, "endpoints": [{"prot": "x"}]})
    assert validate_objects([bad])  # the monitoring schema rejects a misspelt key
    served = set(EPP_FAMILIES)
    for text in dashboards_json().values():
        for panel in json.loads(text)["panels"]:
            expr = panel["targets"][0]["expr"]
            names = [w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w.startswith(("inference_", "vllm:"))]
            assert names, expr
            for n in names:
                base = n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count").removesuffix("_total")
                assert base in served or n.startswith("vllm:"), n
    assert r.find("ConfigMap", "pd-disaggregation-dashboards")["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("name", ["precise-prefix-cache", "inference-scheduling", "predicted-latency"])
def test_upstream_epp_gets_only_what_llm_d_loads(name):
    """router_lite's own plugins and parameters stay in router_lite's config; llm-d's EPP gets its own form."""
    _, rendered = _render(name)
    epp = yaml.safe_load(rendered.find("ConfigMap", f"{name}-epp")["data"]["epp.yaml"])
    ours = yaml.safe_load(rendered.find("ConfigMap", f"{name}-router")["data"]["epp.yaml"])
    types = {p["type"] for p in epp["plugins"]}
    assert "estimated-ttft-scorer" not in types
    refs = {r["pluginRef"] for prof in epp["schedulingProfiles"] for r in prof["plugins"]}
    assert refs <= {p.get("name", p["type"]) for p in epp["plugins"]}  # no dangling reference
    for p in epp["plugins"]:
        params = p.get("parameters") or {}
        assert params.get("ttftSource") != "measured" and "warmupSamples" not in params
    if name == "precise-prefix-cache":
        assert "estimated-ttft-scorer" in {p["type"] for p in ours["plugins"]}  # router_lite keeps it
