"""Record real vLLM (CPU) request traces: the fixtures the simulator's timing is checked against.

    python bench/record_vllm_traces.py [--model DIR] [--shapes long-prefix,short-many,...] [--seed 0]
        [--out tests/fixtures/vllm_traces] [--keep-up]

Starts `llmdctl up precise-prefix-cache --engine vllm --replicas 2` (the `small` tiny model, 256 KV blocks of
32 tokens per pod, max_num_seqs 32, its own $LLMDCTL_HOME under /tmp), warms both pods, then for each shape of
`sim_gpu.traces.build_shapes` resets both pods' prefix caches and sends the shape open-loop (token-id prompts,
exact output lengths): straight to pod 0, or through the router for `two-pods`. Each trace is written as
`<out>/<shape>.json` with the pods' exact command lines. Bounded: every shape has a fixed request count and a
per-request timeout. Run it on a quiet machine: the traces are the reference timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_routing_real import small_model, start_real_pods  # noqa: E402

from sim_gpu.traces import build_shapes, record_shape  # noqa: E402


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pod_process(port: int) -> psutil.Process | None:
    """The process listening on 127.0.0.1:`port` (the vLLM API server)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    return None


def pod_cmdline(port: int) -> list[str]:
    """The vLLM API server's command line."""
    proc = _pod_process(port)
    return proc.cmdline() if proc else []


def pod_env(port: int) -> dict[str, str]:
    """The vLLM API server's environment (its engine's core binding is there)."""
    proc = _pod_process(port)
    return proc.environ() if proc else {}


def preemptions(client: httpx.Client, pods: list[str]) -> float:
    """vLLM's vllm:num_preemptions_total summed over the pods."""
    total = 0.0
    for p in pods:
        for line in client.get(p + "/metrics").text.splitlines():
            if line.startswith("vllm:num_preemptions_total"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def flags_of(argv: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "true"
            out[a[2:]] = nxt
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="local model directory (default: build the `small` tiny model in the home)")
    ap.add_argument("--home", default="/tmp/llmdctl-record-traces")
    ap.add_argument("--shapes", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-gpu-blocks", type=int, default=256)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--port", type=int, default=8750)
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "vllm_traces"))
    ap.add_argument("--keep-up", action="store_true")
    ap.add_argument(
        "--engine-cores",
        default="",
        help="pin every pod's engine to these cores (VLLM_CPU_OMP_THREADS_BIND, e.g. 0): two pods sharing one core "
        "leave the other to the router, the API servers and this client (default: one core per pod)",
    )
    args = ap.parse_args()

    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["LLMDCTL_HOME"] = str(home)
    os.environ.setdefault("LLMDCTL_VLLM_VENV", str(Path.home() / ".llmdctl" / "engines" / "vllm"))
    from llmdctl.local import stack

    model = small_model(home, args.model)
    config = json.loads((Path(model) / "config.json").read_text())
    shapes = build_shapes(int(config["vocab_size"]), args.seed)
    wanted = [s for s in args.shapes.split(",") if s] or list(shapes)
    for s in wanted:
        if s not in shapes:
            ap.error(f"--shapes: unknown {s!r}; expected {', '.join(shapes)}")

    say("starting 2 real vLLM pods + router_lite ...")
    # usage reports each request's prefix-cache hit
    up, pods = start_real_pods(
        home,
        model,
        args.port,
        args.num_gpu_blocks,
        args.max_num_seqs,
        (
            "pools.0.args=[--enable-prompt-tokens-details]",
            *([f"pools.0.env.VLLM_CPU_OMP_THREADS_BIND={args.engine_cores}"] if args.engine_cores else []),
        ),
    )
    state = up.state
    served = state.model
    say(f"up in {up.seconds:.0f}s: router {state.router_url}, pods {', '.join(pods)}")
    argv = pod_cmdline(int(pods[0].rsplit(":", 1)[1]))
    try:
        with httpx.Client(trust_env=False, timeout=120) as c:
            version = c.get(pods[0] + "/version").json().get("version", "")
            for p in pods:
                for _ in range(3):
                    c.post(
                        p + "/v1/completions", json={"model": served, "prompt": list(range(20, 900)), "max_tokens": 8}
                    )
        server = {
            "vllm_version": version,
            "model_config": config,
            "flags": flags_of(argv),
            "argv": argv[argv.index("--model") :] if "--model" in argv else argv,
        }
        machine = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "engine_cores": [pod_env(int(p.rsplit(":", 1)[1])).get("VLLM_CPU_OMP_THREADS_BIND", "") for p in pods],
        }
        out = Path(args.out)
        for name in wanted:
            shape = shapes[name]
            with httpx.Client(trust_env=False, timeout=30) as c:
                for p in pods:
                    c.post(p + "/reset_prefix_cache").raise_for_status()
                preempted_before = preemptions(c, pods)
            time.sleep(1.0)
            url = state.router_url if shape.via_router else pods[0]
            t = time.monotonic()

            def prog(done: int, total: int, name: str = name) -> None:
                if done % 10 == 0 or done == total:
                    say(f"  {name}: {done}/{total} ({time.monotonic() - t:.0f}s)")

            trace = asyncio.run(record_shape(shape, url, served, pods, server, progress=prog))
            trace.machine = machine
            with httpx.Client(trust_env=False, timeout=30) as c:
                trace.server = {**trace.server, "preemptions": preemptions(c, pods) - preempted_before}
            bad = [r for r in trace.requests if not r.ok]
            trace.save(out / f"{name}.json")
            say(
                f"{name}: {len(trace.requests)} requests, {len(bad)} failed, {time.monotonic() - t:.0f}s"
                f" -> {out / name}.json"
            )
            if bad:
                say(f"  first failure: {bad[0].error}")
    finally:
        if not args.keep_up:
            stack.down(home=home)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
