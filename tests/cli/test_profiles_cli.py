"""`llmdctl profiles`, `--help`, `--version` and profile validation errors, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmdctl import __version__

SHIPPED = {
    "inference-scheduling",
    "precise-prefix-cache",
    "pd-disaggregation",
    "wide-ep",
    "kv-offload",
    "semantic-kv",
    "round-robin",
}


def test_version_and_help(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"llmdctl {__version__}"
    r = cli("--help")
    assert r.code == 0
    for command in ("up", "down", "status", "logs", "profiles", "sim", "router"):
        assert f" {command} " in r.out, command


def test_every_subcommand_has_help():
    from typer.testing import CliRunner

    from llmdctl.cli import app

    runner = CliRunner()
    for sub in (
        ["up"],
        ["down"],
        ["status"],
        ["logs"],
        ["profiles"],
        ["profiles", "list"],
        ["profiles", "show"],
        ["sim", "serve"],
        ["router", "serve"],
    ):
        r = runner.invoke(app, [*sub, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, (sub, r.output)
        assert "Usage" in r.output and "--help" in r.output


def test_every_mounted_sub_app_loads():
    """Each optional command `llmdctl --help` lists imports and shows its own help (none mounted broken)."""
    from typer.testing import CliRunner

    from llmdctl.cli import LAZY, _find, app

    runner = CliRunner()
    mounted = [name for name in LAZY if _find(name) is not None]
    assert mounted == list(LAZY)  # every module path names a module that exists: no dead fallbacks
    for name in mounted:
        r = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "unavailable" not in r.output, (name, r.output)


def test_help_does_not_import_optional_parts():
    """`llmdctl --help` lists the sub-apps of the simulator, router, Kubernetes and engines without importing them."""
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\nfrom llmdctl.cli import app\nwith contextlib.redirect_stdout(io.StringIO()) as "
        "out, contextlib.suppress(SystemExit):\n    app(['--help'])\nassert ' sim ' in out.getvalue() and ' router ' "
        "in out.getvalue(), out.getvalue()\nprint(','.join(m for m in ('sim_gpu.server', 'sim_gpu.cli', "
        "'router_lite.server', 'router_lite.config', 'llmdctl.k8s', 'llmdctl.engines', 'httpx', 'llmdctl.local.stack') "
        "if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_profiles_list_json_has_every_shipped_profile_valid(cli):
    r = cli("profiles", "list", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["invalid"] == []
    assert SHIPPED <= {p["name"] for p in doc["profiles"]}


def test_profiles_show_inference_scheduling_uses_llmd_optimized_baseline(cli):
    r = cli("profiles", "show", "inference-scheduling", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    config = doc["router"]["config"]
    assert config["apiVersion"] == "llm-d.ai/v1alpha1" and config["kind"] == "EndpointPickerConfig"
    weights = {ref["pluginRef"]: ref.get("weight") for ref in config["schedulingProfiles"][0]["plugins"]}
    # llm-d's optimized baseline: sticky to warm pods until saturated, then the least prompt work in flight
    assert list(weights) == ["prefix-cache-affinity-filter", "token-load-scorer", "max-score-picker"]
    assert {"approx-prefix-cache-producer", "inflight-load-producer"} <= {p["type"] for p in config["plugins"]}
    assert doc["pools"][0]["replicas"] == 4
    r = cli("profiles", "show", "wide-ep")
    assert r.code == 0 and "DeepSeek-R1" in r.out and "data_parallel_size: 4" in r.out


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


GOOD = """name: tiny
description: test
pools:
  - name: pod
    replicas: 1
router:
  config:
    apiVersion: llm-d.ai/v1alpha1
    kind: EndpointPickerConfig
    plugins:
      - type: queue-scorer
    schedulingProfiles:
      - name: default
        plugins:
          - pluginRef: queue-scorer
            weight: 1
