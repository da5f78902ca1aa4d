"""`llmdctl up/status/logs/down` on the local target with real simulator and router processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import httpx

from llmdctl.local.ports import listening_ports
from llmdctl.local.state import is_alive


def _all_ports(state: dict) -> list[int]:
    return sorted({p for c in state["components"] for p in c["ports"]})


def _assert_nothing_left(state: dict, procs_with, router_port: int) -> None:
    for comp in state["components"]:
        assert not is_alive(comp["pid"], comp["start_time"]), comp["name"]
    assert listening_ports(_all_ports(state)) == []
    assert procs_with(f"--port {router_port}") == []


def test_up_status_request_logs_idempotent_down(cli, port_args, procs_with):
    args, ports = port_args(2)
    r = cli("up", "inference-scheduling", "--replicas", "2", *args, "--json")
    assert r.code == 0, r.err
    up = json.loads(r.out)
    assert up["already_running"] is False and up["router_url"] == f"http://127.0.0.1:{ports['router']}"
    assert [p["url"] for p in up["pods"]] == [f"http://127.0.0.1:{ports['pods'] + i}" for i in range(2)]
    state = cli.state()
    assert state is not None and state["status"] == "running" and state["profile"] == "inference-scheduling"
    assert {c["name"] for c in state["components"]} == {"sim-pod", "router"}

    # `up` returned only once the router had every pod scraped healthy: no 503 for the first request
    health = httpx.get(f"{up['router_url']}/health", timeout=5).json()
    assert health["healthy_endpoints"] == health["endpoints"] == 2
    assert httpx.get(f"{up['router_url']}/health?min_healthy=3", timeout=5).status_code == 503
    resp = httpx.post(
        f"{up['router_url']}/v1/completions",
        json={"model": "sim-model", "prompt": "The quick brown fox " * 20, "max_tokens": 4},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    served_by = resp.headers["x-llmd-endpoint"]
    assert served_by in {f"127.0.0.1:{ports['pods'] + i}" for i in range(2)}
    assert resp.json()["choices"][0]["text"] is not None

    r = cli("status", "--json")
    assert r.code == 0, r.out + r.err
    st = json.loads(r.out)
    assert st["healthy"] is True and st["profile"] == "inference-scheduling"
    assert all(c["alive"] and c["healthy"] for c in st["components"])
    pods = {p["url"].rsplit("//", 1)[1]: p for p in st["pods"]}
    assert set(pods) == {f"127.0.0.1:{ports['pods'] + i}" for i in range(2)}
    for pod in pods.values():
        assert pod["healthy"] and {"waiting", "running", "kv_usage"} <= set(pod["metrics"])
    assert pods[served_by]["metrics"]["prefix_queries"] > 0 and "prefix_hit_rate" in pods[served_by]["metrics"]
    r = cli("status")
    assert r.code == 0 and "healthy" in r.out and "pod-1" in r.out

    r = cli("logs", "router", "-n", "5")
    assert r.code == 0 and r.out.strip()
    r = cli("logs", "pod-1", "-n", "100")
    assert r.code == 0 and "sim_gpu" in r.out
    r = cli("logs", "nope")
    assert r.code == 2 and "router" in r.err

    r = cli("up", "inference-scheduling", "--replicas", "2", *args)
    assert r.code == 0 and "already running" in r.out
    assert cli.state()["components"] == state["components"]
    r = cli("up", "round-robin", *args)
    assert r.code == 1 and "llmdctl down" in r.err and "inference-scheduling" in r.err

    r = cli("down", "--json")
    assert r.code == 0, r.err
    down = json.loads(r.out)
    assert down["remaining_pids"] == [] and down["listening"] == [] and set(down["stopped"]) == {"sim-pod", "router"}
    assert down["killed"] == []  # both stopped gracefully on SIGTERM (router first, then the pods)
    assert cli.state() is None
    _assert_nothing_left(state, procs_with, ports["router"])
    r = cli("logs", "router", "-n", "1")  # logs outlive the stack
    assert r.code == 0


def test_taken_router_or_pod_port_is_named_with_its_holder(cli, port_args, procs_with):
    args, ports = port_args(2)
    for flag, port in (("--port", ports["router"]), ("--pod-port", ports["pods"] + 1)):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            s.listen()
            r = cli("up", "inference-scheduling", "--replicas", "2", *args)
        assert r.code == 1, r.out
        line = r.err.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line
        assert f"port {port}" in line and f"pid {os.getpid()}" in line and flag in line
        assert cli.state() is None
        assert procs_with(f"--port {ports['router']}") == []


def test_component_failing_at_start_stops_everything_and_shows_its_log(cli, port_args, procs_with):
    args, ports = port_args(2)
    # a pass-through engine argument the simulator rejects: the profile is valid, the process dies at start
    r = cli("up", "inference-scheduling", "--replicas", "2", *args, "--set", "pools.0.args=[--max-num-seqs, lots]")
    assert r.code == 1, r.out + r.err
    assert "sim-pod failed to start" in r.err and "exited with code" in r.err
    assert "lots" in r.err  # the simulator's own error, from the log tail
    assert "Traceback" not in r.err.splitlines()[-1]
    assert cli.state() is None
    assert procs_with(f"--port {ports['router']}") == [] and procs_with(f"--port {ports['pods']}") == []
    assert listening_ports([ports["router"], ports["pods"], ports["pods"] + 1]) == []


def test_component_not_healthy_in_time_is_stopped(cli, port_args, procs_with):
    args, ports = port_args(1)
    t0 = time.monotonic()
    r = cli(
        "up", "round-robin", "--replicas", "1", *args, "--timeout", "2", "--set", "pools.0.args=[--startup-delay, '30']"
    )
    assert r.code == 1
    assert "not healthy after 2s" in r.err and "sim-pod" in r.err
    assert time.monotonic() - t0 < 20
    assert cli.state() is None and procs_with(f"--port {ports['pods']}") == []


def test_down_after_a_component_crashed(cli, port_args, procs_with):
    args, ports = port_args(1)
    r = cli("up", "round-robin", "--replicas", "1", *args)
    assert r.code == 0, r.err
    state = cli.state()
    sim = next(c for c in state["components"] if c["kind"] == "sim")
    os.killpg(sim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_alive(sim["pid"], sim["start_time"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    r = cli("status", "--json")
    assert r.code == 1
    st = json.loads(r.out)
    assert st["healthy"] is False
    assert {c["name"]: c["alive"] for c in st["components"]} == {"sim-pod": False, "router": True}
    # the router itself is up: it is not reported down because a pod is (issue 18)
    router_row = next(c for c in st["components"] if c["kind"] == "router")
    assert router_row["healthy"] is True and router_row["detail"] == "0/1 endpoints healthy", router_row
    assert [p["healthy"] for p in st["pods"]] == [False]
    r = cli("up", "round-robin", "--replicas", "1", *args)
    assert r.code == 1 and "degraded" in r.err and "sim-pod" in r.err
    r = cli("down", "--grace", "2")
    assert r.code == 0, r.err
    assert cli.state() is None
    _assert_nothing_left(state, procs_with, ports["router"])


def _listen_addresses(ports: list[int]) -> dict[int, set[str]]:
    """Local addresses (hex, as /proc/net/tcp[6] writes them) that listen on each of `ports`."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                local, state = line.split()[1], line.split()[3]
                addr, port = local.rsplit(":", 1)
                if state == "0A" and int(port, 16) in ports:
                    found.setdefault(int(port, 16), set()).add(addr)
    return found


