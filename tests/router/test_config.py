"""EndpointPickerConfig loading: llm-d's shape, injected defaults, and one clear error per mistake."""

from __future__ import annotations

import pytest

from router_lite.config import ConfigError, load_config, load_config_file

LLMD_SAMPLE = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-scorer
- type: prefix-cache-scorer
  parameters:
    hashBlockSize: 64
    maxPrefixBlocksToMatch: 256
    lruCapacityPerServer: 31250
- type: max-score-picker
  parameters:
    maxNumOfEndpoints: 1
- type: single-profile-handler
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 1
  - pluginRef: kv-cache-scorer
    weight: 1
  - pluginRef: prefix-cache-scorer
    weight: 3
  - pluginRef: max-score-picker
"""

PD = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefill-filter
- type: decode-filter
- type: prefix-cache-scorer
- type: queue-scorer
- type: prefix-based-pd-decider
  parameters:
    nonCachedTokens: 256
- type: disagg-profile-handler
  parameters:
    prefillDeciderPluginName: prefix-based-pd-decider
schedulingProfiles:
- name: prefill
  plugins:
  - pluginRef: prefill-filter
  - pluginRef: queue-scorer
- name: decode
  plugins:
  - pluginRef: decode-filter
  - pluginRef: prefix-cache-scorer
    weight: 2
"""


def test_llmd_sample_loads_with_legacy_warnings():
    cfg = load_config(LLMD_SAMPLE)
    assert any("apiVersion" in w and "deprecated" in w for w in cfg.warnings)
    assert any("'kv-cache-scorer' is deprecated" in w for w in cfg.warnings)
    prefix = cfg.plugin("prefix-cache-scorer").params
    assert prefix.block_size == 64 and prefix.lru_capacity_per_server == 31250
    refs = {r.plugin_ref: r.weight for r in cfg.profiles[0].plugins}
    assert refs == {"queue-scorer": 1.0, "kv-cache-scorer": 1.0, "prefix-cache-scorer": 3.0, "max-score-picker": 1.0}


def test_defaults_injected_as_llmd_does():
    cfg = load_config({"plugins": [{"type": "queue-scorer"}, {"type": "decode-filter", "name": "dec"}]})
    assert [p.type for p in cfg.plugins] == [
        "queue-scorer",
        "decode-filter",
        "max-score-picker",
        "single-profile-handler",
    ]
    assert [p.name for p in cfg.plugins][1] == "dec"
    (prof,) = cfg.profiles
    assert prof.name == "default"
    assert [(r.plugin_ref, r.weight) for r in prof.plugins] == [
        ("queue-scorer", 1.0),
        ("dec", 1.0),
        ("max-score-picker", 1.0),
    ]
    assert cfg.warnings == []
    # The effective config round-trips.
    again = load_config(cfg.to_dict())
    assert [p.name for p in again.plugins] == [p.name for p in cfg.plugins]


def test_picker_injected_per_profile_and_pd_config():
    cfg = load_config(PD)
    for prof in cfg.profiles:
        assert prof.plugins[-1].plugin_ref == "max-score-picker"
    assert cfg.profile_handler.type == "disagg-profile-handler"
    assert cfg.plugin("prefix-based-pd-decider").params.non_cached_tokens == 256


