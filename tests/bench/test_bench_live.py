"""`llmdctl bench` against a real small local stack: sim pods + router as processes on loopback, free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, free_port_block

REPO = Path(__file__).resolve().parents[2]
_ADMIN_ENV: dict[str, str] = {}


@pytest.fixture(scope="module")
def stack_url(tmp_path_factory):
    from llmdctl.local import stack

    home = tmp_path_factory.mktemp("bench-home")
    try:
        res = stack.up(
            "precise-prefix-cache",
            replicas=2,
            sets=["pools.0.num_gpu_blocks=512"],
            router_port=free_port(),
            pod_port=free_port_block(2),
            events_port=free_port_block(2),
            home=home,
            timeout_s=60,
        )
        from llmdctl.local.state import admin_key_path

        # `bench --compare` switches the router through its admin API: with the stack's key, as a user's shell
        # would (the bench runs with another LLMDCTL_HOME, so it cannot read the run directory's key file)
        _ADMIN_ENV["LLMD_ROUTER_ADMIN_KEY"] = admin_key_path(home).read_text().strip()
        yield res.state.router_url
    finally:
        stack.down(home=home)


def bench(*args: str, timeout: float = 120) -> dict:
    env = {**os.environ, "NO_COLOR": "1", "LLMDCTL_HOME": "/nonexistent-llmdctl-home", **_ADMIN_ENV}
    p = subprocess.run(
        [sys.executable, "-m", "llmdctl", "bench", *args, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


def test_bench_json_against_live_stack(stack_url: str, tmp_path: Path) -> None:
    doc = bench(
        "--url",
        stack_url,
        "--rate",
        "8:1",
        "--groups",
        "2",
        "--prompts-per-group",
        "2",
        "--system-len",
        "256",
        "--question-len",
        "32",
        "--output-len",
        "8",
        "--max-requests",
        "8",
        "--out",
        str(tmp_path),
    )
    s = doc["summary"]
    assert s["requests"] >= 1 and s["ok"] == s["requests"] and s["errors"] == 0
    assert s["output_tokens"] == 8 * s["ok"]  # ignore_eos: exact output lengths
    assert s["ttft_s"]["p50"] is not None and s["ttft_s"]["p50"] > 0
    assert len(doc["pods"]) == 2 and s["pod_hit_rate"] is not None
    assert set(s["endpoints"]) <= {p.removeprefix("http://") for p in doc["pods"]}
    assert (tmp_path / "bench.json").is_file() and (tmp_path / "bench_stages.png").stat().st_size > 1000


def test_bench_multi_turn_closed_loop(stack_url: str) -> None:
    doc = bench(
        "--url",
        stack_url,
        "--workload",
        "multi-turn",
        "--sessions",
        "2",
        "--turns",
        "2",
        "--concurrency",
        "2",
        "--system-len",
        "128",
        "--question-len",
        "16",
        "--output-len",
        "4",
    )
    s = doc["summary"]
    assert s["requests"] == 4 and s["ok"] == 4
    assert s["pod_hit_rate"] > 0.3  # second turns reuse the first turns' history


def test_bench_compare_switches_router_live(stack_url: str) -> None:
    doc = bench(
        "--url",
        stack_url,
        "--compare",
        "random,precise",
        "--concurrency",
        "2",
        "--num-requests",
        "6",
        "--groups",
        "2",
        "--prompts-per-group",
        "3",
        "--system-len",
        "256",
        "--question-len",
        "16",
        "--output-len",
        "4",
    )
    assert list(doc["runs"]) == ["random", "precise"]
    for r in doc["runs"].values():
        assert r["summary"]["ok"] == 6
    assert doc["ratios"]["random"]["TTFT p90 (x better)"] == 1.0


def test_bench_bad_flags_are_one_line_errors() -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "llmdctl", "bench", "--url", "http://127.0.0.1:1", "--rate", "fast"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and p.stderr.strip().startswith("error: --rate") and "Traceback" not in p.stderr


def test_bench_num_requests_bounds_a_rate_load(stack_url: str) -> None:
    doc = bench(
        "--url", stack_url, "--rate", "8:4", "-n", "2", "--system-len", "64", "--question-len", "8", "--output-len", "2"
    )
    assert doc["summary"]["requests"] == 2  # the 32 arrivals of the rate stage are cut to -n


def test_bench_against_nothing_fails_at_once() -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "llmdctl", "bench", "--url", f"http://127.0.0.1:{free_port()}", "-n", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 1 and len(lines) == 1 and "nothing answers" in lines[0], p.stderr
