"""Start and stop real vLLM servers (and the router in front of them) for the integration tests.

Every process gets its own session (process group), so teardown kills vLLM's EngineCore and worker
children too; nothing outlives a test module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sim_gpu import procs
from sim_gpu.procs import free_port_block as free_block  # noqa: F401 - the harness's name
from sim_gpu.procs import free_ports, stop

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = float(os.environ.get("LLMDCTL_VLLM_START_TIMEOUT", "300"))


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    url: str
    started: float
    ready_s: float | None = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def spawn(name: str, argv: list[str], env: dict[str, str], log: Path, url: str) -> Proc:
    return Proc(name, procs.spawn(argv, log=log, env=env, cwd=REPO), log, url, time.monotonic())


def wait_healthy(procs: list[Proc], timeout_s: float = START_TIMEOUT_S, path: str = "/health") -> None:
    """Block until every process answers 200 on `path`; a death or the timeout fails with its log tail."""
    deadline = time.monotonic() + timeout_s
    pending = list(procs)
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for proc in list(pending):
                if proc.popen.poll() is not None:
                    raise RuntimeError(
                        f"{proc.name} exited with {proc.popen.returncode} during start:\n{proc.log_tail()}"
                    )
                try:
                    if client.get(proc.url + path).status_code == 200:
                        proc.ready_s = time.monotonic() - proc.started
                        pending.remove(proc)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{pending[0].name} not healthy after {timeout_s:.0f} s:\n{pending[0].log_tail()}")
            time.sleep(0.5)


def metric(url: str, name: str, client: httpx.Client | None = None) -> float:
    """Sum of one Prometheus sample family (all label sets) from `url`/metrics."""
    c = client or httpx.Client(timeout=5.0)
    text = c.get(url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class EventCollector:
    """A ZMQ SUB on one vLLM pod's KV-event socket, decoding every batch in a background thread."""

    def __init__(self, endpoint: str, bind: bool = False) -> None:
        """`bind`: for a real vLLM pod publishing to a non-wildcard tcp address, which vLLM *connects* to (it
        binds only `tcp://*` and ipc endpoints); connect to a publisher that binds (the simulator on `tcp://*`)."""
        import zmq

        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.setsockopt(zmq.RCVTIMEO, 200)
        if bind:
            self._sock.bind(endpoint)
        else:
            self._sock.connect(endpoint)
        self.events: list[Any] = []
        self.topics: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import zmq

        from kvtiers.kvevents import decode_payload

        while not self._stop.is_set():
            try:
                frames = self._sock.recv_multipart()
            except zmq.Again:
                continue
            except zmq.ZMQError:
                return
            if len(frames) >= 3:
                self.topics.add(frames[0])
                batch = decode_payload(frames[-1])
                self.events.extend(batch.events)

    def stored_hashes(self) -> set[int]:
        out: set[int] = set()
        for ev in self.events:
            if type(ev).__name__ == "BlockStored":
                out.update(ev.block_hashes)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close(linger=0)


@dataclass
class Stack:
    """Two (or n) vLLM pods, optionally a router in front; all processes torn down together."""

    pods: list[Any]  # llmdctl.engines.vllm_local.VllmPod
    procs: list[Proc]
    model_dir: str
    hash_seed: str
    block_size: int
    router: Proc | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for proc in ([self.router] if self.router else []) + self.procs:
            stop(proc.popen, grace_s=20.0)


def start_vllm_pods(
    model_dir: str, n: int, tmp: Path, hash_seed: str, num_blocks: int = 256, args: list[str] | None = None
) -> Stack:
    """n real vLLM pods with llmdctl's own flags and environment (llmdctl.engines.vllm_local); `args`: more flags."""
    sys.path.insert(0, str(REPO))
    from llmdctl.engines.vllm_local import vllm_components
    from llmdctl.profile import PoolSpec

    class _Profile:
        model = "tiny"

    ports = free_ports(2 * n)
    pool = PoolSpec(
        name="vllm",
        replicas=n,
        block_size=32,
        num_gpu_blocks=num_blocks,
        max_model_len=4096,
        max_num_batched_tokens=4096,
        max_num_seqs=16,
        args=list(args or []),
    )
    pods = vllm_components(_Profile(), pool, ports[:n], ports[n:], model_dir, hash_seed=hash_seed, build="cpu")
    procs = [spawn(p.name, p.argv, p.env, tmp / f"{p.name}.log", p.url) for p in pods]
    stack = Stack(pods=pods, procs=procs, model_dir=model_dir, hash_seed=hash_seed, block_size=pods[0].block_size)
    try:
        wait_healthy(procs)
    except BaseException:
        stack.close()
        raise
    return stack


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path
