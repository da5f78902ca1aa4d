"""The generated kind config and the exact command sequence, with and without GPUs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from llmdctl.k8s import kind
from llmdctl.k8s.validate import validate_objects


def test_sim_config_is_one_plain_node():
    cfg = kind.kind_config("llmdctl")
    assert cfg == {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": "llmdctl",
        "nodes": [{"role": "control-plane"}],
    }
    assert kind.gpu_nodes(cfg) == []


def test_gpu_config_mounts_dev_null_as_all_devices_on_a_worker():
    cfg = kind.kind_config("gpu", gpus=True, node_image="kindest/node:v1.34.0")
    cp, worker = cfg["nodes"]
    assert cp == {"role": "control-plane", "image": "kindest/node:v1.34.0"}
    assert worker["role"] == "worker" and worker["image"] == "kindest/node:v1.34.0"
    assert worker["extraMounts"] == [
        {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}
    ]
    assert kind.gpu_nodes(cfg) == ["gpu-worker"]


def _opts(**kw):
    return kind.KindOptions(
        cluster="c1",
        image="llmdctl:test",
        build_dir=Path("/w/image"),
        config_path=Path("/w/kind.yaml"),
        local_port=18000,
        **kw,
    )


def test_sim_plan_is_the_exact_sequence():
    steps = kind.kind_plan(_opts(), "llmd", "s-router")
    assert [s.argv for s in steps if s.argv] == [
        ["kind", "create", "cluster", "--name", "c1", "--config", "/w/kind.yaml", "--wait", "180s"],
        ["docker", "build", "-f", "/w/image/Dockerfile", "-t", "llmdctl:test", "/w/image"],
        ["kind", "load", "docker-image", "llmdctl:test", "--name", "c1"],
        ["kubectl", "--context", "kind-c1", "-n", "llmd", "port-forward", "svc/s-router", "18000:8000"],
    ]
    assert [s.api for s in steps] == [None, None, None, "crds", "apply", "wait", "port-forward"]
    assert steps[-1].background


def test_gpu_plan_sets_up_the_nodes_then_the_device_plugin():
    steps = kind.kind_plan(_opts(gpus=True), "llmd", "s-router")
    execs = [s.argv for s in steps if s.argv and s.argv[0] == "docker" and s.argv[1] == "exec"]
    assert [e[2] for e in execs] == ["c1-worker"] * 3
    scripts = [e[-1] for e in execs]
    assert "apt-get install -y -qq nvidia-container-toolkit" in scripts[0]
    assert (
        "nvidia-ctk runtime configure --runtime=containerd --config-source=command" in scripts[1]
        and "systemctl restart containerd" in scripts[1]
    )
    assert "ModifyDeviceFiles: 0" in scripts[2]
    apis = [s.api for s in steps if s.api]
    assert apis == ["crds", "gpu-addons", "wait-gpus", "apply", "wait", "port-forward"]
    order = [s.title for s in steps]
    assert (
        order.index("create the kind cluster")
        < order.index("install the NVIDIA container toolkit in c1-worker")
        < order.index("build the llmdctl image (router + simulator)")
    )
    for script in scripts:  # every node script is valid bash
        assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0


def test_gpu_addons_runtimeclass_and_device_plugin():
    rc, ds = kind.gpu_addons()
    assert (rc["kind"], rc["metadata"]["name"], rc["handler"]) == ("RuntimeClass", "nvidia", "nvidia")
    assert ds["kind"] == "DaemonSet" and ds["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"].startswith("nvcr.io/nvidia/k8s-device-plugin:")
    assert validate_objects([rc, ds]) == []


def test_host_prerequisites_are_nvkinds():
    flat = [" ".join(c) for c in kind.HOST_GPU_SETUP]
    assert "sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place" in flat
    assert any("--runtime=docker --set-as-default" in c for c in flat)


def test_render_output_folder_has_config_script_and_build_context(tmp_path):
    written = kind.write_kind_files(tmp_path, kind.KindOptions(cluster="c1", gpus=True), "llmd", "s-router")
    assert yaml.safe_load((tmp_path / "kind-cluster.yaml").read_text()) == kind.kind_config("c1", gpus=True)
    script = (tmp_path / "commands.sh").read_text()
    assert subprocess.run(["bash", "-n", str(tmp_path / "commands.sh")]).returncode == 0
    lines = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert lines[1] == "kind create cluster --name c1 --config kind-cluster.yaml --wait 180s"
    assert "kubectl --context kind-c1 apply --server-side --field-manager llmdctl -f manifests/" in lines
    assert lines.index("kind load docker-image llmdctl:0.1.0 --name c1") < lines.index(
        "kubectl --context kind-c1 apply --server-side --field-manager llmdctl -f crds/"
    )
    image = tmp_path / "image"
    assert {
        "Dockerfile",
        "requirements.txt",
        "kvtiers",
        "sim_gpu",
        "router_lite",
        "llmdctl",
        "profiles",
        "manifests",
    } <= {p.name for p in image.iterdir()}
    assert not list(image.rglob("__pycache__"))
    reqs = (image / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("kubernetes") for r in reqs) and any(r.startswith("uvicorn") for r in reqs)
    dockerfile = (image / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile and "COPY requirements.txt" in dockerfile
    assert sorted(p.name for p in (tmp_path / "crds").iterdir()) == [
        "gatewayclasses.yaml",
        "gateways.yaml",
        "httproutes.yaml",
        "inferencepools.yaml",
    ]
    assert len(list((tmp_path / "gpu").iterdir())) == 2
    assert tmp_path / "commands.sh" in written
