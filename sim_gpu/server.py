"""`sim serve`'s process: every pod and rank of one process on consecutive ports, one event loop, one signal handler.

All pods share one event loop (uvloop) and one uvicorn server per port, which keeps a laptop's cores free
for the router and the benchmark client. The pieces: `serve_config` (flags, engine building), `pod` (the
engine-driving loop), `routes` (the HTTP face), and this module (sockets, servers, start and shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from typing import Any

from kvtiers.tokenizer import load_tokenizer
from sim_gpu.faults import FaultInjector
from sim_gpu.pod import Pod
from sim_gpu.routes import PodApp
from sim_gpu.serve_config import ServeConfig, build_latency
from sim_gpu.tiers import parse_spec as parse_tiers

__all__ = ["ServeConfig", "SimProcess", "run"]

SHUTDOWN_GRACE_S = 2.0  # in-flight requests get this long after SIGTERM, then their tasks are cancelled


class _Server:
    """A uvicorn server that leaves signal handling to the runner (one handler for every pod)."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        class _NoSignals(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[override]
                yield

        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            http="httptools",
            lifespan="off",
            timeout_keep_alive=60,
            backlog=4096,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
        self.server = _NoSignals(config)
        self.sock = sock

    async def serve(self) -> None:
        await self.server.serve(sockets=[self.sock])


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"--port: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class SimProcess:
    """Every pod and rank of one `sim serve` process."""

    def __init__(self, cfg: ServeConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        self.faults = FaultInjector(
            cfg.failure_injection_rate, list(cfg.failure_types), cfg.startup_delay, cfg.crash_after, seed=cfg.seed
        )
        self.tiers = parse_tiers(cfg.kv_tiers) if cfg.kv_tiers else None  # (spec, base dir)
        self.pods: list[Pod] = []
        self._servers: list[_Server] = []

    def build(self) -> None:
        """Create engines, publishers and sockets (raises ValueError with a one-line message on bad input)."""
        socks: list[socket.socket] = []
        latency = build_latency(self.cfg)
        try:
            for i in range(self.cfg.pods):
                for r in range(self.cfg.data_parallel_size):
                    pod = Pod(
                        self.cfg, i, r, tokenizer=self.tokenizer, faults=self.faults, latency=latency, tiers=self.tiers
                    )
                    self.pods.append(pod)
                    socks.append(_bind(self.cfg.host, pod.port))
        except Exception:
            for s in socks:
                s.close()
            for p in self.pods:
                if p.publisher:
                    p.publisher.close()
            raise
        self._servers = [_Server(PodApp(p).app, s) for p, s in zip(self.pods, socks)]

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        # *_created series stay: a live vLLM 0.32 pod exposes them (issue 17), and dashboards reading them see
        # the simulator's too.
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        for p in self.pods:
            p.start()
        tasks = [asyncio.ensure_future(s.serve()) for s in self._servers]
        while not all(s.server.started for s in self._servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.005)
        self.faults.start_delay()
        self._announce()
        if ready is not None:
            ready.set()
        done_waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([done_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for s in self._servers:
            s.server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        done_waiter.cancel()
        for p in self.pods:
            await p.stop()

    def _announce(self) -> None:
        cfg, first, last = self.cfg, self.pods[0], self.pods[-1]
        events = ""
        if cfg.kv_events_endpoint:
            events = f", KV events {first.publisher.endpoint}..{last.publisher.endpoint}"  # type: ignore[union-attr]
        if self.tiers is not None:
            spec = self.tiers[0]
            fs = spec["filesystem"]
            events += f"; KV tiers: CPU {spec['cpu_blocks']} blocks" + (
                f", shared FS {fs['path']!r} ({fs['capacity_mb']} MB)" if fs else ""
            )
        sys.stderr.write(
            f"sim_gpu: serving {cfg.model!r} ({cfg.model_profile} on {cfg.tp}x {cfg.hardware}, role {cfg.role}) "
            f"as {len(self.pods)} pod/rank(s) on http://{cfg.host}:{first.port}..{last.port}"
            f"{events}; {first.engine.stats().num_gpu_blocks} blocks of {first.engine.stats().block_size} per pod; "
            f"time scale {cfg.time_scale or 'instant'}\n"
        )
        sys.stderr.flush()


def run(cfg: ServeConfig) -> None:
    """Build and serve until SIGINT/SIGTERM (ValueError for user mistakes, raised before serving)."""
    proc = SimProcess(cfg)

    async def main() -> None:
        proc.build()
        await proc.serve()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(main())
