"""kind clusters for llmdctl: the generated cluster config, the image build context and the exact commands.

Pure except `build_context` (which writes files): `kind_plan()` returns the sequence `up --target kind` runs,
so tests and `llmdctl render --target kind -o DIR` (which writes it as `DIR/kind/commands.sh`) show the same
steps a user would type. Shell steps run on the host; API steps go through the Kubernetes client (apply.py).

GPU mode follows NVIDIA's nvkind:
- host (done once by the user, `llmdctl doctor` checks it): nvidia-container-toolkit configured for docker
  as its default runtime, with `accept-nvidia-visible-devices-as-volume-mounts = true`, so that a
  `/dev/null` bind mount at `/var/run/nvidia-container-devices/all` injects every GPU into a container;
- kind config: that extra mount on the GPU worker node;
- inside the node: install the toolkit, register the `nvidia` runtime with containerd (not as default),
  restart containerd, and hide the driver's params file so containers cannot recreate device nodes;
- in the cluster: RuntimeClass `nvidia` and NVIDIA's device plugin (advertises `nvidia.com/gpu`); vLLM
  pods run with `runtimeClassName: nvidia` and request `nvidia.com/gpu`.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmdctl import __version__
from llmdctl.paths import manifests_dir, profiles_dir

KIND_API_VERSION = "kind.x-k8s.io/v1alpha4"
DEFAULT_CLUSTER = "llmdctl"
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
GPU_DEVICES_MOUNT = "/var/run/nvidia-container-devices/all"
PACKAGES = ("kvtiers", "sim_gpu", "router_lite", "llmdctl")

# Host preparation for GPU passthrough (needs root; printed by `doctor`, never run by llmdctl).
HOST_GPU_SETUP = [
    ["sudo", "nvidia-ctk", "runtime", "configure", "--runtime=docker", "--set-as-default", "--cdi.enabled"],
    ["sudo", "nvidia-ctk", "config", "--set", "accept-nvidia-visible-devices-as-volume-mounts=true", "--in-place"],
    ["sudo", "systemctl", "restart", "docker"],
]

# Inside a kind node (Debian-based): NVIDIA's apt repository, then the toolkit.
NODE_INSTALL_TOOLKIT = (
    "set -euo pipefail; "
    "apt-get update -qq && apt-get install -y -qq gpg curl >/dev/null; "
    "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey "
    "| gpg --dearmor --yes -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg; "
    "curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list "
    "| sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' "
    "> /etc/apt/sources.list.d/nvidia-container-toolkit.list; "
    "apt-get update -qq && apt-get install -y -qq nvidia-container-toolkit >/dev/null"
)
NODE_CONFIGURE_CONTAINERD = (
    "set -euo pipefail; nvidia-ctk runtime configure --runtime=containerd --config-source=command; systemctl restart "
    "containerd"
)
# Older toolkits leave ModifyDeviceFiles: 1; mask it so GPU containers cannot recreate /dev/nvidia* nodes.
NODE_MASK_DRIVER_PARAMS = (
    "set -euo pipefail; "
    "if grep -q '^ModifyDeviceFiles: 1$' /proc/driver/nvidia/params; then "
    "umount -R /proc/driver/nvidia || true; "
    "cp /proc/driver/nvidia/params /root/gpu-params; "
    "sed -i 's/^ModifyDeviceFiles: 1$/ModifyDeviceFiles: 0/' /root/gpu-params; "
    "mount --bind /root/gpu-params /proc/driver/nvidia/params; fi"
)


@dataclass
class KindOptions:
    cluster: str = DEFAULT_CLUSTER
    gpus: bool = False
    node_image: str | None = None  # e.g. kindest/node:v1.34.0; None: the kind release's default
    image: str = f"llmdctl:{__version__}"
    build_dir: Path = Path("llmdctl-image")  # where the image build context is assembled
    config_path: Path = Path("kind-cluster.yaml")
    local_port: int = 8000  # the router, port-forwarded to 127.0.0.1:local_port
    wait: str = "180s"

    @property
    def context(self) -> str:
        return f"kind-{self.cluster}"


@dataclass
class Step:
    """One step of `up --target kind`: a host command (`argv`) or a Kubernetes API action (`api`)."""

    title: str
    argv: list[str] | None = None
    api: str | None = None  # "crds", "gpu-addons", "wait-gpus", "apply", "wait", "port-forward"
    background: bool = False

    def shell(self) -> str:
        return shlex.join(self.argv) if self.argv else f"# {self.title} (Kubernetes API)"


def kind_config(cluster: str = DEFAULT_CLUSTER, gpus: bool = False, node_image: str | None = None) -> dict[str, Any]:
    """The kind Cluster config: one control-plane node; with GPUs, a worker that sees every host GPU."""

    def node(role: str) -> dict[str, Any]:
        n: dict[str, Any] = {"role": role}
        if node_image:
            n["image"] = node_image
        return n

    nodes = [node("control-plane")]
    if gpus:
        worker = node("worker")
        worker["extraMounts"] = [{"hostPath": "/dev/null", "containerPath": GPU_DEVICES_MOUNT}]
        worker["labels"] = {"llmd.ai/gpu": "true"}
        nodes.append(worker)
    return {"kind": "Cluster", "apiVersion": KIND_API_VERSION, "name": cluster, "nodes": nodes}


def gpu_nodes(config: dict[str, Any]) -> list[str]:
    """Docker container names of the nodes that mount the GPUs (kind names workers NAME-worker, -worker2, ...)."""
    names, workers = [], 0
    for n in config["nodes"]:
        if n["role"] == "worker":
            workers += 1
            container = f"{config['name']}-worker" + (str(workers) if workers > 1 else "")
            if any(m.get("containerPath") == GPU_DEVICES_MOUNT for m in n.get("extraMounts", [])):
                names.append(container)
    return names


def gpu_addons(image: str = DEVICE_PLUGIN_IMAGE) -> list[dict[str, Any]]:
    """RuntimeClass `nvidia` and NVIDIA's device plugin DaemonSet, labelled as llmdctl's."""
    from llmdctl.k8s.render import MANAGED_BY, MANAGER, load_template

    objs = [load_template("gpu/runtimeclass.yaml"), load_template("gpu/nvidia-device-plugin.yaml", image=image)]
    for o in objs:
        o["metadata"].setdefault("labels", {})[MANAGED_BY] = MANAGER
    return objs


def kind_plan(opts: KindOptions, namespace: str, router_service: str) -> list[Step]:
    """The exact sequence `llmdctl up --target kind` performs, in order."""
    steps = [
        Step(
            "create the kind cluster",
            [
                "kind",
                "create",
                "cluster",
                "--name",
                opts.cluster,
                "--config",
                str(opts.config_path),
                "--wait",
                opts.wait,
            ],
        )
    ]
    if opts.gpus:
        for node in gpu_nodes(kind_config(opts.cluster, True, opts.node_image)):
            steps += [
                Step(
                    f"install the NVIDIA container toolkit in {node}",
                    ["docker", "exec", node, "bash", "-c", NODE_INSTALL_TOOLKIT],
                ),
                Step(
                    f"register the nvidia runtime with containerd in {node}",
                    ["docker", "exec", node, "bash", "-c", NODE_CONFIGURE_CONTAINERD],
                ),
                Step(
                    f"mask the driver's device-file creation in {node}",
                    ["docker", "exec", node, "bash", "-c", NODE_MASK_DRIVER_PARAMS],
                ),
            ]
    steps += [
        Step(
            "build the llmdctl image (router + simulator)",
            ["docker", "build", "-f", str(opts.build_dir / "Dockerfile"), "-t", opts.image, str(opts.build_dir)],
        ),
        Step(
            "load the image into the cluster's nodes",
            ["kind", "load", "docker-image", opts.image, "--name", opts.cluster],
        ),
        Step("install the CRDs (InferencePool, Gateway API) and wait until established", api="crds"),
    ]
    if opts.gpus:
        steps += [
            Step("apply RuntimeClass nvidia and the NVIDIA device plugin", api="gpu-addons"),
            Step("wait until a node advertises nvidia.com/gpu", api="wait-gpus"),
        ]
    steps += [
        Step("server-side apply the stack (field manager llmdctl) in dependency order", api="apply"),
        Step("wait for every Deployment to roll out", api="wait"),
        Step(
            "port-forward the router to 127.0.0.1",
            [
                "kubectl",
                "--context",
                opts.context,
                "-n",
                namespace,
                "port-forward",
                f"svc/{router_service}",
                f"{opts.local_port}:8000",
            ],
            api="port-forward",
            background=True,
        ),
    ]
    return steps


def delete_command(cluster: str) -> list[str]:
    return ["kind", "delete", "cluster", "--name", cluster]


def commands_script(opts: KindOptions, namespace: str, router_service: str, manifests: str = "manifests") -> str:
    """The plan as a shell script with kubectl equivalents of the API steps, for users who want to see or run it."""
    lines = [
        "#!/usr/bin/env bash",
        "# What `llmdctl up --target kind` does, step by step (run from the render output folder).",
        "set -euo pipefail",
        "",
    ]
    ctx = opts.context
    for step in kind_plan(opts, namespace, router_service):
        lines.append(f"# {step.title}")
        if step.api == "crds":
            lines += [
                f"kubectl --context {ctx} apply --server-side --field-manager llmdctl -f crds/",
                f"kubectl --context {ctx} wait --for condition=established --timeout=60s -f crds/",
            ]
        elif step.api == "gpu-addons":
            lines.append(f"kubectl --context {ctx} apply --server-side --field-manager llmdctl -f gpu/")
        elif step.api == "wait-gpus":
            lines.append(
                f"until kubectl --context {ctx} get nodes -o "
                f"jsonpath='{{.items[*].status.allocatable.nvidia\\.com/gpu}}' | grep -q '[1-9]'; do sleep 5; done"
            )
        elif step.api == "apply":
            lines.append(f"kubectl --context {ctx} apply --server-side --field-manager llmdctl -f {manifests}/")
        elif step.api == "wait":
            lines.append(
                f"kubectl --context {ctx} -n {namespace} wait --for=condition=Available deployment --all --timeout=600s"
            )
        elif step.background:
            lines.append(shlex.join(step.argv or []) + " &")
        else:
            lines.append(shlex.join(step.argv or []))
        lines.append("")
    lines += [
        "# then: curl http://127.0.0.1:%d/v1/models" % opts.local_port,
        f"# tear down: {shlex.join(delete_command(opts.cluster))}",
        "",
    ]
    return "\n".join(lines)


# -- image build context ---------------------------------------------------------------------------------


def _requirements() -> list[str]:
    """The project's runtime dependencies: from pyproject.toml in a checkout, else the installed metadata."""
    pyproject = manifests_dir().parent / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])
    from importlib.metadata import requires

    return [r for r in (requires("llmdctl") or []) if "extra ==" not in r]


