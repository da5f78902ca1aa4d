"""metrics-data-source (GIE/llm-d): scrape each endpoint's Prometheus /metrics.

router_lite's data layer always scrapes (llm-d injects this source when a config names none), so the
plugin states how: `scheme` and `path` must be what the data layer does (http, /metrics); anything else is
rejected rather than silently scraping somewhere other than the config says.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import DataSource
from router_lite.registry import register


@dataclass
class MetricsDataSourceParams:
    scheme: str = "http"
    path: str = "/metrics"
    insecure_skip_verify: bool = True
    ca_cert_path: str = ""
    client_cert_path: str = ""
    client_key_path: str = ""

    def validate(self) -> str | None:
        if self.scheme != "http":
            return f"scheme: router_lite scrapes model servers over http, got {self.scheme!r}"
        if self.path != "/metrics":
            return f"path: router_lite scrapes /metrics, got {self.path!r}"
        return None


@register
class MetricsDataSource(DataSource):
    type_name = "metrics-data-source"
    Params = MetricsDataSourceParams

    @classmethod
    def accepts(cls, extractor: type) -> bool:
        return getattr(extractor, "kind", "") == "extractor"
