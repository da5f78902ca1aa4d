"""`up`/`down` for kind and kube through a recording runner and an in-memory API server."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from llmdctl.k8s import apply, target
from llmdctl.k8s.apply import K8sError, RecordingClient, apply_objects, delete_stack, wait_rollouts
from llmdctl.k8s.render import APPLY_ORDER, RenderOptions, render, stack_selector
from tests.k8s.k8s_profiles import built_profiles


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(apply.time, "sleep", lambda s: None)


def _console():
    buf = io.StringIO()
    return Console(file=buf, width=200), buf


def test_apply_order_follows_dependencies_and_skips_foreign_namespaces():
    rendered = render(built_profiles()["pd"], RenderOptions(gateway=True))
    client = RecordingClient()
    apply_objects(client, list(reversed(rendered.objects)))
    applied = [c[1].split("/")[0] for c in client.calls if c[0] == "apply"]
    assert applied == sorted(applied, key=APPLY_ORDER.index)
    deployments = [c[1] for c in client.calls if c[0] == "apply" and c[1].startswith("Deployment/")]
    assert deployments[-2:] == [
        "Deployment/t-pd-router -n llmd",
        "Deployment/t-pd-epp -n llmd",
    ]  # pickers after the servers
    other = RecordingClient()
    other.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "llmd", "labels": {"team": "x"}}})
    apply_objects(other, rendered.objects)
    assert ("apply", "Namespace/llmd") not in other.calls
    assert other.objects[("Namespace", "", "llmd")]["metadata"]["labels"] == {"team": "x"}


def test_wait_polls_until_every_replica_is_ready_and_reports_progress():
    rendered = render(built_profiles()["pd"])  # prefill 1, decode 3, router 1
    client = RecordingClient()
    apply_objects(client, rendered.objects)
    seen = []
    states = wait_rollouts(
        client,
        rendered.objects,
        timeout_s=5,
        poll_s=0,
        progress=lambda st: seen.append((st.name, st.ready, st.desired)),
    )
    assert {(s.name, s.ready, s.desired) for s in states} == {
        ("t-pd-prefill", 1, 1),
        ("t-pd-decode", 3, 3),
        ("t-pd-router", 1, 1),
    }
    assert [x for x in seen if x[0] == "t-pd-decode"] == [
        ("t-pd-decode", 1, 3),
        ("t-pd-decode", 2, 3),
        ("t-pd-decode", 3, 3),
    ]
    assert sum(1 for c in client.calls if c == ("get", "Deployment/t-pd-decode -n llmd")) == 3


def test_wait_timeout_names_the_stuck_workload_and_why():
    rendered = render(built_profiles()["aggregated"])
    client = RecordingClient(never_ready={"t-agg-pod"})
    apply_objects(client, rendered.objects)
    client.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "t-agg-pod-1",
                "namespace": "llmd",
                "labels": {"llmd.ai/stack": "t-agg", "llmd.ai/pool": "pod"},
            },
            "status": {
                "containerStatuses": [
                    {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "llmdctl:0.1.0 not found"}}}
                ]
            },
        }
    )
    with pytest.raises(K8sError, match=r"Deployment/t-agg-pod 0/2 ready \(ImagePullBackOff: llmdctl:0.1.0 not found\)"):
        wait_rollouts(client, rendered.objects, timeout_s=0, poll_s=0)


def test_kind_up_runs_the_plan_and_down_deletes_the_cluster(home, monkeypatch):
    runner, client = target.RecordingRunner(), RecordingClient()
    console, out = _console()
    code = target.up(
        built_profiles()["aggregated"],
        "kind",
        {"runner": runner, "client": client, "cluster": "c1", "local_port": 18000},
        console,
    )
    assert code == 0, out.getvalue()
    assert runner.commands[0] == ["kind", "get", "clusters"]
    assert [c[:3] for c in runner.commands[1:]] == [
        ["kind", "create", "cluster"],
        ["docker", "build", "-f"],
        ["kind", "load", "docker-image"],
    ]
    assert (home / "k8s" / "c1" / "image" / "Dockerfile").is_file() and (
        home / "k8s" / "c1" / "kind-cluster.yaml"
    ).is_file()
    assert runner.spawned == [
        ["kubectl", "--context", "kind-c1", "-n", "llmd", "port-forward", "svc/t-agg-router", "18000:8000"]
    ]
    applies = [c[1] for c in client.calls if c[0] == "apply"]
    assert applies[0] == "CustomResourceDefinition/inferencepools.inference.networking.k8s.io"
    assert not any("gateway.networking" in a for a in applies)  # Gateway API CRDs only with --gateway
    crd_gets = [
        i
        for i, c in enumerate(client.calls)
        if c == ("get", "CustomResourceDefinition/inferencepools.inference.networking.k8s.io")
    ]
    assert crd_gets and crd_gets[0] < client.calls.index(("apply", "Namespace/llmd"))  # established before use
    last_apply = max(i for i, c in enumerate(client.calls) if c[0] == "apply")
    assert any(c == ("get", "Deployment/t-agg-pod -n llmd") for c in client.calls[last_apply:])  # waits after applying
    state = target.load_state()
    assert state["target"] == "kind" and state["cluster"] == "c1" and state["router_url"] == "http://127.0.0.1:18000"
    assert (
        len(state["applied"]) == len(render(built_profiles()["aggregated"]).objects) + 1
    )  # + the API-key Secret up creates once
    assert "ready" in out.getvalue() and "curl -s http://127.0.0.1:18000/v1/completions" in out.getvalue()

    down_runner = target.RecordingRunner()
    assert target.down(None, console, runner=down_runner) == 0
    assert down_runner.commands == [["kind", "delete", "cluster", "--name", "c1"]]
    assert target.load_state() is None


def test_kind_up_reuses_an_existing_cluster_and_gpus_add_the_node_setup(home):
    runner = target.RecordingRunner(outputs={"kind get clusters": "c1\nother\n"})
    client = RecordingClient(gpus=2)
    console, out = _console()
    code = target.up(
        built_profiles()["vllm"],
        "kind",
        target.K8sOptions(runner=runner, client=client, cluster="c1", gpus=True),
        console,
    )
    assert code == 0, out.getvalue()
    assert not any(c[:3] == ["kind", "create", "cluster"] for c in runner.commands)
    assert [c[2] for c in runner.commands if c[:2] == ["docker", "exec"]] == ["c1-worker"] * 3
    applies = [c[1] for c in client.calls if c[0] == "apply"]
    assert (
        applies.index("RuntimeClass/nvidia")
        < applies.index("DaemonSet/nvidia-device-plugin -n kube-system")
        < applies.index("Deployment/t-vllm-gpu -n llmd")
    )
    assert ("list", "Node") in client.calls and "2 GPU(s) allocatable" in out.getvalue()


def test_kube_up_refuses_missing_crds_unless_asked(home):
    console, out = _console()
    code = target.up(
        built_profiles()["aggregated"],
        "kube",
        {"runner": target.RecordingRunner(), "client": RecordingClient()},
        console,
    )
    assert code == 1 and "CRDs missing on the cluster: inferencepools.inference.networking.k8s.io" in out.getvalue()
    client = RecordingClient()
    code = target.up(
        built_profiles()["aggregated"],
        "kube",
        {
            "runner": target.RecordingRunner(),
            "client": client,
            "install_crds": True,
            "context": "prod",
            "namespace": "team-a",
        },
        console,
    )
    assert code == 0
    assert target.load_state()["context"] == "prod" and target.load_state()["namespace"] == "team-a"


def test_bad_options_are_one_line_errors(home):
    console, out = _console()
    assert (
        target.up(built_profiles()["aggregated"], "kube", {"gpus": True, "runner": target.RecordingRunner()}, console)
        == 1
    )
    assert "--gpus is for --target kind" in out.getvalue()
    assert target.up(built_profiles()["aggregated"], "kind", {"colour": "red"}, console) == 1
    assert "unknown Kubernetes option(s): colour" in out.getvalue()


def _foreign(kind, name, ns="llmd", labels=None, api="v1"):
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns, "labels": labels or {}}}


def test_down_on_kube_deletes_only_this_stacks_labelled_objects(home):
    client = RecordingClient()
    ours = render(built_profiles()["pd"], RenderOptions(target="kube", gateway=True))
    theirs = render(
        built_profiles()["aggregated"], RenderOptions(target="kube")
    )  # another llmdctl stack, same namespace
    apply_objects(client, theirs.objects)
    apply_objects(client, ours.objects)
    hand_made = [
        _foreign(
            "Deployment", "t-pd-decode-copy", labels={"llmd.ai/stack": "t-pd"}, api="apps/v1"
        ),  # our stack label, not managed by us
        _foreign("ConfigMap", "notes"),
        _foreign("Service", "t-pd-router", ns="other"),  # same name, other namespace
    ]
    for obj in hand_made:
        client.seed(obj)
    before = set(client.objects)
    state = {"target": "kube", "namespace": "llmd", "stack": "t-pd", "context": None, "port_forward_pid": None}
    console, out = _console()
    assert target.down(state, console, client=client) == 0
    gone = before - set(client.objects)
    expected = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        for o in ours.objects
        if o["kind"] != "Namespace"
    }
    assert gone == expected
    assert ("Namespace", "", "llmd") in client.objects  # it holds other things: kept
    lists = [c[1] for c in client.calls if c[0] == "list" and "-l" in c[1]]
    assert lists and all(c.endswith("-l " + stack_selector("t-pd")) for c in lists)


def test_down_deletes_the_namespace_it_created_once_it_is_empty(home):
    client = RecordingClient()
    ours = render(built_profiles()["aggregated"], RenderOptions(target="kube", namespace="scratch"))
    apply_objects(client, ours.objects)
    deleted = delete_stack(client, "scratch", "t-agg")
    assert deleted[-1] == "Namespace/scratch" and client.objects == {}


def test_stop_port_forward_never_kills_a_stranger():
    import os

    assert target.stop_port_forward(os.getpid()) is False  # our own pid: not a port-forward
    assert target.stop_port_forward(None) is False


def test_up_again_is_idempotent_and_another_stack_is_refused(home):
    console, out = _console()
    opts = {
        "runner": target.RecordingRunner(outputs={"kind get clusters": "c1"}),
        "client": RecordingClient(),
        "cluster": "c1",
    }
    assert target.up(built_profiles()["aggregated"], "kind", opts, console) == 0
    assert target.up(built_profiles()["aggregated"], "kind", opts, console) == 0
    assert target.up(built_profiles()["pd"], "kind", {**opts, "cluster": "c2"}, console) == 1
    assert "already recorded (t-agg on kind, c1); run `llmdctl down` first" in out.getvalue()
