"""E/P/D through real processes on loopback: simulated encode, prefill and decode pods behind the router.

A chat request with an image goes encode pod -> prefill pod (with the encoder's ec_transfer_params) -> decode
pod; the decision record shows the encode leg. Text-only requests skip it; a dead encoder pod falls back to
encoding on the target. Config errors of the encode stage are one line naming the key.
"""

from __future__ import annotations

import json

import httpx
import pytest

from router_lite.config import ConfigError, load_config
from tests.router.procs import router, sim_group, words

EPD_CONFIG = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: encode-filter
  - type: prefill-filter
  - type: decode-filter
  - type: queue-scorer
  - type: max-score-picker
  - type: always-disagg-pd-decider
  - type: always-disagg-multimodal-decider
  - type: disagg-headers-handler
  - type: disagg-profile-handler
    parameters:
      deciders: {encode: always-disagg-multimodal-decider, prefill: always-disagg-pd-decider}
schedulingProfiles:
  - name: encode
    plugins: [{pluginRef: encode-filter}, {pluginRef: queue-scorer}, {pluginRef: max-score-picker}]
  - name: prefill
    plugins: [{pluginRef: prefill-filter}, {pluginRef: queue-scorer}, {pluginRef: max-score-picker}]
  - name: decode
    plugins: [{pluginRef: decode-filter}, {pluginRef: queue-scorer}, {pluginRef: max-score-picker}]
"""
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


def _decision(c: httpx.Client) -> dict:
    with c.stream("GET", "/debug/decisions", params={"history": 1}) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                return json.loads(line[5:])
    raise AssertionError("no decision")


def _ask(c: httpx.Client, content) -> tuple[httpx.Response, dict]:
    body = {"model": "sim-model", "messages": [{"role": "user", "content": content}], "max_tokens": 3}
    r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r, _decision(c)


def test_image_requests_take_the_encode_leg_and_text_requests_do_not():
    with (
        sim_group(3, role=["encode", "prefill", "decode"], events=False) as (enc, pre, dec),
        router(enc.endpoint_entries() + pre.endpoint_entries() + dec.endpoint_entries(), EPD_CONFIG) as r,
        r.client() as c,
    ):
        resp, d = _ask(c, [{"type": "text", "text": words("look", 30)}, IMAGE])
        assert resp.headers["x-llmd-endpoint"] == dec.address()
        assert d["chosen"] == {"decode": dec.address(), "prefill": pre.address(), "encode": enc.address()}
        assert d["epd"]["encode"] == enc.address() and d["epd"]["fallback"] is None and d["epd"]["ms"] > 0
        assert d["reason"].startswith("encode ") and "1 multimodal item(s)" in d["reason"]
        assert resp.json()["usage"]["prompt_tokens"] > 576  # the image's placeholder tokens count
        _, d = _ask(c, words("plain", 30))
        assert "encode" not in d["chosen"] and "epd" not in d and d["chosen"]["prefill"] == pre.address()
        enc.kill()  # the encoder pod dies: the prefill pod encodes the image itself
        resp, d = _ask(c, [IMAGE, {"type": "text", "text": "and now?"}])
        assert resp.headers["x-llmd-endpoint"] == dec.address()
        if "epd" in d:  # the router tried the dead pod (its scrape had not noticed yet) and fell back
            assert "encode pod unreachable" in d["epd"]["fallback"] and "the target encodes" in d["reason"]
        else:  # the scrape noticed first: no encode candidate at all
            assert "no encode endpoint available" in d["reason"]


@pytest.mark.parametrize(
    "change,fragment",
    [
        ("deciders: {encode: nope}", "deciders.encode 'nope' names no plugin"),
        ("deciders: {encode: queue-scorer}", "not a decider"),
        (
            "deciders: {encode: always-disagg-multimodal-decider}\n      profiles: {encode: imgs}",
            "profiles.encode 'imgs'",
        ),
        ("deciders: {video: always-disagg-multimodal-decider}", "unknown stage 'video'"),
    ],
)
def test_encode_stage_config_errors_name_the_key(change, fragment):
    text = EPD_CONFIG.replace(
        "deciders: {encode: always-disagg-multimodal-decider, prefill: always-disagg-pd-decider}", change
    )
    with pytest.raises(ConfigError, match=fragment):
        load_config(text)
