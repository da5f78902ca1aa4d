"""label-selector-filter (llm-d's by-label-selector): a Kubernetes LabelSelector over endpoint labels.

Parameters are a LabelSelector: `matchLabels` and `matchExpressions` of {key, operator: In | NotIn |
Exists | DoesNotExist, values}; all terms must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from router_lite.plugins import Filter
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class MatchExpression:
    key: str = ""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = "In"
    values: list[str] = field(default_factory=list)

    def validate(self) -> str | None:
        if not self.key:
            return "key: required"
        if self.operator in ("In", "NotIn") and not self.values:
            return f"values: operator {self.operator} needs a non-empty list"
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            return f"values: operator {self.operator} takes no values"
        return None

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass
class LabelSelectorParams:
    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: list[MatchExpression] = field(default_factory=list)


@register
class LabelSelectorFilter(Filter):
    type_name = "label-selector-filter"
    synonyms = ("by-label-selector",)
    Params = LabelSelectorParams

    def matches(self, labels: dict[str, str]) -> bool:
        p: LabelSelectorParams = self.params
        return all(labels.get(k) == v for k, v in p.match_labels.items()) and all(
            e.matches(labels) for e in p.match_expressions
        )

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        return [e for e in endpoints if self.matches(e.labels)]
