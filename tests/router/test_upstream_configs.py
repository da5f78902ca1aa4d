"""Upstream-shaped EndpointPickerConfigs (tests/fixtures/upstream_configs): they load unchanged, schedule,
and mean what llm-d documents; plugins router_lite does not implement fail with one line naming them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kvtiers.kvevents import BlockStored, KVEventBatch
from router_lite.admission import Admission
from router_lite.app_state import RouterSettings, RouterState
from router_lite.config import ConfigError, load_config, load_config_file
from router_lite.datalayer import EndpointSpec
from router_lite.plugins.admission.probabilistic_admitter import saturation, shed_probability
from router_lite.prefix import PrecisePrefixIndex, PrefixIndexes
from router_lite.scheduler import Scheduler
from router_lite.types import Endpoint, EndpointMetrics, LLMRequest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upstream_configs"
LOADS = sorted((FIXTURES / "loads").glob("*.yaml"))
UNSUPPORTED = sorted((FIXTURES / "unsupported").glob("*.yaml"))


def ep(port: int, role: str = "both", waiting: int = 0, kv: float = 0.0, fresh: bool = True) -> Endpoint:
    labels = {"llm-d.ai/role": role} if role != "both" else {}
    m = EndpointMetrics(waiting_queue_size=waiting, kv_cache_usage_percent=kv, updated_at=1e12 if fresh else 0.0)
    return Endpoint("10.0.0.1", port, labels=labels, metrics=m)


def pool() -> list[Endpoint]:
    return [ep(8000, "decode"), ep(8001, "decode"), ep(8002, "prefill")]


def test_fixture_set_is_the_documented_one():
    assert len(LOADS) >= 19 and len(UNSUPPORTED) >= 3  # a glob that finds nothing must not pass silently


@pytest.mark.parametrize("path", LOADS, ids=[p.stem for p in LOADS])
def test_upstream_config_loads_and_schedules(path: Path):
    cfg = load_config_file(path)
    sched = Scheduler(cfg, rng=random.Random(0))
    req = LLMRequest("r1", "m", prompt_token_ids=list(range(200)), prompt_text="hello " * 50)
    result = sched.schedule(req, pool())
    assert result.target is not None, result.reason
    if cfg.plugins_of_type("decode-filter"):  # decode-filter: never the prefill pod (P/D: decode is primary)
        assert result.target.role == "decode"
    sched.on_routed(req, result)
    sched.on_finished(req, result.target)


@pytest.mark.parametrize("path", UNSUPPORTED, ids=[p.stem for p in UNSUPPORTED])
def test_unimplemented_plugin_fails_with_one_line_naming_it(path: Path):
    with pytest.raises(ConfigError) as exc:
        load_config_file(path)
    msg = str(exc.value)
    assert "\n" not in msg and "not implemented by router_lite" in msg
    named = msg.split("plugin type '")[1].split("'")[0]
    assert named in path.read_text()


def test_unknown_plugin_type_is_never_ignored():
    with pytest.raises(ConfigError, match=r"plugins\[1\] \(made-up-scorer\): unknown plugin type 'made-up-scorer'"):
        load_config({"plugins": [{"type": "queue-scorer"}, {"type": "made-up-scorer"}]})


# ---- what they mean ------------------------------------------------------------------------------------


def _store(idx: PrefixIndexes, endpoint: Endpoint, hashes: list) -> None:
    idx.precise.apply(
        endpoint.key,
        0,
        KVEventBatch(0.0, [BlockStored(block_hashes=hashes, parent_block_hash=None, token_ids=[], block_size=64)]),
    )


def test_split_producer_scores_like_the_precise_scorer():
    """prefix-cache-scorer reading precise-prefix-cache-producer = the precise scorer, fraction-normalised."""
    cfg = load_config_file(FIXTURES / "loads" / "guide-precise-producer-split.yaml")
    assert cfg.uses_tokens() and cfg.precise_prefix_settings().block_size == 64
    assert cfg.precise_prefix_settings().kv_events_config.socket_port == 5556
    idx = PrefixIndexes(precise=PrecisePrefixIndex())
    sched = Scheduler(cfg, idx, rng=random.Random(0))
    a, b = ep(8000), ep(8001)
    tokens = list(range(64 * 4))
    hashes = cfg.precise_prefix_settings().block_hashes(tokens)
    _store(idx, b, hashes[:3])
    req = LLMRequest("r", "m", prompt_token_ids=tokens)
    result = sched.schedule(req, [a, b])
    pr = result.profile_results["default"]
    assert pr.raw_scores["prefix-cache-scorer"] == {a.key: 0.0, b.key: 0.75}
    assert pr.raw_scores["no-hit-lru-scorer"] == {a.key: 0.5, b.key: 0.5}  # a hit somewhere: neutral
    assert pr.prefix_blocks == {b.key: 3} and result.target.key == b.key
    sched.on_routed(req, result)  # speculative credit goes through the producer to the shared index
    assert idx.precise.match(hashes)[b.key][0] == 4


def test_older_cache_tracking_prefix_scorer_is_the_precise_scorer():
    cfg = load_config_file(FIXTURES / "loads" / "epp-prefix-cache-tracking-config.yaml")
    spec = cfg.plugin("prefix-cache-scorer")
    assert spec.type == "precise-prefix-cache-scorer"
    assert spec.params.declared_hashing(spec.raw_parameters) == (64, "42", None)
    cfg2 = load_config_file(FIXTURES / "loads" / "sim-epp-kvcache-config.yaml")
    kec = cfg2.precise_prefix_settings().kv_events_config
    assert kec.zmq_endpoint == "tcp://0.0.0.0:5557" and cfg2.precise_prefix_settings().block_size == 16


def test_pod_discovery_subscribes_to_each_pod_on_the_socket_port():
    cfg = load_config_file(FIXTURES / "loads" / "guide-precise-prefix-cache-routing.yaml")
    state = RouterState(RouterSettings(config=cfg))
    spec = state.kv_spec(EndpointSpec(address="10.1.2.3:8000"))
    assert spec.kv_events.endpoint == "tcp://10.1.2.3:5556" and spec.kv_events.bind is False
    assert spec.kv_events.topic == "kv@"
    assert state.needs_tokens() and state.hash_settings().block_size == 64


def test_data_layer_sources_and_extractors_are_checked():
    base = {
        "plugins": [
            {"type": "queue-scorer"},
            {"type": "metrics-data-source"},
            {"type": "core-metrics-extractor"},
            {"type": "endpoint-notification-source"},
            {"type": "precise-prefix-cache-scorer"},
        ]
    }
    ok = load_config(
        {
            **base,
            "dataLayer": {
                "sources": [
                    {"pluginRef": "metrics-data-source", "extractors": [{"pluginRef": "core-metrics-extractor"}]},
                    {
                        "pluginRef": "endpoint-notification-source",
                        "extractors": [{"pluginRef": "precise-prefix-cache-scorer"}],
                    },
                ]
            },
        }
    )
    assert [(d.plugin_ref, d.extractors) for d in ok.data_layer] == [
        ("metrics-data-source", ["core-metrics-extractor"]),
        ("endpoint-notification-source", ["precise-prefix-cache-scorer"]),
    ]
    with pytest.raises(
        ConfigError,
        match=r"dataLayer.sources\[0\].extractors\[0\].pluginRef: 'queue-scorer' \(queue-scorer\) cannot extract",
    ):
        load_config(
            {
                **base,
                "dataLayer": {
                    "sources": [
                        {"pluginRef": "endpoint-notification-source", "extractors": [{"pluginRef": "queue-scorer"}]}
                    ]
                },
            }
        )
    with pytest.raises(
        ConfigError, match=r"dataLayer.sources\[0\].pluginRef: 'queue-scorer' is a queue-scorer, expected a data source"
    ):
        load_config({**base, "dataLayer": {"sources": [{"pluginRef": "queue-scorer"}]}})
    with pytest.raises(ConfigError, match=r"dataLayer.sources\[0\].pluginRef: 'nope' names no plugin"):
        load_config({**base, "dataLayer": {"sources": [{"pluginRef": "nope"}]}})
    with pytest.raises(ConfigError, match=r"metrics-data-source\) parameters.path: router_lite scrapes /metrics"):
        load_config({"plugins": [{"type": "metrics-data-source", "parameters": {"path": "/stats"}}]})


def test_parser_section_names_a_parser():
    cfg = load_config_file(FIXTURES / "loads" / "gie-default-metrics-source.yaml")
    assert cfg.parser == "openai-parser" and [d.plugin_ref for d in cfg.data_layer] == ["metrics-data-source"]
    with pytest.raises(ConfigError, match=r"parser.pluginRef: 'queue-scorer' is a queue-scorer, expected a parser"):
        load_config({"plugins": [{"type": "queue-scorer"}], "parser": {"pluginRef": "queue-scorer"}})


def test_saturation_detector_plugin_ref_sets_the_thresholds():
    cfg = load_config_file(FIXTURES / "loads" / "probabilistic-admitter-epp-config.yaml")
    sched = Scheduler(cfg)
    admitters = [p for p in sched.plugins.values() if p.kind == "admitter"]
    adm = Admission.from_config(cfg, 0, 30.0, admitters=admitters)
    assert adm.detector.config.queue_depth_threshold == 999999999 and adm.detector.config.kv_cache_util_threshold == 1.0
    assert [a.name for a in adm.admitters] == ["probabilistic-admitter"]
    with pytest.raises(
        ConfigError,
        match=r"saturationDetector.pluginRef: 'random-picker' is a random-picker, expected a saturation detector",
    ):
        load_config({"plugins": [{"type": "random-picker"}], "saturationDetector": {"pluginRef": "random-picker"}})
    with pytest.raises(ConfigError, match=r"saturationDetector: with pluginRef, set thresholds on the plugin"):
        load_config(
            {
                "plugins": [{"type": "utilization-detector"}, {"type": "random-picker"}],
                "saturationDetector": {"pluginRef": "utilization-detector", "queueDepthThreshold": 2},
            }
        )
    with pytest.raises(
        ConfigError, match=r"plugin 'utilization-detector' \(utilization-detector\) parameters.kvCacheUtilThreshold"
    ):
        load_config(
            {
                "plugins": [
                    {"type": "utilization-detector", "parameters": {"kvCacheUtilThreshold": 2}},
                    {"type": "random-picker"},
                ],
                "saturationDetector": {"pluginRef": "utilization-detector"},
            }
        )


def test_probabilistic_admitter_formula():
    # saturation = mean of max(waiting/qd, kv/kvt); stale metrics count 1.0
    eps = [ep(1, waiting=1, kv=0.08), ep(2, waiting=0, kv=0.4), ep(3, fresh=False)]
    assert saturation(eps, 5, 0.8) == pytest.approx((0.2 + 0.5 + 1.0) / 3)
    assert shed_probability(0.15, 5, 300) == pytest.approx(0.15**5 * 300)  # ~2.3%, as documented
    assert shed_probability(0.34, 5, 300) == 1.0
    cfg = load_config_file(FIXTURES / "loads" / "probabilistic-admitter-epp-config.yaml")
    admitter = Scheduler(cfg, rng=random.Random(1)).plugins["probabilistic-admitter"]
    busy = [ep(1, waiting=5), ep(2, kv=0.8)]
    calm = [ep(1), ep(2)]
    assert admitter.reject(LLMRequest("c", "m", priority=0), busy) is None  # critical: always admitted
    assert "shed" in admitter.reject(LLMRequest("s", "m", priority=-1), busy)  # saturation 1: p = 1
    assert admitter.reject(LLMRequest("s", "m", priority=-1), calm) is None  # saturation 0: p = 0
    assert admitter.reject(LLMRequest("s", "m", priority=-1), []) is None


def test_data_parallel_handler_sets_the_rank_header():
    cfg = load_config_file(FIXTURES / "loads" / "dp-epp-config.yaml")
    assert cfg.profile_handler.params.primary_port == 8000  # targetPort: the older name
    req = LLMRequest("r", "m", prompt_text="x" * 300)
    sched = Scheduler(cfg)
    result = sched.schedule(req, [ep(8000, "decode"), ep(8001, "decode")])
    assert sched.pre_request(req, result.target, None) == {"x-data-parallel-host-port": result.target.key}
    with pytest.raises(ConfigError, match=r"primaryPort: expected a port 1-65535"):
        load_config(
            {
                "plugins": [
                    {"type": "queue-scorer"},
                    {"type": "data-parallel-profile-handler", "parameters": {"primaryPort": 0}},
                ]
            }
        )


def test_active_request_idle_threshold_and_max_busy_score():
    cfg = load_config(
        {"plugins": [{"type": "active-request-scorer", "parameters": {"idleThreshold": 1, "maxBusyScore": 0.5}}]}
    )
    sched = Scheduler(cfg)
    s = sched.plugins["active-request-scorer"]
    a, b, c = ep(1), ep(2), ep(3)
    for i, e in enumerate([a, b, b, c, c, c, c]):  # dispatched by the router: its in-flight load
        sched.inflight.dispatch(f"r{i}", e.key, 0)
    # counts a=1 (idle), b=2, c=4 (max): busy score (4 - n) / 4 * 0.5
    assert s.score(LLMRequest("x", "m"), [a, b, c]) == {a.key: 1.0, b.key: 0.25, c.key: 0.0}


def test_old_shapes_keep_working():
    cfg = load_config_file(FIXTURES / "loads" / "epp-kvcache-load-config.yaml")
    assert cfg.plugin("kvcacheScorer").type == "kvcache-aware-scorer" and cfg.precise_specs()
    assert any("deprecated" in w for w in cfg.warnings)