def build_context(dest: Path) -> Path:
    """Assemble the image build context in `dest`: the packages, data folders, requirements and Dockerfile.

    A clean folder rather than the checkout: no .git, virtualenvs or caches are sent to docker, and it
    works the same from a wheel install, where there is no checkout.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_data")
    for name in PACKAGES:
        module = sys.modules.get(name) or __import__(name)
        shutil.copytree(Path(module.__file__).resolve().parent, dest / name, ignore=ignore)
    shutil.copytree(profiles_dir(), dest / "profiles", ignore=ignore)
    shutil.copytree(manifests_dir(), dest / "manifests", ignore=ignore)
    (dest / "requirements.txt").write_text("\n".join(_requirements()) + "\n")
    shutil.copy(manifests_dir() / "Dockerfile", dest / "Dockerfile")
    return dest


def write_kind_files(
    out: Path, opts: KindOptions, namespace: str, router_service: str, manifests: str = "manifests"
) -> list[Path]:
    """`out/kind-cluster.yaml`, `out/commands.sh`, `out/crds/`, `out/gpu/` (with --gpus) and `out/image/`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    config = out / "kind-cluster.yaml"
    config.write_text(yaml.safe_dump(kind_config(opts.cluster, opts.gpus, opts.node_image), sort_keys=False))
    written.append(config)
    crds = out / "crds"
    crds.mkdir(exist_ok=True)
    for path in sorted((manifests_dir() / "crds").glob("*.yaml")):
        shutil.copy(path, crds / path.name)
        written.append(crds / path.name)
    if opts.gpus:
        gpu = out / "gpu"
        gpu.mkdir(exist_ok=True)
        for i, obj in enumerate(gpu_addons()):
            p = gpu / f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
            p.write_text(yaml.safe_dump(obj, sort_keys=False))
            written.append(p)
    local = KindOptions(**{**opts.__dict__, "config_path": Path("kind-cluster.yaml"), "build_dir": Path("image")})
    script = out / "commands.sh"
    script.write_text(commands_script(local, namespace, router_service, manifests))
    script.chmod(0o755)
    written.append(script)
    written.append(build_context(out / "image"))
    return written
