"""Prerequisite checks for every target, each finding with the fix; `llmdctl doctor` renders them.

Each check is a small function returning a `Finding`; host commands run with short timeouts so a hung
docker daemon costs seconds, not minutes. `needed_for` says which targets a failure blocks, so the summary
can say "local: ready, kind: missing docker" instead of a wall of red.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

Status = Literal["ok", "warn", "fail", "skip"]
TOOLKIT_CONFIG = Path("/etc/nvidia-container-runtime/config.toml")

INSTALL_HINTS = {
    "docker": (
        "install Docker Engine (https://docs.docker.com/engine/install/) and start it: `sudo systemctl start docker`"
    ),
    "kind": "install kind: `go install sigs.k8s.io/kind@latest` or a release binary from https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    "kubectl": "install kubectl: https://kubernetes.io/docs/tasks/tools/ (any version within one minor of the cluster)",
}


@dataclass
class Finding:
    name: str
    status: Status
    detail: str
    fix: str = ""
    needed_for: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _run(argv: list[str], timeout: float = 10.0) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(argv)}: no answer after {timeout:.0f}s"
    return proc.returncode, (proc.stdout.strip() or proc.stderr.strip())


def check_python() -> Finding:
    ok = sys.version_info >= (3, 11)
    return Finding(
        "python",
        "ok" if ok else "fail",
        sys.version.split()[0],
        "" if ok else "use Python 3.11 or newer",
        ["local", "kind", "kube"],
    )


def check_docker() -> Finding:
    if shutil.which("docker") is None:
        return Finding("docker", "fail", "docker CLI not found", INSTALL_HINTS["docker"], ["kind"])
    rc, out = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
    if rc != 0 or not out or "error" in out.lower():
        return Finding(
            "docker",
            "fail",
            f"docker daemon not reachable: {out.splitlines()[-1] if out else f'exit {rc}'}",
            "start it (`sudo systemctl start docker`) and make sure your user may use it (`sudo usermod -aG docker "
            "$USER`, then log in again)",
            ["kind"],
        )
    return Finding("docker", "ok", f"daemon {out.splitlines()[0]}", "", ["kind"])


def check_tool(name: str) -> Finding:
    needed = ["kind"] if name == "kind" else ["kind", "kube"]
    if shutil.which(name) is None:
        return Finding(name, "fail", f"{name} not found on PATH", INSTALL_HINTS[name], needed)
    if name == "kubectl":
        rc, out = _run(["kubectl", "version", "--client", "-o", "json"])
        try:
            version = json.loads(out)["clientVersion"]["gitVersion"]
        except (ValueError, KeyError, TypeError):
            version = out.splitlines()[0] if out else f"exit {rc}"
    else:
        rc, out = _run([name, "version"])
        version = out.splitlines()[0] if out else f"exit {rc}"
    return Finding(
        name,
        "ok" if rc == 0 else "warn",
        version,
        "" if rc == 0 else f"`{name} version` failed; reinstall {name}",
        needed,
    )


def check_kubeconfig() -> Finding:
    try:
        from kubernetes import config

        contexts, current = config.list_kube_config_contexts()
    except Exception as exc:
        return Finding(
            "kubeconfig",
            "fail",
            f"no usable kubeconfig ({str(exc).splitlines()[0][:120]})",
            "for --target kube, point KUBECONFIG at your cluster's config (kind writes its own)",
            ["kube"],
        )
    name = (current or {}).get("name", "?")
    return Finding("kubeconfig", "ok", f"current context {name} ({len(contexts)} context(s))", "", ["kube"])


def check_gpu_driver() -> Finding:
    if shutil.which("nvidia-smi") is None:
        return Finding(
            "gpu-driver",
            "skip",
            "no NVIDIA driver (nvidia-smi not found): --gpus is unavailable, the simulator works",
            "for real GPUs install the NVIDIA driver: https://www.nvidia.com/download/index.aspx",
            ["kind --gpus"],
        )
    rc, out = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if rc != 0 or not out:
        return Finding(
            "gpu-driver",
            "fail",
            f"nvidia-smi failed: {out.splitlines()[-1] if out else rc}",
            "reinstall or reload the NVIDIA driver",
            ["kind --gpus"],
        )
    gpus = out.splitlines()
    return Finding("gpu-driver", "ok", f"{len(gpus)} GPU(s): {gpus[0]}", "", ["kind --gpus"])


def check_container_toolkit(config_path: Path = TOOLKIT_CONFIG) -> Finding:
    """nvkind's host prerequisites: nvidia-ctk, volume-mount device selection, nvidia as docker's runtime."""
    from llmdctl.k8s.kind import HOST_GPU_SETUP

    setup = " && ".join(" ".join(c) for c in HOST_GPU_SETUP)
    if shutil.which("nvidia-ctk") is None:
        return Finding(
            "container-toolkit",
            "skip" if shutil.which("nvidia-smi") is None else "fail",
            "nvidia-container-toolkit not installed",
            "install it (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html), "
            "then " + setup,
            ["kind --gpus"],
        )
    try:
        text = config_path.read_text()
    except OSError:
        text = ""
    accepts = any(
        line.replace(" ", "").lower() == "accept-nvidia-visible-devices-as-volume-mounts=true"
        for line in text.splitlines()
    )
    if not accepts:
        return Finding(
            "container-toolkit",
            "fail",
            f"{config_path}: accept-nvidia-visible-devices-as-volume-mounts is not true",
            setup,
            ["kind --gpus"],
        )
    rc, runtime = _run(["docker", "info", "--format", "{{.DefaultRuntime}}"])
    if rc == 0 and runtime.strip() != "nvidia":
        return Finding(
            "container-toolkit",
            "fail",
            f"docker's default runtime is {runtime.strip()!r}, not nvidia",
            setup,
            ["kind --gpus"],
        )
    return Finding(
        "container-toolkit", "ok", "nvidia runtime default, volume-mount device selection on", "", ["kind --gpus"]
    )


def check_ports(ports: list[int]) -> Finding:
    from llmdctl.local.ports import is_free

    busy = [p for p in ports if not is_free(p)]
    if busy:
        return Finding(
            "ports",
            "warn",
            f"in use on 127.0.0.1: {', '.join(map(str, busy))}",
            "stop what holds them or pass --port with a free one",
            ["local", "kind", "kube"],
        )
    return Finding("ports", "ok", f"free: {', '.join(map(str, ports))}", "", ["local", "kind", "kube"])


def check_vllm_engine() -> Finding:
    try:
        from llmdctl.engines.vllm_env import vllm_status
    except ImportError:
        return Finding("vllm-engine", "skip", "engine support not installed in this build", "", ["local --engine vllm"])
    try:
        st = vllm_status()
    except Exception as exc:  # a broken venv must not break doctor
        return Finding(
            "vllm-engine",
            "warn",
            f"cannot inspect the vLLM environment: {exc}",
            "llmdctl engine install vllm",
            ["local --engine vllm"],
        )
    if not st.installed:
        return Finding(
            "vllm-engine", "skip", f"not installed ({st.venv})", "llmdctl engine install vllm", ["local --engine vllm"]
        )
    return Finding(
        "vllm-engine",
        "ok",
        f"vLLM {st.vllm_version} ({st.build}), torch {st.torch_version}",
        "",
        ["local --engine vllm"],
    )


def check_schemas() -> Finding:
    from llmdctl.k8s.validate import DEFAULT_K8S_VERSION, supported_versions

    versions = supported_versions()
    ok = DEFAULT_K8S_VERSION in versions
    return Finding(
        "k8s-schemas",
        "ok" if ok else "fail",
        f"kubernetes-validate schemas {versions[0]}..{versions[-1]} (offline)",
        "" if ok else "pip install -U kubernetes-validate",
        ["kind", "kube"],
    )


def run_checks(ports: list[int] | None = None) -> list[Finding]:
    checks: list[Callable[[], Finding]] = [
        check_python,
        check_docker,
        lambda: check_tool("kind"),
        lambda: check_tool("kubectl"),
        check_kubeconfig,
        check_gpu_driver,
        check_container_toolkit,
        lambda: check_ports(ports or [8000]),
        check_vllm_engine,
        check_schemas,
    ]
    return [c() for c in checks]


TARGETS = ("local", "local --engine vllm", "kind", "kind --gpus", "kube")


def readiness(findings: list[Finding]) -> dict[str, list[str]]:
    """Target -> names of failed/skipped checks that block it (empty: ready). `kind --gpus` needs kind's too."""
    out: dict[str, list[str]] = {}
    for target in TARGETS:
        needs = (
            {target}
            | ({"kind"} if target == "kind --gpus" else set())
            | ({"local"} if target == "local --engine vllm" else set())
        )
        out[target] = [f.name for f in findings if f.status in ("fail", "skip") and needs & set(f.needed_for)]
    return out
