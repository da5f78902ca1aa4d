"""utilization-detector (GIE/llm-d): the saturation detector as a plugin, named by
`saturationDetector.pluginRef`. Its parameters are the thresholds of router_lite's detector (saturation.py):
queueDepthThreshold, kvCacheUtilThreshold, metricsStalenessThreshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router_lite.plugins import SaturationDetectorPlugin
from router_lite.registry import ConfigError, register


@dataclass
class UtilizationDetectorParams:
    queue_depth_threshold: int = 5
    kv_cache_util_threshold: float = 0.8
    metrics_staleness_threshold: str | float = "200ms"


@register
class UtilizationDetector(SaturationDetectorPlugin):
    type_name = "utilization-detector"
    Params = UtilizationDetectorParams

    @staticmethod
    def thresholds(raw: dict[str, Any], where: str) -> dict[str, Any]:
        """The raw thresholds, checked by the detector's own parser (one source of truth for their rules)."""
        from router_lite.saturation import SaturationConfig

        try:
            SaturationConfig.from_dict(raw, where=where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return dict(raw)
