"""`router_lite serve --discovery kubernetes`: the router follows pods through the real kubernetes client
(kubeconfig -> a fake API server on loopback) and routes to simulator pods as they become Ready and go away.
No cluster can run here; tests/k8s/test_k8s_discovery.py's fake API speaks enough of list + watch."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port_block
from tests.k8s.test_k8s_discovery import SELECTOR, FakeAPI, pod
from tests.router.procs import MODEL, PRECISE_CONFIG, ROOT, _stop, _wait_http, sim_pods, wait_until

pytestmark = pytest.mark.timeout(120)


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": "llmd"}}],
            }
        )
    )
    return path


@contextlib.contextmanager
def k8s_router(tmp: Path, args: list[str], kubeconfig: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port_block(1)
    (tmp / "config.yaml").write_text(PRECISE_CONFIG)
    cmd = [
        sys.executable,
        "-m",
        "router_lite",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--config",
        str(tmp / "config.yaml"),
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}  # never in-cluster here
    env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        _stop(proc)


def _endpoints(url: str) -> list[str]:
    return sorted(e["endpoint"] for e in httpx.get(url + "/debug/endpoints", timeout=5).json()["endpoints"])


def _served_by(url: str, prompt: str) -> str:
    r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["x-llmd-endpoint"]


def test_router_follows_ready_pods_from_the_api_and_routes_to_them(tmp_path):
    with sim_pods(2, events=True) as sim:
        p0, p1 = sim.port, sim.port + 1
        e0, e1 = sim.events_port, sim.events_port + 1
        # Two pods on loopback: each declares its own server port and event port (rank 0 / rank 1 of the
        # target ports), as a pod declares containerPorts.
        api = FakeAPI(
            [pod("sim-a", "127.0.0.1", ports=(p0, e0)), pod("sim-b", "127.0.0.1", ready=False, ports=(p1, e1))]
        )
        try:
            kubeconfig = _kubeconfig(tmp_path / "kubeconfig", api.url)
            args = [
                "--discovery",
                "kubernetes",
                "--namespace",
                "llmd",
                "--selector",
                SELECTOR,
                "--target-ports",
                f"{p0},{p1}",
                "--kv-events-port",
                str(e0),
            ]
            with k8s_router(tmp_path, args, kubeconfig) as (url, proc):
                wait_until(lambda: _endpoints(url) == [f"127.0.0.1:{p0}"] and api.watches, timeout=10)
                desc = httpx.get(url + "/debug/endpoints", timeout=5).json()
                assert desc["discovery"]["mode"] == "kubernetes" and desc["discovery"]["selector"] == SELECTOR
                assert desc["discovery"]["namespace"] == "llmd" and desc["discovery"]["errors"] == 0
                (ep,) = desc["endpoints"]
                assert ep["name"] == "sim-a" and ep["kv_events"] == {
                    "endpoint": f"tcp://127.0.0.1:{e0}",
                    "topic": "",
                    "bind": False,
                }
                assert [s["url"] for s in desc["kv_events"]["sockets"]] == [f"tcp://127.0.0.1:{e0}"]
                assert _served_by(url, "hello from the cluster") == f"127.0.0.1:{p0}"

                api.emit("MODIFIED", pod("sim-b", "127.0.0.1", ports=(p1, e1)))  # becomes Ready
                wait_until(lambda: _endpoints(url) == [f"127.0.0.1:{p0}", f"127.0.0.1:{p1}"], timeout=10)
                api.emit("DELETED", pod("sim-a", "127.0.0.1", ports=(p0, e0)))
                wait_until(lambda: _endpoints(url) == [f"127.0.0.1:{p1}"], timeout=10)
                desc = httpx.get(url + "/debug/endpoints", timeout=5).json()
                assert [s["url"] for s in desc["kv_events"]["sockets"]] == [f"tcp://127.0.0.1:{e1}"]
                assert {_served_by(url, f"prompt {i}") for i in range(3)} == {f"127.0.0.1:{p1}"}
                assert set(api.selectors) == {SELECTOR}

                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)  # the discovery watch thread must not hold the exit up
                proc.wait(10)
                assert time.monotonic() - t0 < 2.5
        finally:
            api.close()


def test_discovery_flags_are_checked_with_one_line_errors(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from router_lite.cli import app

    for k in [k for k in os.environ if k.startswith("KUBERNETES_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either
    cases = [
        (["--discovery", "kubernetes"], "--discovery kubernetes needs --selector"),
        (["--discovery", "kubernetes", "--selector", "a"], "--selector 'a': expected key=value"),
        (["--discovery", "kubernetes", "--selector", "a=b", "--target-ports", "80x"], "--target-ports '80x'"),
        (
            ["--discovery", "kubernetes", "--selector", "a=b"],
            "--discovery kubernetes: no in-cluster service account and no usable kubeconfig",
        ),
        (["--discovery", "dns"], "--discovery: expected one of static, file, kubernetes, got 'dns'"),
        (["--discovery", "file"], "--discovery file needs --endpoints-file FILE"),
        (["--endpoints", "127.0.0.1:9", "--selector", "a=b"], "--selector is for --discovery kubernetes"),
        ([], "no endpoints: give --endpoints"),
    ]
    runner = CliRunner()
    for args, message in cases:
        r = runner.invoke(app, ["serve", *args])
        err = r.stderr.strip()
        assert r.exit_code == 2 and err.startswith("error: ") and message in err, (args, err, r.exception)
        assert len(err.splitlines()) == 1, err