def test_precise_stack_listens_on_loopback_only_and_events_reach_the_router(cli, port_args):
    """Sim pods connect their KV-event PUB sockets to the router's loopback SUB: nothing binds a wildcard."""
    args, ports = port_args(2)
    r = cli("up", "precise-prefix-cache", "--replicas", "2", *args, "--json")
    assert r.code == 0, r.err
    try:
        state = cli.state()
        addresses = _listen_addresses(_all_ports(state))
        loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 in tcp and tcp6 tables
        assert ports["router"] in addresses and ports["events"] in addresses  # the router binds the events ports
        assert all(addrs <= loopback for addrs in addresses.values()), addresses
        url = json.loads(r.out)["router_url"]
        body = {"model": "sim-model", "prompt": "shared system prompt for the loopback test " * 40, "max_tokens": 2}
        assert httpx.post(f"{url}/v1/completions", json=body, timeout=10).status_code == 200
        deadline = time.monotonic() + 15
        blocks = 0
        while time.monotonic() < deadline and not blocks:
            blocks = httpx.get(f"{url}/debug/endpoints", timeout=5).json()["indexes"]["precise"]["blocks"]
            time.sleep(0.1)
        assert blocks > 0  # BlockStored events crossed the connect-mode sockets into the router's index
    finally:
        assert cli("down").code == 0


def test_down_stops_what_a_killed_up_started_even_without_its_state(cli, port_args, procs_with):
    """Issue 18: killing `up` during start-up once orphaned the router and `down` exited 0 with a warning."""
    import subprocess
    import sys

    from llmdctl.local import supervisor
    from tests.cli.conftest import REPO

    args, ports = port_args(1)
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmdctl",
            "up",
            "round-robin",
            "--replicas",
            "1",
            *args,
            "--set",
            "pools.0.args=[--startup-delay, '30']",
        ],
        env=cli.env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while len(supervisor.tagged_processes(cli.home)) < 2 and time.monotonic() < deadline:  # sim and router started
            time.sleep(0.1)
        started = supervisor.tagged_processes(cli.home)
        assert len(started) >= 2, started
        up.kill()  # `up` dies while it waits for health: nothing cleans up after it
        up.wait(10)
        (cli.home / "state.json").unlink()  # the worst case: no record of what it started
        assert all(is_alive(p) for p in started)
        r = cli("down")
        assert r.code == 0, r.err
        assert "leftover" in r.out and all(str(p) in r.out for p in started)
        assert not any(is_alive(p) for p in started)
        assert listening_ports([ports["router"], ports["pods"]]) == []
        assert procs_with(f"--port {ports['router']}") == []
    finally:
        if up.poll() is None:
            up.kill()
        supervisor.stop_tagged(cli.home, grace_s=1)