"""


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda t: t.replace("    replicas: 1", "    replicas: 1\n    replcas: 2"), "replcas"),  # unknown key
        (lambda t: t.replace("replicas: 1", "replicas: many"), "replicas"),  # wrong type
        (lambda t: t.replace("description: test\n", ""), "description"),  # missing field
        (lambda t: t.replace("type: queue-scorer", "type: no-such-scorer"), "no-such-scorer"),  # router plugin
        (lambda t: t.replace("  - name: pod", "  - name: pod\n  bad indent"), "line"),  # invalid YAML
        (
            lambda t: t.replace("    replicas: 1", "    replicas: 1\n    hardware: H999"),
            "pools[0].hardware",
        ),  # unknown sim hardware
        (lambda t: t.replace("description: test", "description: caf\xe9").encode("latin-1"), "UTF-8"),  # not UTF-8
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "missing-field",
        "unknown-plugin",
        "invalid-yaml",
        "unknown-hardware",
        "not-utf8",
    ],
)
def test_bad_profile_is_one_line_naming_file_and_key(cli, tmp_path, mutate, expect):
    path = _write(tmp_path, mutate(GOOD))
    for args in (("profiles", "show", str(path)), ("up", str(path), "--port", "1")):
        r = cli(*args)
        assert r.code == 2, (args, r.out, r.err)
        assert "Traceback" not in r.err
        lines = [line for line in r.err.splitlines() if line.strip()]
        assert len(lines) == 1, r.err
        assert str(path) in lines[0] and expect in lines[0], lines[0]
    assert cli.state() is None


def test_good_profile_file_and_set_override(cli, tmp_path):
    path = _write(tmp_path, GOOD)
    r = cli("profiles", "show", str(path), "--set", "pools.0.replicas=3", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["pools"][0]["replicas"] == 3
    r = cli("profiles", "show", str(path), "--set", "pools.0.replicas=lots")
    assert r.code == 2 and "replicas" in r.err and "Traceback" not in r.err
    assert "--set pools.0.replicas=lots" in r.err  # the flag, not the file, is named as the source


def test_corrupt_run_state_is_one_line_for_up(cli):
    cli.home.mkdir(parents=True, exist_ok=True)
    state = cli.home / "state.json"
    state.write_text("{not json")
    try:
        r = cli("up", "inference-scheduling", "--port", "1")
        assert r.code == 1 and "Traceback" not in r.err, r.err
        lines = [line for line in r.err.splitlines() if line.strip()]
        assert len(lines) == 1 and "state.json" in lines[0], r.err
    finally:
        state.unlink()


def test_unknown_profile_name_lists_known_ones(cli):
    r = cli("up", "no-such-profile")
    assert r.code == 2
    assert "no-such-profile" in r.err and "inference-scheduling" in r.err and "Traceback" not in r.err


def test_status_and_down_when_nothing_runs(cli):
    r = cli("status")
    assert r.code == 3 and "Nothing is running" in r.out
    r = cli("status", "--json")
    assert r.code == 3 and json.loads(r.out)["running"] is False
    r = cli("down")
    assert r.code == 0 and "Nothing is running" in r.out


def test_shipped_router_configs_are_what_the_profiles_load_and_what_up_hands_the_router(tmp_path):
    """The named configs `up` writes for POST /admin/profile are each shipped profile's validated router config."""
    from llmdctl.local.plan import NAMED_CONFIGS_DIR, PortLayout, build_plan
    from llmdctl.profile import list_profiles, load_profile, shipped_router_configs

    configs = shipped_router_configs()
    assert sorted(configs) == sorted(p.stem for p in list_profiles())
    for path in list_profiles():
        assert configs[path.stem] == load_profile(str(path)).router.config, path.stem
    plan = build_plan(load_profile("inference-scheduling"), PortLayout(9000, 9100, 6000), tmp_path)
    named = {p for p in plan.files if f"/{NAMED_CONFIGS_DIR}/" in p}
    assert len(named) == len(configs)
    router = next(c for c in plan.components if c.kind == "router")
    assert router.argv[router.argv.index("--named-configs") + 1] == str(tmp_path / "run" / NAMED_CONFIGS_DIR)