def test_yaml_file_and_path(tmp_path):
    f = tmp_path / "epp.yaml"
    f.write_text(PD)
    assert load_config_file(f).profile_handler.type == "disagg-profile-handler"
    assert load_config(str(f)).profile_handler.type == "disagg-profile-handler"
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("plugins: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config_file(bad)


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            {"plugins": [{"type": "queue-scorrer"}]},
            r"plugins\[0\] \(queue-scorrer\): unknown plugin type 'queue-scorrer'; known types: .*queue-scorer",
        ),
        (
            {"plugins": [{"type": "load-aware-scorer", "parameters": {"treshold": 3}}]},
            r"plugin 'load-aware-scorer' \(load-aware-scorer\) parameters: unknown parameter 'treshold'; accepted: "
            r"threshold",
        ),
        (
            {"plugins": [{"type": "load-aware-scorer", "parameters": {"threshold": "high"}}]},
            r"parameters\.threshold: expected an integer, got 'high'",
        ),
        (
            {"plugins": [{"type": "load-aware-scorer", "parameters": {"threshold": 0}}]},
            r"threshold: expected a positive integer",
        ),
        (
            {"plugins": [{"type": "max-score-picker", "parameters": {"maxNumOfEndpoints": True}}]},
            r"maxNumOfEndpoints: expected an integer, got True",
        ),
        (
            {"plugins": [{"type": "precise-prefix-cache-scorer", "parameters": {"indexerConfig": {"redisAddr": "x"}}}]},
            r"indexerConfig: unknown parameter 'redisAddr'; accepted: kvBlockIndexConfig, kvCacheBackendConfigs, "
            r"prefixStoreConfig, tokenProcessorConfig, tokenizersPoolConfig",
        ),
        (
            {
                "plugins": [
                    {"type": "precise-prefix-cache-scorer", "parameters": {"tokenProcessorConfig": {"blockSize": -1}}}
                ]
            },
            r"tokenProcessorConfig\.blockSize: expected a positive integer",
        ),
        (
            {"plugins": [{"type": "active-request-scorer", "parameters": {"requestTimeout": "soon"}}]},
            r"requestTimeout: expected a positive duration",
        ),
        ({"plugins": [{"type": "queue-scorer", "parameters": {"x": 1}}]}, r"unknown parameter 'x'; accepted: none"),
        ({"apiVersion": "v2", "plugins": []}, r"apiVersion: expected 'llm-d.ai/v1alpha1', got 'v2'"),
        ({"kind": "Pod", "plugins": []}, r"kind: expected 'EndpointPickerConfig'"),
        ({"plugns": []}, r"unknown top-level key 'plugns'"),
        ({}, r"'plugins' is required"),
        ({"plugins": [{"name": "x"}]}, r"plugins\[0\]: 'type' is required"),
        ({"plugins": [{"type": "queue-scorer"}, {"type": "queue-scorer"}]}, r"duplicate plugin name 'queue-scorer'"),
        (
            {
                "plugins": [{"type": "queue-scorer"}],
                "schedulingProfiles": [{"name": "a", "plugins": [{"pluginRef": "nope"}]}],
            },
            r"schedulingProfiles\[0\] \(a\)\.plugins\[0\]: pluginRef 'nope' names no plugin; defined: queue-scorer",
        ),
        (
            {
                "plugins": [{"type": "queue-scorer"}],
                "schedulingProfiles": [{"name": "a", "plugins": [{"pluginRef": "queue-scorer", "weight": -1}]}],
            },
            r"weight: expected a non-negative number, got -1",
        ),
        (
            {
                "plugins": [{"type": "queue-scorer"}],
                "schedulingProfiles": [{"name": "a", "plugins": []}, {"name": "b", "plugins": []}],
            },
            r"2 schedulingProfiles need a profile handler",
        ),
        (
            {"plugins": [{"type": "queue-scorer"}, {"type": "random-picker"}, {"type": "max-score-picker"}]},
            r"expected one picker, got random-picker, max-score-picker",
        ),
        (
            {"plugins": [{"type": "single-profile-handler"}, {"type": "disagg-profile-handler"}]},
            r"expected exactly one profile handler",
        ),
        (
            {"plugins": [{"type": "disagg-profile-handler"}, {"type": "queue-scorer"}]},
            r"decodeProfile 'decode' is not among schedulingProfiles \(default\)",
        ),
        (
            {
                "plugins": [{"type": "queue-scorer"}, {"type": "always-disagg-pd-decider"}],
                "schedulingProfiles": [{"name": "a", "plugins": [{"pluginRef": "always-disagg-pd-decider"}]}],
            },
            r"'always-disagg-pd-decider' is a decider; profiles reference filters, scorers, pickers",
        ),
    ],
)
def test_config_errors_name_the_problem(doc, message):
    with pytest.raises(ConfigError, match=message):
        load_config(doc)


def test_config_error_is_one_line():
    with pytest.raises(ConfigError) as exc:
        load_config({"plugins": [{"type": "load-aware-scorer", "parameters": {"threshold": [1]}}]})
    assert "\n" not in str(exc.value)


