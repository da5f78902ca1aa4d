"""disagg-profile-handler (llm-d; deprecated name pd-profile-handler): prefill/decode disaggregation.

Runs the decode profile first; then asks the P/D decider (`prefillDeciderPluginName`) whether this request
needs a separate prefill, and if so runs the prefill profile. The decode choice is the primary target; the
prefill choice, when any, is where the gateway sends the prefill leg. Without a decider named, the legacy
`threshold` (non-cached tokens) acts as a prefix-based decider, and otherwise every request is
disaggregated (always-disagg), as llm-d's default decider does.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import Decider, ProfileHandler, ProfileOutcome
from router_lite.plugins.deciders.prefix_based import PrefixBasedPDDecider, PrefixBasedParams
from router_lite.plugins.deciders.always import AlwaysDisaggDecider
from router_lite.plugins.profile_handlers.single import _why
from router_lite.registry import ConfigError, NoParams, register
from router_lite.types import LLMRequest, ProfileRunResult


@dataclass
class DisaggParams:
    decode_profile: str = "decode"
    prefill_profile: str = "prefill"
    prefill_decider_plugin_name: str = ""
    prefix_plugin_type: str = ""  # accepted for compatibility; the prefix scorer is found in the decode profile
    prefix_plugin_name: str = ""
    primary_port: int = 0  # data-parallel: rewrite the decode target port (llm-d's primaryPort)
    threshold: int | None = None  # legacy pd-profile-handler: non-cached tokens that trigger disaggregation
    hash_block_size: int | None = None  # legacy; block size now comes from the prefix scorer

    ALIASES = {"deciderPluginName": "prefillDeciderPluginName"}

    def validate(self) -> str | None:
        if not 0 <= self.primary_port <= 65535:
            return f"primaryPort: expected 0 (off) or a port 1-65535, got {self.primary_port}"
        if self.threshold is not None and self.threshold < 0:
            return f"threshold: expected a non-negative integer, got {self.threshold}"
        if self.decode_profile == self.prefill_profile:
            return "prefillProfile: must differ from decodeProfile"
        return None


@register
class DisaggProfileHandler(ProfileHandler):
    type_name = "disagg-profile-handler"
    aliases = ("pd-profile-handler",)
    Params = DisaggParams

    @staticmethod
    def check_profiles(params: DisaggParams, profile_names: list[str], plugins) -> str | None:
        if params.decode_profile not in profile_names:
            return f"decodeProfile {params.decode_profile!r} is not among schedulingProfiles ({', '.join(profile_names)})"
        name = params.prefill_decider_plugin_name
        if name:
            spec = plugins.get(name)
            if spec is None:
                return f"prefillDeciderPluginName {name!r} names no plugin"
            if spec.kind != "decider":
                return f"prefillDeciderPluginName {name!r} is a {spec.kind.replace('_', ' ')}, not a P/D decider"
        return None

    def bind(self) -> None:
        p: DisaggParams = self.params
        self.decider: Decider
        if p.prefill_decider_plugin_name:
            d = self.ctx.plugins.get(p.prefill_decider_plugin_name)
            if not isinstance(d, Decider):
                raise ConfigError(f"plugin {self.name!r}: prefillDeciderPluginName {p.prefill_decider_plugin_name!r} is not a decider")
            self.decider = d
        elif p.threshold is not None:
            self.decider = PrefixBasedPDDecider(f"{self.name}/threshold", PrefixBasedParams(p.threshold), self.ctx)
        else:
            self.decider = AlwaysDisaggDecider(f"{self.name}/always", NoParams(), self.ctx)

    def pick_profiles(self, request: LLMRequest, profile_names: list[str], results: dict[str, ProfileRunResult]) -> list[str]:
        p: DisaggParams = self.params
        if p.decode_profile not in results:
            return [p.decode_profile]
        decode = results[p.decode_profile]
        if decode.target is None or p.prefill_profile not in profile_names or p.prefill_profile in results:
            return []
        if "_pd_decision" in request.memo:
            return []
        go, why = self.decider.disaggregate(request, decode)
        request.memo["_pd_decision"] = (go, why)
        return [p.prefill_profile] if go else []

    def process_results(self, request: LLMRequest, results: dict[str, ProfileRunResult]) -> ProfileOutcome:
        p: DisaggParams = self.params
        decode = results.get(p.decode_profile)
        if decode is None or decode.target is None:
            reason = "no decode endpoints after filters" if decode is None or not decode.endpoints else "decode picker chose none"
            return ProfileOutcome(None, None, p.decode_profile, reason)
        go, why = request.memo.pop("_pd_decision", (False, "no prefill profile configured"))
        target = decode.target
        if p.primary_port:
            request.headers["x-data-parallel-host-port"] = target.key
        prefill_res = results.get(p.prefill_profile)
        if go and prefill_res is not None and prefill_res.target is not None:
            reason = f"disaggregated: {why}; decode {_why(decode)}; prefill {_why(prefill_res)}"
            return ProfileOutcome(target, prefill_res.target, p.decode_profile, reason)
        if go:  # decider said yes but no prefill endpoint was available: decode-only, and say so
            return ProfileOutcome(target, None, p.decode_profile, f"decode-only: {why}, but no prefill endpoint available; {_why(decode)}")
        return ProfileOutcome(target, None, p.decode_profile, f"decode-only: {why}; {_why(decode)}")
