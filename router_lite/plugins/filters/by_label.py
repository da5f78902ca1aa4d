"""by-label: keep endpoints whose label `label` has one of `validValues` (or lacks it, if allowed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from router_lite.plugins import Filter
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class ByLabelParams:
    label: str = ""
    valid_values: list[str] = field(default_factory=list)
    allows_no_label: bool = False

    def validate(self) -> str | None:
        return None if self.label else "label: required (the label key to filter on)"


@register
class ByLabelFilter(Filter):
    type_name = "by-label"
    Params = ByLabelParams

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        p: ByLabelParams = self.params
        valid = set(p.valid_values)
        return [
            e
            for e in endpoints
            if (p.label in e.labels and e.labels[p.label] in valid) or (p.label not in e.labels and p.allows_no_label)
        ]
