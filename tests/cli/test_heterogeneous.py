"""`llmdctl up heterogeneous`: three vendors' pools behind one router, on loopback."""

from __future__ import annotations

import json
import re

import httpx


def test_up_heterogeneous_serves_from_h100_mi300x_and_gaudi3_pools(cli, port_args):
    args, ports = port_args(3)
    r = cli("up", "heterogeneous", "--replicas", "1", *args, "--json")
    assert r.code == 0, r.err
    up = json.loads(r.out)
    assert sorted(p["pool"] for p in up["pods"]) == ["gaudi3", "h100", "mi300x"]
    assert httpx.get(f"{up['router_url']}/health", timeout=5).json()["healthy_endpoints"] == 3
    # Each pool's pods run their own hardware profile: the KV capacity vLLM reports follows device memory
    # (MI300X 192 GiB > Gaudi3 128 GiB > H100 80 GiB, same model).
    blocks = {}
    for pod in up["pods"]:
        text = httpx.get(f"{pod['url']}/metrics", timeout=5).text
        m = re.search(r'vllm:cache_config_info\{[^}]*num_gpu_blocks="(\d+)"', text)
        assert m, text[:500]
        blocks[pod["pool"]] = int(m.group(1))
    assert blocks["mi300x"] > blocks["gaudi3"] > blocks["h100"]
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
