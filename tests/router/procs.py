"""Real processes for router tests: simulator pods and routers on loopback, always cleaned up."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from sim_gpu.procs import free_port_block, spawn
from sim_gpu.procs import stop as _stop
from sim_gpu.procs import wait_http as _wait_http

ROOT = Path(__file__).resolve().parents[2]
MODEL = "sim-model"


@dataclass
class SimPods:
    """One `python -m sim_gpu serve` process hosting `pods` pods on consecutive ports."""

    port: int
    events_port: int | None
    pods: int
    proc: subprocess.Popen
    role: str = "both"

    def address(self, i: int = 0) -> str:
        return f"127.0.0.1:{self.port + i}"

    def endpoint_entries(self) -> list[dict]:
        out = []
        for i in range(self.pods):
            e: dict = {"address": self.address(i), "name": f"pod-{self.port + i}"}
            if self.role != "both":
                e["labels"] = {"llm-d.ai/role": self.role}
            if self.events_port is not None:
                e["kvEvents"] = {
                    "endpoint": f"tcp://*:{self.events_port + i}",
                    "topic": f"kv@{self.address(i)}@{MODEL}",
                    "bind": False,
                }
            out.append(e)
        return out

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as a crashed pod."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _launch_sim(
    pods: int, events: bool, role: str, time_scale: float, block_size: int, num_gpu_blocks: int, extra: list[str] | None
) -> SimPods:
    port = free_port_block(pods)
    events_port = free_port_block(pods) if events else None
    cmd = [
        sys.executable,
        "-m",
        "sim_gpu",
        "serve",
        "--port",
        str(port),
        "--pods",
        str(pods),
        "--model",
        MODEL,
        "--block-size",
        str(block_size),
        "--num-gpu-blocks",
        str(num_gpu_blocks),
        "--time-scale",
        str(time_scale),
        "--role",
        role,
    ]
    if events_port is not None:
        cmd += ["--kv-events-endpoint", f"tcp://*:{events_port}"]
    cmd += extra or []
    proc = spawn(cmd, cwd=ROOT)
    return SimPods(port, events_port, pods, proc, role)


@contextlib.contextmanager
def sim_group(
    count: int,
    pods: int = 1,
    *,
    events: bool = True,
    role: str | list[str] = "both",
    time_scale: float = 0.0,
    block_size: int = 16,
    num_gpu_blocks: int = 4000,
    extra: list[str] | None = None,
    extras: list[list[str]] | None = None,
) -> Iterator[list[SimPods]]:
    """`count` simulator processes started in parallel.

    One per role when `role` is a list; `extras`: flags per process.
    """
    roles = role if isinstance(role, list) else [role] * count
    sims: list[SimPods] = []
    try:
        for i, r in enumerate(roles):
            sims.append(
                _launch_sim(
                    pods,
                    events,
                    r,
                    time_scale,
                    block_size,
                    num_gpu_blocks,
                    (extra or []) + (extras[i] if extras else []),
                )
            )
        for sim in sims:
            for i in range(sim.pods):
                _wait_http(f"http://127.0.0.1:{sim.port + i}/health", sim.proc)
        yield sims
    finally:
        for sim in sims:
            _stop(sim.proc)


@contextlib.contextmanager
def sim_pods(pods: int = 1, **kw) -> Iterator[SimPods]:
    """One simulator process hosting `pods` pods on consecutive ports."""
    with sim_group(1, pods, **kw) as sims:
        yield sims[0]


@dataclass
class Router:
    url: str
    proc: subprocess.Popen
    endpoints_file: Path
    workdir: Path
    entries: list[dict] = field(default_factory=list)

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 30.0), **kw)

    def write_endpoints(self, entries: list[dict]) -> None:
        tmp = self.endpoints_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump({"endpoints": entries}))
        tmp.replace(self.endpoints_file)

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of a router metric's samples whose line starts with `name` (+ optional label text)."""
        total = 0.0
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith(name) and (not labels or labels in line):
                total += float(line.rsplit(" ", 1)[1])
        return total


@contextlib.contextmanager
def router(entries: list[dict], config: str | None = None, args: list[str] | None = None) -> Iterator[Router]:
    """A `python -m router_lite serve` process over an endpoints file built from `entries`."""
    port = free_port_block(1)
    with tempfile.TemporaryDirectory(prefix="router-test-") as tmp:
        work = Path(tmp)
        eps = work / "endpoints.yaml"
        eps.write_text(yaml.safe_dump({"endpoints": entries}))
        cmd = [
            sys.executable,
            "-m",
            "router_lite",
            "serve",
            "--port",
            str(port),
            "--endpoints-file",
            str(eps),
            "--log-level",
            "warning",
        ]
        if config is not None:
            cfg = work / "config.yaml"
            cfg.write_text(config)
            cmd += ["--config", str(cfg)]
        cmd += args or []
        env = dict(os.environ)
        proc = spawn(cmd, cwd=ROOT, env=env)
        try:
            _wait_http(f"http://127.0.0.1:{port}/health", proc)
            yield Router(f"http://127.0.0.1:{port}", proc, eps, work, entries)
        finally:
            _stop(proc)


def wait_until(cond, timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def words(tag: str, n: int) -> str:
    """`n` distinct words for prompt building (each a few tokens with the simulator's tokenizer)."""
    return " ".join(f"{tag}w{i}" for i in range(n))


PRECISE_CONFIG = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: precise-prefix-cache-scorer
  - type: active-request-scorer
  - type: queue-scorer
schedulingProfiles:
  - name: default
    plugins:
      - {pluginRef: precise-prefix-cache-scorer, weight: 3}
      - {pluginRef: active-request-scorer, weight: 1}
      - {pluginRef: queue-scorer, weight: 1}
"""

APPROX_CONFIG = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: prefix-cache-scorer
  - type: active-request-scorer
  - type: queue-scorer
schedulingProfiles:
  - name: default
    plugins:
      - {pluginRef: prefix-cache-scorer, weight: 3}
      - {pluginRef: active-request-scorer, weight: 1}
      - {pluginRef: queue-scorer, weight: 1}
"""

ROUND_ROBIN_CONFIG = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: round-robin
schedulingProfiles:
  - name: default
    plugins:
      - {pluginRef: round-robin}
"""