def test_deprecated_pd_profile_handler_and_decider_reference():
    doc = {
        "plugins": [
            {"type": "decode-filter"},
            {"type": "prefill-filter"},
            {"type": "pd-profile-handler", "parameters": {"threshold": 100, "hashBlockSize": 16}},
        ],
        "schedulingProfiles": [
            {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}]},
            {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}]},
        ],
    }
    cfg = load_config(doc)
    assert any("'pd-profile-handler' is deprecated; use 'disagg-profile-handler'" in w for w in cfg.warnings)
    doc["plugins"][2]["parameters"] = {"deciderPluginName": "decode-filter"}
    with pytest.raises(ConfigError, match="prefillDeciderPluginName 'decode-filter' is a filter, not a P/D decider"):
        load_config(doc)


def test_precise_scorer_settings_for_the_gateway():
    cfg = load_config(
        {
            "plugins": [
                {
                    "type": "precise-prefix-cache-scorer",
                    "parameters": {
                        "tokenProcessorConfig": {"blockSize": 32, "hashSeed": "42"},
                        "kvEventsConfig": {"zmqEndpoint": "tcp://*:5557", "topicFilter": "kv@"},
                        "indexerConfig": {"tokenizersPoolConfig": {"model": "/models/tiny"}},
                        "hashAlgo": "sha256_cbor",
                    },
                }
            ]
        }
    )
    s = cfg.precise_prefix_settings()
    assert (s.block_size, s.hash_seed, s.hash_algo) == (32, "42", "sha256_cbor")
    assert s.kv_events_config.zmq_endpoint == "tcp://*:5557"
    assert s.indexer_config.tokenizers_pool_config.model == "/models/tiny"
    assert len(s.block_hashes(list(range(70)))) == 2
    assert load_config({"plugins": [{"type": "queue-scorer"}]}).precise_prefix_settings() is None


def test_ignored_sections_are_reported():
    cfg = load_config({"plugins": [{"type": "queue-scorer"}], "featureGates": ["x"]})
    assert cfg.extra_sections == {"featureGates": ["x"]}
    assert any("featureGates" in w for w in cfg.warnings)


def test_saturation_detector_is_acted_on_so_not_reported_as_ignored_and_checked_at_load():
    doc = {
        "plugins": [{"type": "queue-scorer"}],
        "flowControl": {"maxRequests": 10},
        "saturationDetector": {"queueDepthThreshold": 3},
    }
    cfg = load_config(doc)
    assert cfg.extra_sections["saturationDetector"] == {"queueDepthThreshold": 3}
    assert [w for w in cfg.warnings if "not acted on" in w] == [
        "config: flowControl.maxRequests is accepted but not acted on by router_lite (see --queue-size/--queue-ttl)"
    ]
    from router_lite.admission import Admission

    assert (
        Admission.from_config(cfg, 0, 30.0).detector.config.queue_depth_threshold == 3
    )  # ... because admission uses it
    with pytest.raises(
        ConfigError, match=r"^config: saturationDetector.queueDepthThreshold: expected a positive integer, got 0$"
    ):
        load_config({**doc, "saturationDetector": {"queueDepthThreshold": 0}})
    with pytest.raises(ConfigError, match=r"^config: saturationDetector: unknown key 'queueDepth'"):
        load_config({**doc, "saturationDetector": {"queueDepth": 3}})
    with pytest.raises(ConfigError, match=r"saturationDetector: expected a mapping, got list"):
        load_config({**doc, "saturationDetector": [1]})


def test_registry_refuses_a_second_plugin_under_a_taken_type_name():
    """Issue 15: a duplicate plugin type silently overwrote the first; now registering one is an error."""
    from router_lite.plugins import Scorer
    from router_lite.registry import lookup, register

    before = lookup("queue-scorer").cls
    for taken in ("queue-scorer", "kvcache-aware-scorer"):  # a current name, and a deprecated alias
        with pytest.raises(TypeError, match=f"plugin type '{taken}' .* is already registered by"):
            register(type("Impostor", (Scorer,), {"type_name": taken, "__module__": "tests.impostor"}))
    assert lookup("queue-scorer").cls is before
