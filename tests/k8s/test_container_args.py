"""The command lines rendered into the pods parse with the real CLIs they will run (drift guard)."""

from __future__ import annotations

import pytest
import typer

from llmdctl.k8s.render import RenderOptions, render
from llmdctl.profile import list_profiles, load_profile


def _command(module: str):
    mod = __import__(module, fromlist=["app"])
    group = typer.main.get_command(mod.app)
    return group.commands["serve"]


def _container(rendered, name):
    return rendered.find("Deployment", name)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", [p.stem for p in list_profiles()])
def test_simulator_args_parse_with_sim_gpu_serve(name):
    serve = _command("sim_gpu.cli")
    profile = load_profile(name)
    rendered = render(profile, RenderOptions())
    for pool in profile.pools:
        c = _container(rendered, f"{rendered.stack}-{pool.name}")
        assert c["command"] == ["python", "-m", "sim_gpu", "serve"]
        ctx = serve.make_context("serve", list(c["args"]))
        assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == 8000
        assert ctx.params["data_parallel_size"] == pool.data_parallel_size and ctx.params["role"] == pool.role
        assert ctx.params["kv_events_endpoint"] == ("tcp://*:5557" if pool.kv_events else "")


@pytest.mark.parametrize("name", [p.stem for p in list_profiles()])
def test_router_args_parse_with_router_lite_serve(name):
    serve = _command("router_lite.cli")
    if not any(p.name == "discovery" for p in serve.params):
        pytest.skip("router_lite serve has no --discovery option yet: Kubernetes discovery "
                    "(router_lite/datalayer/k8s_discovery.py) is not wired into its CLI")
    rendered = render(load_profile(name), RenderOptions())
    c = _container(rendered, f"{rendered.stack}-router")
    assert c["command"] == ["python", "-m", "router_lite"]
    ctx = serve.make_context("serve", list(c["args"][1:]))
    assert ctx.params["discovery"] == "kubernetes" and ctx.params["host"] == "0.0.0.0"
