"""`render --format helm|kustomize`: both packages render to exactly the objects of the raw render.

Kustomize is built with `kubectl kustomize` when kubectl is installed. Helm is not installed here: the
chart's one template is checked to be the minimal `range .Values.objects` / `toYaml` form, and evaluated
by the Python equivalent of that form (what `helm template` prints for it), which is compared with the
raw render (see llmdctl/k8s/packaging.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmdctl.k8s.packaging import CHART_TEMPLATE, write_helm, write_kustomize
from llmdctl.k8s.render import RenderOptions, render
from llmdctl.local.stack import resolve_profile
from llmdctl.profile import profile_to_dict
from tests.k8s.test_cli_render_doctor import llmdctl


def _rendered(name: str = "precise-prefix-cache"):
    prof, _ = resolve_profile(name, engine="vllm", model="Qwen/Qwen3-0.6B", replicas=None, sets=[])
    return prof, render(
        prof, RenderOptions(target="kube", gateway=True, gpus=True, engine="vllm", image="r/llmdctl:1", monitoring=True)
    )


def _key(obj: dict) -> tuple[str, str]:
    return (obj["kind"], obj["metadata"]["name"])


def _helm_template(chart: Path) -> list[dict]:
    """What `helm template` prints for a chart whose only template is CHART_TEMPLATE."""
    templates = list((chart / "templates").iterdir())
    assert [t.name for t in templates] == ["objects.yaml"] and templates[0].read_text() == CHART_TEMPLATE
    values = yaml.safe_load((chart / "values.yaml").read_text())
    text = "".join(f"\n---\n{yaml.safe_dump(o, sort_keys=True)}" for o in values["objects"])  # toYaml sorts keys
    return [d for d in yaml.safe_load_all(text) if d is not None]


def test_helm_chart_renders_the_raw_objects(tmp_path):
    prof, rendered = _rendered()
    write_helm(rendered, profile_to_dict(prof), tmp_path / "chart")
    chart = yaml.safe_load((tmp_path / "chart" / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == rendered.stack
    assert yaml.safe_load((tmp_path / "chart" / "values.yaml").read_text())["profile"]["name"] == prof.name
    assert _helm_template(tmp_path / "chart") == rendered.objects


def test_kustomization_lists_the_raw_objects_in_order(tmp_path):
    _, rendered = _rendered()
    write_kustomize(rendered, tmp_path / "k")
    k = yaml.safe_load((tmp_path / "k" / "kustomization.yaml").read_text())
    loaded = [yaml.safe_load((tmp_path / "k" / r).read_text()) for r in k["resources"]]
    assert loaded == rendered.objects


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) is not installed")
def test_kubectl_kustomize_builds_the_raw_objects(tmp_path):
    _, rendered = _rendered("pd-disaggregation")
    write_kustomize(rendered, tmp_path / "k")
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path / "k")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d is not None]
    assert sorted(built, key=_key) == sorted(rendered.objects, key=_key)


def test_cli_format_options(tmp_path):
    proc = llmdctl("render", "inference-scheduling", "--target", "kube", "--format", "helm", "-o", str(tmp_path / "h"))
    assert proc.returncode == 0, proc.stderr
    raw = llmdctl("render", "inference-scheduling", "--target", "kube")
    assert _helm_template(tmp_path / "h") == list(yaml.safe_load_all(raw.stdout))
    proc = llmdctl("render", "inference-scheduling", "--format", "kustomize")
    assert proc.returncode == 2 and "--format kustomize writes a folder: give -o DIR" in proc.stderr
    proc = llmdctl("render", "inference-scheduling", "--format", "zip", "-o", str(tmp_path / "z"))
    assert proc.returncode == 2 and "--format: expected raw, helm or kustomize, got 'zip'" in proc.stderr
