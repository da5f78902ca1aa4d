"""Every profile renders to objects the real schemas accept; the validators reject what the API server would."""

from __future__ import annotations

import copy

import pytest
import yaml

from llmdctl.k8s.kind import gpu_addons
from llmdctl.k8s.render import RenderError, RenderOptions, render
from llmdctl.k8s.validate import (
    DEFAULT_K8S_VERSION,
    check_version,
    supported_versions,
    validate_object,
    validate_objects,
)
from llmdctl.profile import list_profiles, load_profile
from tests.k8s.k8s_profiles import built_profiles, make_profile

SHIPPED = [p.stem for p in list_profiles()]
EXPECTED = {"inference-scheduling", "precise-prefix-cache", "pd-disaggregation", "wide-ep", "kv-offload", "round-robin"}
VARIANTS = [
    RenderOptions(),
    RenderOptions(gateway=True),
    RenderOptions(target="kube", namespace="team-a", image="ghcr.io/x/llmdctl:1"),
]


def test_default_version_is_shipped_offline():
    assert DEFAULT_K8S_VERSION in supported_versions()
    assert check_version("1.34") == "1.34.0" and check_version("v1.30.2") == "1.30.0"
    with pytest.raises(ValueError, match="expected one of"):
        check_version("1.2")


def test_the_shipped_profiles_are_all_there():
    assert EXPECTED <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_renders_valid_objects(name):
    profile = load_profile(name)
    for opts in VARIANTS:
        rendered = render(profile, opts)
        assert validate_objects(rendered.objects) == [], (name, opts)
        kinds = {o["kind"] for o in rendered.objects}
        assert {
            "Namespace",
            "Deployment",
            "Service",
            "ConfigMap",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "InferencePool",
        } <= kinds
        assert ({"Gateway", "HTTPRoute"} <= kinds) == opts.gateway


@pytest.mark.parametrize("key", sorted(built_profiles()))
def test_built_profiles_render_valid_objects_on_both_targets(key):
    profile = built_profiles()[key]
    for opts in VARIANTS + ([RenderOptions(gpus=True)] if profile.engine == "vllm" else []):
        rendered = render(profile, opts)
        assert validate_objects(rendered.objects, "1.30") == []
        assert validate_objects(rendered.objects) == []


def test_gpu_addons_validate():
    assert validate_objects(gpu_addons()) == []


def _deployment():
    return copy.deepcopy(render(make_profile()).by_kind("Deployment")[0])


def test_core_validator_rejects_a_misspelled_field():
    dep = _deployment()
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    problems = validate_object(dep)
    assert len(problems) == 1 and "imagePullPolcy" in problems[0].message
    assert problems[0].path.startswith("spec.template.spec.containers[0]")


def test_core_validator_rejects_a_wrong_type_and_a_bad_label():
    dep = _deployment()
    dep["spec"]["replicas"] = "two"
    assert any("replicas" in p.path for p in validate_object(dep))
    dep = _deployment()
    dep["spec"]["template"]["metadata"]["labels"]["llm-d.ai/model"] = "meta-llama/Llama-3.1-8B"
    assert any("label" in p.message for p in validate_object(dep))


def test_crd_validator_rejects_a_misspelled_field():
    pool = copy.deepcopy(render(make_profile()).by_kind("InferencePool")[0])
    assert validate_object(pool) == []
    pool["spec"]["endpointPickerRef"]["prot"] = {"number": 8000}
    problems = validate_object(pool)
    assert len(problems) == 1 and "prot" in problems[0].message and problems[0].path == "spec.endpointPickerRef"
    pool = copy.deepcopy(render(make_profile()).by_kind("InferencePool")[0])
    pool["metadata"]["lables"] = {"a": "b"}
    assert any("lables" in p.message and p.path == "metadata" for p in validate_object(pool))


def test_crd_validator_rejects_schema_violations():
    rendered = render(make_profile(), RenderOptions(gateway=True))
    pool = copy.deepcopy(rendered.by_kind("InferencePool")[0])
    pool["spec"]["targetPorts"] = [{"number": 8000 + i} for i in range(9)]
    assert any("targetPorts" in p.path for p in validate_object(pool))
    pool["spec"]["targetPorts"] = [{"number": 8000}, {"number": 8000}]
    assert any("unique" in p.message for p in validate_object(pool))
    route = copy.deepcopy(rendered.by_kind("HTTPRoute")[0])
    route["spec"]["rules"][0]["backendRefs"][0]["wieght"] = 1
    assert any("wieght" in p.message for p in validate_object(route))


