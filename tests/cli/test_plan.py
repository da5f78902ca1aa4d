"""The local planner: pods grouped into sim processes, consecutive ports, rank endpoints, generated files."""

from __future__ import annotations

from pathlib import Path

import msgspec
import yaml

from llmdctl.local.plan import PortLayout, build_plan, endpoint_count, endpoints_document
from llmdctl.profile import PoolSpec, Profile, RouterSpec

CONFIG = {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig", "plugins": [{"type": "queue-scorer"}]}


def _profile(*pools: PoolSpec, **kw) -> Profile:
    return Profile(name="t", description="t", pools=list(pools), router=RouterSpec(config=CONFIG), **kw)


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_one_sim_process_hosts_all_pods_of_a_pool(tmp_path: Path):
    plan = build_plan(
        _profile(PoolSpec(name="pod", replicas=4, kv_events=True)), PortLayout(9000, 9100, 6000), tmp_path
    )
    sims = [c for c in plan.components if c.kind == "sim"]
    assert len(sims) == 1
    argv = sims[0].argv
    assert argv[1:4] == ["-m", "sim_gpu", "serve"]
    assert _flag(argv, "--pods") == "4" and _flag(argv, "--port") == "9100"
    assert _flag(argv, "--kv-events-endpoint") == "tcp://127.0.0.1:6000"  # pods connect; the router binds on loopback
    assert [p.port for p in plan.pods] == [9100, 9101, 9102, 9103]
    assert [p.kv_events for p in plan.pods] == [f"tcp://127.0.0.1:{6000 + i}" for i in range(4)]
    assert sims[0].health == [f"http://127.0.0.1:{9100 + i}/health" for i in range(4)]
    router = plan.components[-1]
    assert router.name == "router" and _flag(router.argv, "--port") == "9000"
    assert router.health == ["http://127.0.0.1:9000/health?min_healthy=4"]  # ready once every pod is scraped
    assert plan.all_ports() == [6000, 6001, 6002, 6003, 9000, 9100, 9101, 9102, 9103]


def test_pools_get_their_own_process_role_and_disjoint_ports(tmp_path: Path):
    profile = _profile(
        PoolSpec(name="prefill", role="prefill", replicas=2), PoolSpec(name="decode", role="decode", replicas=3)
    )
    plan = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path)
    sims = [c for c in plan.components if c.kind == "sim"]
    assert [c.name for c in sims] == ["sim-prefill", "sim-decode"]
    assert [_flag(c.argv, "--role") for c in sims] == ["prefill", "decode"]
    assert [(p.name, p.role, p.port) for p in plan.pods] == [
        ("prefill-0", "prefill", 9100),
        ("prefill-1", "prefill", 9101),
        ("decode-0", "decode", 9102),
        ("decode-1", "decode", 9103),
        ("decode-2", "decode", 9104),
    ]
    doc = yaml.safe_load(plan.files[str(tmp_path / "run" / "endpoints.yaml")])
    assert doc["endpoints"][0] == {
        "name": "prefill-0",
        "address": "127.0.0.1:9100",
        "labels": {"llm-d.ai/role": "prefill", "llm-d.ai/pool": "prefill", "llm-d.ai/model": "sim-model"},
        "kvEvents": {"endpoint": "tcp://127.0.0.1:6000", "topic": "kv@127.0.0.1:9100@sim-model", "bind": True},
    }
    from router_lite.datalayer.discovery import parse_endpoints_doc

    specs = parse_endpoints_doc(doc, "endpoints.yaml")  # the router reads what the planner writes
    assert [s.address for s in specs] == [f"127.0.0.1:{9100 + i}" for i in range(5)]
    assert specs[0].kv_events.endpoint == "tcp://127.0.0.1:6000" and dict(specs[3].labels)["llm-d.ai/role"] == "decode"


