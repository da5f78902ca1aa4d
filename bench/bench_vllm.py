"""Real vLLM behind the router: start time per pod, prefix-hit vs miss latency, and calibration errors.

    python bench/bench_vllm.py [--model DIR] [--size small] [--groups 6] [--per-group 4] [--calibrate] [--out F.json]

Starts `precise-prefix-cache --engine vllm` with 2 pods in a private $LLMDCTL_HOME (builds the tiny model of
`--size` when no --model is given), sends prefix groups through the router (the first request of a group is a
miss, the rest hit the pod that holds the prefix), prints medians side by side, optionally runs
`sim calibrate` against pod 0, writes JSON, and always stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SENTENCE = "The router sends each request to the pod that holds the longest cached prefix of its prompt. "


class _Progress:
    def __init__(self) -> None:
        self.ready_s: dict[str, float] = {}

    def planned(self, components) -> None:
        pass

    def started(self, component) -> None:
        pass

    def ready(self, component, seconds: float) -> None:
        self.ready_s[component.name] = seconds


def _ttft(client: httpx.Client, router: str, model: str, prompt: str) -> tuple[float, float, str]:
    body = {"model": model, "prompt": prompt, "max_tokens": 8, "ignore_eos": True, "stream": True}
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", router + "/v1/completions", json=body) as r:
        r.raise_for_status()
        pod = r.headers.get("x-llmd-endpoint", "?")
        for line in r.iter_lines():
            if first is None and line.startswith("data: {"):
                first = time.perf_counter() - t0
    return first or float("nan"), time.perf_counter() - t0, pod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--groups", type=int, default=6)
    ap.add_argument("--per-group", type=int, default=4)
    ap.add_argument("--prefix-sentences", type=int, default=60, help="prefix length in sentences (~19 tokens each)")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "vllm.json"))
    args = ap.parse_args()

    from llmdctl.engines.vllm_env import vllm_venv_dir
    from llmdctl.local import stack

    venv = str(vllm_venv_dir())
    home = Path(tempfile.mkdtemp(prefix="llmdctl-bench-vllm-"))
    os.environ.update({"LLMDCTL_HOME": str(home), "LLMDCTL_VLLM_VENV": venv})
    model = args.model
    if not model:
        from llmdctl.commands.model import make_tiny

        model = str(home / f"{args.size}-model")
        make_tiny(model, args.size, 0)
    progress = _Progress()
    result: dict = {"model": model, "size": args.size if not args.model else None}
    t0 = time.monotonic()
    try:
        up = stack.up(
            "precise-prefix-cache", engine="vllm", model=model, replicas=2, home=home, progress=progress, timeout_s=900
        )
        result["up_seconds"] = round(up.seconds, 1)
        result["ready_seconds"] = {k: round(v, 1) for k, v in progress.ready_s.items()}
        router, served = up.state.router_url, up.state.model
        miss, hit, miss_e2e, hit_e2e, scattered = [], [], [], [], 0
        with httpx.Client(timeout=300) as client:
            deadline = time.monotonic() + 120  # the router may still be marking the pods healthy
            while True:
                try:
                    _ttft(client, router, served, "warm up " + SENTENCE)
                    break
                except httpx.HTTPStatusError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)
            for g in range(args.groups):
                prefix = f"Group {g} system prompt. " + SENTENCE * args.prefix_sentences
                pods = set()
                for i in range(args.per_group):
                    ttft, e2e, pod = _ttft(client, router, served, prefix + f" Question {i}?")
                    pods.add(pod)
                    (miss if i == 0 else hit).append(ttft)
                    (miss_e2e if i == 0 else hit_e2e).append(e2e)
                scattered += len(pods) > 1
        result.update(
            {
                "prefix_tokens_approx": args.prefix_sentences * 19,
                "ttft_miss_median_s": statistics.median(miss),
                "ttft_hit_median_s": statistics.median(hit),
                "e2e_miss_median_s": statistics.median(miss_e2e),
                "e2e_hit_median_s": statistics.median(hit_e2e),
                "groups_scattered": scattered,
            }
        )
        result["ttft_speedup"] = result["ttft_miss_median_s"] / result["ttft_hit_median_s"]
        if args.calibrate:
            from sim_gpu.calibrate import calibrate

            pod0 = up.state.pods[0].url
            cal = calibrate(
                pod0,
                home / "calibration",
                hardware="cpu",
                seed=0,
                say=lambda s: print("  " + s, file=sys.stderr),
            )
            result["calibration"] = {"values": cal.values, "heldout": cal.heldout, "fit_in_sample": cal.fit}
    finally:
        stack.down(home)
    result["total_seconds"] = round(time.monotonic() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"model {model}: up {result['up_seconds']} s, per component {result['ready_seconds']}")
    print(
        f"TTFT through the router (median): miss {result['ttft_miss_median_s'] * 1e3:.0f} ms | hit "
        f"{result['ttft_hit_median_s'] * 1e3:.0f} ms | x{result['ttft_speedup']:.1f}   (e2e miss "
        f"{result['e2e_miss_median_s'] * 1e3:.0f} ms, hit {result['e2e_hit_median_s'] * 1e3:.0f} ms; groups scattered: "
        f"{result['groups_scattered']}/{args.groups})"
    )
    if "calibration" in result:
        for h in result["calibration"]["heldout"]:
            print(
                f"calibration, held-out {h['shape']}: TTFT error median {h['ttft_median']:.1%} p90 {h['ttft_p90']:.1%};"
                f" end-to-end median {h['e2e_median']:.1%} p90 {h['e2e_p90']:.1%}"
            )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
