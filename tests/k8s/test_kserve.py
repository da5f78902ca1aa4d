"""`render --target kserve`: every shipped profile becomes LLMInferenceServices that KServe's own CRD accepts
(unknown fields rejected), and the same validator accepts KServe's own samples and rejects broken copies."""

from __future__ import annotations

import copy
import hashlib

import pytest
import yaml
from typer.testing import CliRunner

from llmdctl.cli import app
from llmdctl.k8s.kserve import DECODE_PORT
from llmdctl.k8s.render import RenderError, RenderOptions, render
from llmdctl.k8s.validate import crds_dir, validate_object, validate_objects
from llmdctl.local.stack import resolve_profile
from llmdctl.profile import list_profiles, load_profile
from router_lite.config import load_config
from tests.k8s.k8s_profiles import make_profile

SHIPPED = [p.stem for p in list_profiles()]
KSERVE = RenderOptions(target="kserve")
# sha256 of serving.kserve.io_llminferenceservices.yaml as KServe publishes it (the copy under ../shared/crds/kserve/)
KSERVE_CRD_SHA256 = "fbd625c2a2ac7b79e17c9763b7a0c4acf3cd3eaa99ebf0fab06db008785b35f3"


def _samples(fixtures_dir):
    paths = sorted((fixtures_dir / "kserve" / "samples").glob("*.yaml"))
    return [(p.name, doc) for p in paths for doc in yaml.safe_load_all(p.read_text()) if doc]


def _services(rendered):
    return rendered.by_kind("LLMInferenceService")


def test_the_shipped_crd_is_kserves():
    path = crds_dir() / "kserve" / "serving.kserve.io_llminferenceservices.yaml"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == KSERVE_CRD_SHA256


def test_kserves_own_samples_validate(fixtures_dir):
    samples = _samples(fixtures_dir)
    assert len(samples) == 4
    for name, doc in samples:
        assert doc["kind"] == "LLMInferenceService"
        assert validate_object(doc) == [], name


@pytest.mark.parametrize(
    "where,field",
    [
        (("spec",), "replica"),
        (("spec", "router"), "schedular"),
        (("spec", "template", "containers", 0), "imagePullPolcy"),
        (("spec", "prefill", "template", "containers", 0), "envv"),
    ],
)
def test_a_misspelled_field_in_a_sample_is_rejected(fixtures_dir, where, field):
    doc = copy.deepcopy(dict(_samples(fixtures_dir))["llm-inference-service-pd-facebook-opt-125m-cpu.yaml"])
    node = doc
    for key in where:
        node = node[key]
    node[field] = 1
    problems = validate_object(doc)
    assert len(problems) == 1 and f"'{field}' was unexpected" in problems[0].message
    assert problems[0].path == ".".join(str(k) for k in where).replace(".0", "[0]")