def test_data_parallel_ranks_are_endpoints_on_consecutive_ports(tmp_path: Path):
    profile = _profile(PoolSpec(name="ep", replicas=2, data_parallel_size=4, model_profile="DeepSeek-R1"))
    assert endpoint_count(profile) == 8
    plan = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path)
    assert [(p.name, p.rank, p.port) for p in plan.pods][:5] == [
        ("ep-0-r0", 0, 9100),
        ("ep-0-r1", 1, 9101),
        ("ep-0-r2", 2, 9102),
        ("ep-0-r3", 3, 9103),
        ("ep-1-r0", 0, 9104),
    ]
    sim = plan.components[0]
    assert _flag(sim.argv, "--data-parallel-size") == "4" and _flag(sim.argv, "--pods") == "2"
    assert len(sim.health) == 8
    eps = endpoints_document(plan.pods, "m")["endpoints"]
    assert [e["dpRank"] for e in eps] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_zero_replica_pool_is_skipped_and_router_config_written_verbatim_without_a_queue(tmp_path: Path):
    profile = _profile(PoolSpec(name="a", replicas=0), PoolSpec(name="b", replicas=1, args=["--seed", "7"]))
    profile.router.queue_size = 0  # no flow control asked for: the profile's config as written
    plan = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path)
    assert [c.name for c in plan.components] == ["sim-b", "router"]
    assert plan.components[0].argv[-2:] == ["--seed", "7"]
    assert yaml.safe_load(plan.files[str(tmp_path / "run" / "router-config.yaml")]) == CONFIG


def test_up_adds_llmd_flow_control_sized_from_the_pods_seats(tmp_path: Path):
    from router_lite.config import load_config

    config = {**CONFIG, "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "queue-scorer"}]}]}
    pools = (PoolSpec(name="a", replicas=1, max_num_seqs=8), PoolSpec(name="b", replicas=2, max_num_seqs=6))
    profile = Profile(name="t", description="t", pools=list(pools), router=RouterSpec(config=config))
    plan = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path)
    written = yaml.safe_load(plan.files[str(tmp_path / "run" / "router-config.yaml")])
    assert {"type": "concurrency-detector", "parameters": {"maxConcurrency": 6}} in written["plugins"]
    assert {"type": "priority-holdback-policy", "parameters": {"minCeiling": 0.2}} in written["plugins"]
    assert written["schedulingProfiles"][0]["plugins"][0] == {"pluginRef": "concurrency-detector"}  # the filter
    loaded = load_config(written)  # the router accepts it, and acts on both
    assert loaded.extra_sections["saturationDetector"]["detector"] == "concurrency"
    assert loaded.extra_sections["usageLimit"]["min_ceiling"] == 0.2
    assert config == {**CONFIG, "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "queue-scorer"}]}]}
    # pods schedule by the priority the router forwards
    assert all(_flag(c.argv, "--scheduling-policy") == "priority" for c in plan.components if c.kind == "sim")
    # a profile that configures its own saturation detection is left as written
    own = {**CONFIG, "saturationDetector": {"queueDepthThreshold": 2}}
    profile = Profile(name="t", description="t", pools=list(pools), router=RouterSpec(config=own))
    plan = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path)
    assert yaml.safe_load(plan.files[str(tmp_path / "run" / "router-config.yaml")]) == own


def test_kv_tiers_filesystem_path_is_under_the_run_directory(tmp_path: Path):
    from llmdctl.profile import FilesystemTierSpec, KVTiersSpec

    tiers = KVTiersSpec(cpu_blocks=100, filesystem=FilesystemTierSpec(path="kv-shared"))
    plan = build_plan(
        _profile(PoolSpec(name="pod", replicas=2), kv_tiers=tiers), PortLayout(9000, 9100, 6000), tmp_path
    )
    tiers_arg = yaml.safe_load(_flag(plan.components[0].argv, "--kv-tiers"))
    assert tiers_arg["cpu_blocks"] == 100
    assert tiers_arg["filesystem"]["path"] == str(tmp_path / "run" / "kv-shared")
    assert msgspec.to_builtins(tiers)["filesystem"]["path"] == "kv-shared"  # the profile itself is untouched


