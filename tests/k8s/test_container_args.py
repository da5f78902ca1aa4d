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
    rendered = render(load_profile(name), RenderOptions())
    c = _container(rendered, f"{rendered.stack}-router")
    assert c["command"] == ["python", "-m", "router_lite"]
    ctx = serve.make_context("serve", list(c["args"][1:]))
    assert ctx.params["discovery"] == "kubernetes" and ctx.params["host"] == "0.0.0.0"
    args = list(c["args"])
    assert (
        ctx.params["selector"] == args[args.index("--selector") + 1] and ctx.params["namespace"] == "$(POD_NAMESPACE)"
    )
    assert ctx.params["target_ports"] == args[args.index("--target-ports") + 1]
    assert (ctx.params["kv_events_port"] is not None) == ("--kv-events-port" in args)