def test_the_crds_cel_rule_on_replicas_and_scaling(fixtures_dir):
    doc = copy.deepcopy(dict(_samples(fixtures_dir))["llm-inference-service-qwen2-7b-gpu.yaml"])
    doc["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 2, "wva": {}}
    assert [p.message for p in validate_object(doc)] == ["replicas and scaling are mutually exclusive"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_renders_valid_llminferenceservices(name):
    profile = load_profile(name)
    rendered = render(profile, KSERVE)
    assert validate_objects(rendered.objects) == []
    pd = any(p.role != "both" for p in profile.pools)
    assert [o["kind"] for o in rendered.objects] == ["Namespace"] + ["LLMInferenceService"] * (
        1 if pd else len(profile.pools)
    )
    for svc in _services(rendered):
        assert svc["apiVersion"] == "serving.kserve.io/v1alpha2"
        # the inline config is one llm-d's EPP loads; router_lite loads it too
        inline = svc["spec"]["router"]["scheduler"]["config"]["inline"]
        assert inline["kind"] == "EndpointPickerConfig"
        load_config(inline)
        assert [c["name"] for c in svc["spec"]["template"]["containers"]] == ["main"]


def test_kserve_pod_template_is_the_kube_targets_pod_spec():
    prof = load_profile("precise-prefix-cache")
    kube = render(prof, RenderOptions(target="kube")).by_kind("Deployment")
    server = [d for d in kube if d["spec"]["template"]["spec"]["containers"][0]["name"] == "server"][0]["spec"][
        "template"
    ]["spec"]
    svc = _services(render(prof, KSERVE))[0]["spec"]
    main = svc["template"]["containers"][0]
    assert {k: v for k, v in main.items() if k != "name"} == {
        k: v for k, v in server["containers"][0].items() if k != "name"
    }
    assert svc["replicas"] == prof.pools[0].replicas and svc["model"]["name"] == prof.model
    assert svc["storageInitializer"] == {"enabled": False}


def test_pd_is_one_service_decode_in_spec_prefill_in_spec_prefill():
    prof = load_profile("pd-disaggregation")
    (svc,) = _services(render(prof, KSERVE))
    spec = svc["spec"]
    decode, prefill = (next(p for p in prof.pools if p.role == r) for r in ("decode", "prefill"))
    main_args = spec["template"]["containers"][0]["args"]
    pre_args = spec["prefill"]["template"]["containers"][0]["args"]
    assert main_args[main_args.index("--role") + 1] == "decode" and pre_args[pre_args.index("--role") + 1] == "prefill"
    assert spec["replicas"] == decode.replicas and spec["prefill"]["replicas"] == prefill.replicas
    # decode behind KServe's routing sidecar (which owns 8000), prefill on 8000
    assert main_args[main_args.index("--port") + 1] == str(DECODE_PORT)
    assert spec["template"]["containers"][0]["ports"][0] == {
        "name": "http",
        "containerPort": DECODE_PORT,
        "protocol": "TCP",
    }
    assert pre_args[pre_args.index("--port") + 1] == "8000"
    assert not spec["template"].get("initContainers")  # KServe adds the sidecar, not us
    plugins = {p["type"] for p in spec["router"]["scheduler"]["config"]["inline"]["plugins"]}
    assert {"prefill-filter", "decode-filter", "disagg-profile-handler"} <= plugins


def test_vllm_pods_and_the_precise_scorer_on_kserve():
    prof, _ = resolve_profile("precise-prefix-cache", engine="vllm", model="Qwen/Qwen3-0.6B", replicas=None, sets=[])
    rendered = render(prof, RenderOptions(target="kserve", gpus=True, engine="vllm"))
    assert validate_objects(rendered.objects) == []
    spec = _services(rendered)[0]["spec"]
    main = spec["template"]["containers"][0]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "PYTHONHASHSEED", "value": "42"} in main["env"]
    scorer = next(
        p
        for p in spec["router"]["scheduler"]["config"]["inline"]["plugins"]
        if p["type"] == "precise-prefix-cache-scorer"
    )
    assert scorer["parameters"]["tokenProcessorConfig"] == {"blockSize": 16, "hashSeed": "42"}
    assert spec["model"] == {"uri": "hf://Qwen/Qwen3-0.6B", "name": "Qwen/Qwen3-0.6B"}
    assert "estimated-ttft-scorer" not in {
        p["type"] for p in spec["router"]["scheduler"]["config"]["inline"]["plugins"]
    }


def test_wide_ep_parallelism():
    (svc,) = _services(render(load_profile("wide-ep"), KSERVE))
    assert svc["spec"]["parallelism"] == {"data": 4, "dataLocal": 4, "expert": True}


def test_aggregated_pools_become_one_service_each():
    prof = make_profile("t-two", [{"name": "a", "replicas": 1}, {"name": "b", "replicas": 2, "hardware": "MI300X"}])
    rendered = render(prof, KSERVE)
    assert [s["metadata"]["name"] for s in _services(rendered)] == ["t-two-a", "t-two-b"]
    assert any("routed separately" in n for n in rendered.notes)
    assert validate_objects(rendered.objects) == []


def test_pd_with_two_decode_pools_is_refused():
    prof = make_profile(
        "t-pd2", [{"name": "p", "role": "prefill"}, {"name": "d1", "role": "decode"}, {"name": "d2", "role": "decode"}]
    )
    with pytest.raises(RenderError, match="one decode pool and one prefill pool"):
        render(prof, KSERVE)


def test_cli_render_kserve(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["render", "pd-disaggregation", "--target", "kserve"])
    assert res.exit_code == 0, res.output
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert [d["kind"] for d in docs] == ["Namespace", "LLMInferenceService"]
    res = runner.invoke(app, ["render", "precise-prefix-cache", "--target", "kserve", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out" / "manifests").iterdir()) == [
        "00-namespace-llmd.yaml",
        "01-llminferenceservice-precise-prefix-cache.yaml",
    ]
    assert not (tmp_path / "out" / "crds").exists()  # KServe's installation owns its CRD
    res = runner.invoke(app, ["render", "pd-disaggregation", "--target", "kserve", "--gateway"])
    assert res.exit_code == 2 and "--gateway" in res.output and "Traceback" not in res.output
