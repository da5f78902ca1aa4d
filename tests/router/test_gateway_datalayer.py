"""The data layer's pure parts: vLLM metric parsing, endpoint lists and files (with one-line errors)."""

from __future__ import annotations

import asyncio

import pytest

from router_lite.datalayer import (
    DataLayer,
    DiscoveryError,
    load_endpoints_file,
    parse_endpoint_list,
    parse_vllm_metrics,
)
from router_lite.datalayer.discovery import parse_endpoints_doc

EXPOSITION = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 5.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="1",model_name="m"} 7.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="32",engine="0",num_gpu_blocks="1234",prefix_caching_hash_algo="sha256_cbor"} 1.0
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="4",running_lora_adapters="a,b",waiting_lora_adapters="c"} 1.7e9
vllm:lora_requests_info{max_lora="4",running_lora_adapters="old",waiting_lora_adapters=""} 1.6e9
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 4.0
"""


def test_vllm_metrics_summed_over_engines_or_per_rank():
    m, info = parse_vllm_metrics(EXPOSITION)
    assert (m.running_requests_size, m.waiting_queue_size, m.kv_cache_usage_percent) == (8, 9, 0.5)
    assert (info.block_size, info.num_gpu_blocks, info.hash_algo) == (32, 1234, "sha256_cbor")
    assert (m.block_size, m.num_gpu_blocks) == (32, 1234)
    assert m.active_models == {"a", "b"} and m.waiting_models == {"c"} and m.max_active_models == 4
    r1, _ = parse_vllm_metrics(EXPOSITION, dp_rank=1)
    assert (r1.running_requests_size, r1.waiting_queue_size, r1.kv_cache_usage_percent) == (5, 7, 0.5)


def test_older_vllm_usage_name_and_empty_page():
    m, info = parse_vllm_metrics('vllm:gpu_cache_usage_perc{model_name="m"} 0.75\n')
    assert m.kv_cache_usage_percent == 0.75 and info.block_size is None
    m, _ = parse_vllm_metrics("")
    assert m.waiting_queue_size == 0


def test_endpoint_list_and_file_errors_name_the_place(tmp_path):
    specs = parse_endpoint_list("127.0.0.1:8000, 127.0.0.1:8001@prefill")
    assert [s.key for s in specs] == ["127.0.0.1:8000", "127.0.0.1:8001"]
    assert specs[1].to_endpoint().role == "prefill"
    with pytest.raises(DiscoveryError, match="--endpoints: endpoint 'nope'"):
        parse_endpoint_list("nope")
    with pytest.raises(DiscoveryError, match="listed twice"):
        parse_endpoint_list("h:1,h:1")
    f = tmp_path / "eps.yaml"
    f.write_text("endpoints:\n  - address: 127.0.0.1:9000\n    kvEvents: {endpoint: 'tcp://*:5557', tpoic: x}\n")
    with pytest.raises(DiscoveryError, match=r"eps.yaml: endpoints\[0\].kvEvents: unknown key 'tpoic'"):
        load_endpoints_file(f)
    f.write_text("endpoints:\n  - {address: 127.0.0.1:9000, dpRank: -1}\n")
    with pytest.raises(DiscoveryError, match=r"endpoints\[0\].dpRank"):
        load_endpoints_file(f)
    f.write_text("endpoints: [\n")
    with pytest.raises(DiscoveryError, match="invalid YAML"):
        load_endpoints_file(f)
    with pytest.raises(DiscoveryError, match="cannot read"):
        load_endpoints_file(tmp_path / "missing.yaml")
    specs = parse_endpoints_doc(
        {
            "endpoints": [
                {"address": "127.0.0.1:9000", "role": "decode", "name": "p0", "kvEvents": "tcp://*:5557", "dpRank": 0}
            ]
        },
        "x",
    )
    assert specs[0].kv_events.endpoint == "tcp://*:5557" and specs[0].to_endpoint().role == "decode"


def test_unreachable_endpoint_leaves_the_candidate_set():
    from tests.conftest import free_port

    async def run() -> None:
        dl = DataLayer(parse_endpoint_list(f"127.0.0.1:{free_port()}"), scrape_interval_s=0.02)
        assert len(dl.candidates()) == 1  # optimistic until proven otherwise
        await dl.start()
        try:
            for _ in range(100):
                if not dl.candidates():
                    break
                await asyncio.sleep(0.01)
            assert dl.candidates() == []
            snap = dl.snapshot()[0]
            assert not snap["healthy"] and snap["reason"]
        finally:
            await dl.stop()

    asyncio.run(run())
