"""disagg-headers-handler (llm-d; older name prefill-header-handler): the P/D headers for the decode sidecar.

In llm-d this PreRequest plugin writes the chosen prefill pod into `x-prefiller-host-port`, which the decode
pod's routing sidecar reads. Here too: the decode leg carries the header while a prefill pod serves the request
(a prefill that failed drops it: the decode pod then prefills itself). router_lite runs the prefill leg itself,
so pods without llm-d's sidecar work as well; a config with a P/D handler and no PreRequest plugin gets this
one injected (see router_lite.config).
"""

from __future__ import annotations

from router_lite.plugins import Plugin
from router_lite.registry import register
from router_lite.types import ENCODE_TARGET, Endpoint, LLMRequest

PREFILLER_HEADER = "x-prefiller-host-port"  # what llm-d's decode sidecar reads
ENCODERS_HEADER = "x-encoder-hosts-ports"  # E/P/D: the encoder pod(s), comma-separated, as llm-d writes it


@register
class DisaggHeadersHandler(Plugin):
    type_name = "disagg-headers-handler"
    kind = "pre_request"
    aliases = ("prefill-header-handler",)

    def pre_request(
        self, request: LLMRequest, target: Endpoint, prefill: Endpoint | None, headers: dict[str, str]
    ) -> None:
        if prefill is not None:
            headers[PREFILLER_HEADER] = prefill.key
        encoder = request.state.get(ENCODE_TARGET)
        if encoder is not None:
            headers[ENCODERS_HEADER] = encoder.key
