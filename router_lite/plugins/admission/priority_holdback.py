"""priority-holdback-policy (llm-d's flow-control UsageLimitPolicy): per-priority admission ceilings.

Named by `flowControl.usageLimitPolicyPluginRef`. The lowest priority band may be dispatched while the pool's
saturation is below `minCeiling`, the highest below `maxCeiling`, the bands between on a line (`domain: rank`,
equal steps; `value`, by priority value). Lower bands stop short of full, so the last of the capacity stays
free for the higher ones: a critical request finds a free seat instead of waiting for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router_lite.plugins import Plugin
from router_lite.registry import register


@dataclass
class PriorityHoldbackParams:
    min_ceiling: float | None = None
    max_ceiling: float = 1.0
    shape: str = "linear"
    domain: str = "rank"

    def validate(self) -> str | None:
        if self.min_ceiling is None:
            return "minCeiling: required (the ceiling of the lowest priority band, in [0, 1))"
        if self.shape != "linear":
            return f"shape: expected 'linear', got {self.shape!r}"
        if self.domain not in ("rank", "value"):
            return f"domain: expected 'rank' or 'value', got {self.domain!r}"
        if not 0.0 <= self.min_ceiling < 1.0:
            return f"minCeiling: expected a number in [0, 1), got {self.min_ceiling!r}"
        if not 0.0 < self.max_ceiling <= 1.0:
            return f"maxCeiling: expected a number in (0, 1], got {self.max_ceiling!r}"
        if self.min_ceiling >= self.max_ceiling:
            return f"minCeiling ({self.min_ceiling}) must be below maxCeiling ({self.max_ceiling})"
        return None


@register
class PriorityHoldbackPolicy(Plugin):
    type_name = "priority-holdback-policy"
    kind = "usage_limit_policy"
    Params = PriorityHoldbackParams

    def usage_limit(self) -> dict[str, Any]:
        p: PriorityHoldbackParams = self.params
        return {"min_ceiling": p.min_ceiling, "max_ceiling": p.max_ceiling, "domain": p.domain}
