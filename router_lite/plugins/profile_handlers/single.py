"""single-profile-handler: run the one configured profile once; its choice is the target."""

from __future__ import annotations

from router_lite.plugins import ProfileHandler, ProfileOutcome
from router_lite.registry import register
from router_lite.types import LLMRequest, ProfileRunResult


@register
class SingleProfileHandler(ProfileHandler):
    type_name = "single-profile-handler"
    aliases = ("single-profile",)

    @staticmethod
    def check_profiles(params, profile_names: list[str], plugins) -> str | None:
        if len(profile_names) != 1:
            return f"expects exactly one scheduling profile, got {len(profile_names)}: {', '.join(profile_names)}"
        return None

    def pick_profiles(
        self, request: LLMRequest, profile_names: list[str], results: dict[str, ProfileRunResult]
    ) -> list[str]:
        return [] if results else profile_names[:1]

    def process_results(self, request: LLMRequest, results: dict[str, ProfileRunResult]) -> ProfileOutcome:
        name, res = next(iter(results.items()))
        if res.target is None:
            reason = "no candidate endpoints after filters" if not res.endpoints else "picker chose none"
            return ProfileOutcome(None, None, name, reason)
        return ProfileOutcome(res.target, None, name, _why(res))


def _why(res: ProfileRunResult) -> str:
    """One line on why the chosen endpoint won: its total and its best-weighted scorer."""
    ep = res.target
    if ep is None:
        return ""
    total = res.totals.get(ep.key, 0.0)
    parts = []
    for name, scores in res.raw_scores.items():
        w = res.weights.get(name, 0.0)
        v = scores.get(ep.key, 0.0)
        parts.append((min(max(v, 0.0), 1.0) * w, name, v))
    parts.sort(reverse=True)
    detail = ", ".join(f"{n}={v:.2f}" for _, n, v in parts[:3])
    hit = res.prefix_blocks.get(ep.key, 0)
    prefix = f", prefix hit {hit} blocks" if hit else ""
    return f"max score {total:.3f} of {len(res.endpoints)} candidates ({detail}){prefix}"