def test_every_shipped_profile_starts_its_router_with_flow_control_and_an_admin_key(tmp_path: Path):
    """Issue 18: priorities work out of the box (a queue and objectives) and the admin API is never open."""
    from typer.testing import CliRunner

    from llmdctl.paths import profiles_dir
    from llmdctl.profile import load_profile
    from router_lite.cli import app as router_app

    for path in sorted(profiles_dir().glob("*.yaml")):
        profile = load_profile(str(path))
        if not any(p.replicas for p in profile.pools) or any(profile.engine_of(p) == "vllm" for p in profile.pools):
            continue
        argv = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path).components[-1].argv
        assert int(_flag(argv, "--queue-size")) > 0, path.name
        objectives = [argv[i + 1] for i, a in enumerate(argv) if a == "--objective"]
        assert {"critical=1", "standard=0", "sheddable=-1"} <= set(objectives), path.name
        assert _flag(argv, "--admin-key-file") == str(tmp_path / "run" / "admin.key")
    # the flags are the router's own: its CLI accepts them (a bad key file is refused in one line)
    argv = argv[argv.index("serve") :]
    result = CliRunner().invoke(router_app, argv)
    assert result.exit_code == 2 and "--admin-key-file: cannot read" in result.output


def test_local_vllm_pods_publish_to_a_loopback_address_the_router_binds(tmp_path: Path, monkeypatch):
    """vLLM connects its KV-event publisher to any non-wildcard tcp endpoint, so for local pods on
    tcp://127.0.0.1:Z the router must bind (with both sides connecting, no event ever arrived)."""
    import llmdctl.engines.vllm_local as vl

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(
        '{"num_attention_heads": 4, "num_hidden_layers": 2, "hidden_size": 64, "max_position_embeddings": 2048}'
    )
    real = vl.vllm_components
    monkeypatch.setattr(
        vl,
        "vllm_components",
        lambda *a, **kw: real(*a, **{**kw, "python": "/venv/bin/python", "build": "cpu", "cores": 2}),
    )
    profile = _profile(PoolSpec(name="pod", replicas=2, kv_events=True, engine="vllm"), model=str(model))
    plan = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path)
    argv = next(c.argv for c in plan.components if c.kind == "vllm")
    assert '"endpoint":"tcp://127.0.0.1:6000"' in _flag(argv, "--kv-events-config")  # not a wildcard: vLLM connects
    doc = yaml.safe_load(plan.files[str(tmp_path / "run" / "endpoints.yaml")])
    assert [e["kvEvents"]["bind"] for e in doc["endpoints"]] == [True, True]
    assert [e["kvEvents"]["endpoint"] for e in doc["endpoints"]] == ["tcp://127.0.0.1:6000", "tcp://127.0.0.1:6001"]


def test_pods_carry_their_pools_profile_labels_to_the_router(tmp_path: Path):
    # A told speed (router_lite.speeds) rides on a pool label; llmdctl's own labels win over a profile's.
    profile = _profile(
        PoolSpec(name="fast", replicas=1, labels={"llmd.ai/relative-speed": "2", "llm-d.ai/role": "decode"}),
        PoolSpec(name="slow", replicas=1),
    )
    plan = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path)
    doc = yaml.safe_load(plan.files[str(tmp_path / "run" / "endpoints.yaml")])
    labels = {e["name"].rsplit("-", 1)[0]: e["labels"] for e in doc["endpoints"]}
    assert labels["fast"]["llmd.ai/relative-speed"] == "2" and labels["fast"]["llm-d.ai/role"] == "both"
    assert "llmd.ai/relative-speed" not in labels["slow"] and labels["slow"]["llm-d.ai/pool"] == "slow"