def test_unknown_kinds_are_reported_not_passed():
    problems = validate_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert problems and "Widget" in str(problems[0])


def test_pd_renders_separate_prefill_and_decode_deployments():
    rendered = render(built_profiles()["pd"])
    deps = {d["metadata"]["name"]: d for d in rendered.by_kind("Deployment")}
    prefill, decode = deps["t-pd-prefill"], deps["t-pd-decode"]
    assert prefill["spec"]["template"]["metadata"]["labels"]["llm-d.ai/role"] == "prefill"
    assert decode["spec"]["template"]["metadata"]["labels"]["llm-d.ai/role"] == "decode"
    assert (prefill["spec"]["replicas"], decode["spec"]["replicas"]) == (1, 3)
    args = prefill["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--role") + 1] == "prefill"


def test_wide_ep_has_one_target_port_per_rank():
    rendered = render(built_profiles()["wide-ep"])
    pool = rendered.by_kind("InferencePool")[0]
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == list(range(8000, 8008))
    ports = rendered.find("Deployment", "t-wide-ep-ep")["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [p["containerPort"] for p in ports if p["name"].startswith("http")] == list(range(8000, 8008))
    assert [p["containerPort"] for p in ports if p["name"].startswith("kv")] == list(range(5557, 5565))
    router = rendered.find("Deployment", "t-wide-ep-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert router[router.index("--target-ports") + 1] == ",".join(str(p) for p in range(8000, 8008))
    with pytest.raises(RenderError, match="at most 8"):
        render(make_profile("t-wide", [{"name": "ep", "data_parallel_size": 9}]))


def test_vllm_pods_get_gpus_probes_and_the_profile_args():
    rendered = render(built_profiles()["vllm"], RenderOptions(gpus=True))
    spec = rendered.find("Deployment", "t-vllm-gpu")["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2" and c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert spec["runtimeClassName"] == "nvidia"
    assert c["args"][c["args"].index("--tensor-parallel-size") + 1] == "2"
    assert c["args"][c["args"].index("--host") + 1] == "0.0.0.0"
    events = yaml.safe_load(c["args"][c["args"].index("--kv-events-config") + 1])
    assert events["endpoint"] == "tcp://*:5557" and events["topic"].startswith("kv@$(POD_IP):8000@")
    assert c["readinessProbe"]["httpGet"]["path"] == "/health" and c["livenessProbe"]["httpGet"]["path"] == "/health"
    labels = rendered.find("Deployment", "t-vllm-gpu")["spec"]["template"]["metadata"]["labels"]
    assert labels["llm-d.ai/model"] == "Qwen_Qwen3-0.6B" and labels["tier"] == "gold"
    assert {"name": "VLLM_SERVER_DEV_MODE", "value": "1"} in c["env"]  # the pool's env
    with pytest.raises(RenderError, match="--model"):
        render(make_profile(), RenderOptions(gpus=True))


def test_pods_are_locked_down():
    for key, profile in built_profiles().items():
        rendered = render(profile, RenderOptions(gateway=True, gpus=key == "vllm"))
        for dep in rendered.by_kind("Deployment"):
            spec = dep["spec"]["template"]["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
                assert "requests" in c["resources"] and "limits" in c["resources"]
                if c["image"].startswith("llmdctl:"):
                    assert sc["readOnlyRootFilesystem"] is True
                    assert {m["mountPath"] for m in c["volumeMounts"]} & {"/tmp", "/var/lib/llmd"}


def test_shipped_crds_are_the_reference_ones(fixtures_dir):
    from llmdctl.k8s.validate import crds_dir

    shipped = {p.name: p.read_bytes() for p in crds_dir().glob("*.yaml")}
    reference = {p.name: p.read_bytes() for p in (fixtures_dir / "crds").glob("*.yaml")}
    assert shipped == reference and len(shipped) == 4
