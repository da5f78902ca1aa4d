"""disagg-headers-handler (llm-d; older name prefill-header-handler): the P/D headers for the decode sidecar.

In llm-d this PreRequest plugin writes the chosen prefill pod into `x-prefiller-host-port`, which the decode
pod's routing sidecar reads. router_lite's gateway always does that itself when a prefill pod was chosen
(it also runs the prefill leg), so the plugin is accepted so that llm-d's P/D configs load unchanged, and
does nothing more.
"""

from __future__ import annotations

from router_lite.plugins import Plugin
from router_lite.registry import register


@register
class DisaggHeadersHandler(Plugin):
    type_name = "disagg-headers-handler"
    kind = "pre_request"
    aliases = ("prefill-header-handler",)
