"""`llmdctl render` and `llmdctl doctor` as a user runs them (the real console script module)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from llmdctl.k8s.validate import validate_objects


def llmdctl(*args, home=None, timeout=120):
    env = None
    if home is not None:
        import os

        env = {**os.environ, "LLMDCTL_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "llmdctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def test_render_to_stdout_is_a_valid_yaml_stream():
    proc = llmdctl("render", "pd-disaggregation", "--gateway", "--namespace", "team-a")
    assert proc.returncode == 0, proc.stderr
    objs = list(yaml.safe_load_all(proc.stdout))
    assert validate_objects(objs) == []
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {"team-a"}
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"][:2] == [
        "pd-disaggregation-prefill",
        "pd-disaggregation-decode",
    ]
    assert "valid for Kubernetes 1.34" in proc.stderr


def test_render_kind_folder_and_kube_folder(tmp_path):
    proc = llmdctl("render", "wide-ep", "--target", "kind", "-o", str(tmp_path / "kind"))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "kind" / "manifests").iterdir())
    assert names[0].startswith("00-namespace-") and any("inferencepool" in n for n in names)
    assert (tmp_path / "kind" / "commands.sh").is_file() and (tmp_path / "kind" / "image" / "Dockerfile").is_file()
    proc = llmdctl(
        "render",
        "inference-scheduling",
        "--target",
        "kube",
        "-o",
        str(tmp_path / "kube"),
        "--image",
        "registry.example/llmdctl:1",
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        not (tmp_path / "kube" / "commands.sh").exists()
        and (tmp_path / "kube" / "crds" / "inferencepools.yaml").is_file()
    )
    dep = yaml.safe_load(
        next((tmp_path / "kube" / "manifests").glob("*deployment-inference-scheduling-router.yaml")).read_text()
    )
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/llmdctl:1"


def test_render_user_mistakes_are_one_line():
    from typer.testing import CliRunner

    from llmdctl.cli import app

    runner = CliRunner()
    for args, needle in [
        (("render", "no-such-profile"), "unknown profile"),
        (("render", "wide-ep", "--target", "cloud"), "--target"),
        (("render", "wide-ep", "--set", "pools.0.data_parallel_size=9"), "at most 8"),
        (("render", "wide-ep", "--k8s-version", "1.2"), "--k8s-version"),
        (("render", "wide-ep", "--gpus"), "--model"),
    ]:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.stderr, (args, result.stderr)
        assert isinstance(result.exception, SystemExit), (args, result.exception)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_doctor_json_reports_every_check_with_fixes():
    proc = llmdctl("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    names = [f["name"] for f in report["findings"]]
    assert names == [
        "python",
        "docker",
        "kind",
        "kubectl",
        "kubeconfig",
        "gpu-driver",
        "container-toolkit",
        "ports",
        "vllm-engine",
        "k8s-schemas",
    ]
    for f in report["findings"]:
        assert f["status"] in ("ok", "warn", "fail", "skip")
        if f["status"] == "fail":
            assert f["fix"], f
    assert report["targets"]["local"]["ready"] is True
    kind_ready = report["targets"]["kind"]["ready"]
    proc = llmdctl("doctor", "--target", "kind")
    assert proc.returncode == (0 if kind_ready else 1)
