"""`llmdctl up heterogeneous`: three vendors' and two generations' pools behind one router, on loopback."""

from __future__ import annotations

import json
import re

import httpx


def test_up_heterogeneous_serves_from_h100_mi300x_gaudi3_and_a100_pools(cli, port_args):
    args, ports = port_args(4)
    r = cli("up", "heterogeneous", "--replicas", "1", *args, "--json")
    assert r.code == 0, r.err
    up = json.loads(r.out)
    assert sorted(p["pool"] for p in up["pods"]) == ["a100", "gaudi3", "h100", "mi300x"]
    assert httpx.get(f"{up['router_url']}/health", timeout=5).json()["healthy_endpoints"] == 4
    # The router sees each pod with its pool's profile labels (what a told `llmd.ai/relative-speed` rides on)
    # and its pool (what learned speeds are pooled by).
    seen = httpx.get(f"{up['router_url']}/debug/endpoints", timeout=5).json()["endpoints"]
    labels = {e["labels"]["llm-d.ai/pool"]: e["labels"].get("accelerator") for e in seen}
    assert labels == {"h100": "nvidia-h100", "mi300x": "amd-mi300x", "gaudi3": "intel-gaudi3", "a100": "nvidia-a100"}
    # Each pool's pods run their own hardware profile: the KV capacity vLLM reports follows device memory
    # (MI300X 192 GiB > Gaudi3 128 GiB > H100 80 GiB = A100 80 GiB, same model).
    blocks = {}
    for pod in up["pods"]:
        text = httpx.get(f"{pod['url']}/metrics", timeout=5).text
        m = re.search(r'vllm:cache_config_info\{[^}]*num_gpu_blocks="(\d+)"', text)
        assert m, text[:500]
        blocks[pod["pool"]] = int(m.group(1))
    assert blocks["mi300x"] > blocks["gaudi3"] > blocks["h100"] == blocks["a100"]
    served = set()
    with httpx.Client(timeout=20) as client:
        for i in range(24):
            resp = client.post(
                f"{up['router_url']}/v1/completions",
                json={"model": "sim-model", "prompt": f"request {i} " * 200, "max_tokens": 2},
            )
            assert resp.status_code == 200, resp.text
            served.add(resp.headers["x-llmd-endpoint"])
    assert len(served) >= 2  # one router spreads the load over more than one vendor's pods
