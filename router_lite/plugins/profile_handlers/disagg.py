"""disagg-profile-handler (llm-d; deprecated name pd-profile-handler): prefill/decode disaggregation.

Runs the decode profile first; then asks the P/D decider whether this request needs a separate prefill,
and if so runs the prefill profile. The decode choice is the primary target; the prefill choice, when any,
is where the gateway sends the prefill leg.

Two parameter shapes are accepted. llm-d's current one names profiles and deciders by stage::

    parameters:
      profiles: {decode: decode, prefill: prefill}   # optional; these are the defaults
      deciders: {prefill: prefix-based-pd-decider}   # no prefill decider: every request is decode-only

and the older flat one: `decodeProfile`, `prefillProfile`, `prefillDeciderPluginName` (alias
`deciderPluginName`), `threshold` (pd-profile-handler: non-cached tokens, a prefix-based decider). In the
flat shape, or with no parameters, a handler without a decider disaggregates every request (always-disagg),
as llm-d's handler did when that shape was current.

E/P/D: with `deciders.encode` (llm-d's `always-disagg-multimodal-decider`) and an encode profile
(`profiles.encode`, default `encode`, typically `encode-filter` + a load scorer), a request the encode decider
accepts also gets an encoder pod: the gateway sends it there first and hands the embeddings' whereabouts
(`ec_transfer_params`) to the prefill / decode legs. As in llm-d, decode is picked first, then the prefill
and encode deciders are asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.cycle_state import StateKey
from router_lite.plugins import Decider, ProfileHandler, ProfileOutcome
from router_lite.plugins.deciders.always import AlwaysDisaggDecider
from router_lite.plugins.deciders.prefix_based import PrefixBasedParams, PrefixBasedPDDecider
from router_lite.plugins.profile_handlers.single import _why
from router_lite.registry import ConfigError, NoParams, register
from router_lite.types import Endpoint, LLMRequest, ProfileRunResult

# The deciders' verdicts, made while picking profiles and used when combining their results.
_DECISION: StateKey[tuple[bool, str]] = StateKey("disagg:decision", per_cycle=True)
_ENCODE_DECISION: StateKey[tuple[bool, str]] = StateKey("disagg:encode-decision", per_cycle=True)

_STAGES = {"profiles": ("decode", "prefill", "encode"), "deciders": ("prefill", "encode")}


@dataclass
class DisaggParams:
    # llm-d's current shape: per-stage maps.
    profiles: dict[str, str] | None = None
    deciders: dict[str, str] | None = None
    # The older flat shape (None: not given).
    decode_profile: str | None = None
    prefill_profile: str | None = None
    prefill_decider_plugin_name: str | None = None
    prefix_plugin_type: str = ""  # accepted for compatibility; the prefix scorer is found in the decode profile
    prefix_plugin_name: str = ""
    primary_port: int = 0  # data-parallel: rewrite the decode target port (llm-d's primaryPort)
    threshold: int | None = None  # legacy pd-profile-handler: non-cached tokens that trigger disaggregation
    hash_block_size: int | None = None  # legacy; block size now comes from the prefix scorer

    ALIASES = {"deciderPluginName": "prefillDeciderPluginName"}

    @property
    def current_shape(self) -> bool:
        return self.profiles is not None or self.deciders is not None

    @property
    def decode(self) -> str:
        return (self.profiles or {}).get("decode") or self.decode_profile or "decode"

    @property
    def prefill(self) -> str:
        return (self.profiles or {}).get("prefill") or self.prefill_profile or "prefill"

    @property
    def encode(self) -> str:
        return (self.profiles or {}).get("encode") or "encode"

    @property
    def encode_decider(self) -> str:
        return (self.deciders or {}).get("encode") or ""

    @property
    def prefill_decider(self) -> str:
        return (self.deciders or {}).get("prefill") or self.prefill_decider_plugin_name or ""

    def validate(self) -> str | None:
        for section, stages in _STAGES.items():
            given = getattr(self, section) or {}
            unknown = sorted(set(given) - set(stages))
            if unknown:
                return f"{section}: unknown stage {unknown[0]!r}; accepted: {', '.join(stages)}"
            empty = [k for k, v in given.items() if not v]
            if empty:
                return f"{section}.{empty[0]}: expected a name, got an empty string"
        for new, old, key in (
            ("decode", self.decode_profile, "decodeProfile"),
            ("prefill", self.prefill_profile, "prefillProfile"),
        ):
            given = (self.profiles or {}).get(new)
            if given and old and given != old:
                return f"profiles.{new}: {given!r} conflicts with {key} {old!r}; give one"
        given = (self.deciders or {}).get("prefill")
        if given and self.prefill_decider_plugin_name and given != self.prefill_decider_plugin_name:
            return (
                f"deciders.prefill: {given!r} conflicts with prefillDeciderPluginName "
                f"{self.prefill_decider_plugin_name!r}; give one"
            )
        if not 0 <= self.primary_port <= 65535:
            return f"primaryPort: expected 0 (off) or a port 1-65535, got {self.primary_port}"
        if self.threshold is not None and self.threshold < 0:
            return f"threshold: expected a non-negative integer, got {self.threshold}"
        if self.encode_decider and self.encode in (self.decode, self.prefill):
            return "profiles.encode: must differ from the decode and prefill profiles"
        if self.decode == self.prefill:
            return (
                "profiles.prefill: must differ from the decode profile"
                if self.current_shape
                else "prefillProfile: must differ from decodeProfile"
            )
        return None


@register
class DisaggProfileHandler(ProfileHandler):
    type_name = "disagg-profile-handler"
    aliases = ("pd-profile-handler",)
    Params = DisaggParams

    @staticmethod
    def check_profiles(params: DisaggParams, profile_names: list[str], plugins) -> str | None:
        if params.decode not in profile_names:
            key = "profiles.decode" if params.current_shape else "decodeProfile"
            return f"{key} {params.decode!r} is not among schedulingProfiles ({', '.join(profile_names)})"
        name = params.prefill_decider
        if name:
            key = "deciders.prefill" if (params.deciders or {}).get("prefill") else "prefillDeciderPluginName"
            spec = plugins.get(name)
            if spec is None:
                return f"{key} {name!r} names no plugin"
            if spec.kind != "decider":
                return f"{key} {name!r} is a {spec.kind.replace('_', ' ')}, not a P/D decider"
        name = params.encode_decider
        if name:
            spec = plugins.get(name)
            if spec is None:
                return f"deciders.encode {name!r} names no plugin"
            if spec.kind != "decider":
                return f"deciders.encode {name!r} is a {spec.kind.replace('_', ' ')}, not a decider"
            if params.encode not in profile_names:
                return f"profiles.encode {params.encode!r} is not among schedulingProfiles ({', '.join(profile_names)})"
        return None

    def bind(self) -> None:
        p: DisaggParams = self.params
        self.decider: Decider | None
        if p.prefill_decider:
            d = self.ctx.plugins.get(p.prefill_decider)
            if not isinstance(d, Decider):
                raise ConfigError(f"plugin {self.name!r}: P/D decider {p.prefill_decider!r} is not a decider")
            self.decider = d
        elif p.threshold is not None:
            self.decider = PrefixBasedPDDecider(f"{self.name}/threshold", PrefixBasedParams(p.threshold), self.ctx)
        elif p.current_shape:
            self.decider = None  # llm-d's current handler: no prefill decider, no prefill stage
        else:
            self.decider = AlwaysDisaggDecider(f"{self.name}/always", NoParams(), self.ctx)
        self.encode_decider: Decider | None = None
        if p.encode_decider:
            d = self.ctx.plugins.get(p.encode_decider)
            if not isinstance(d, Decider):
                raise ConfigError(f"plugin {self.name!r}: encode decider {p.encode_decider!r} is not a decider")
            self.encode_decider = d

    def pick_profiles(
        self, request: LLMRequest, profile_names: list[str], results: dict[str, ProfileRunResult]
    ) -> list[str]:
        p: DisaggParams = self.params
        if p.decode not in results:
            return [p.decode]
        decode = results[p.decode]
        if decode.target is None:
            return []
        names = []
        if p.prefill in profile_names and p.prefill not in results and _DECISION not in request.state:
            if self.decider is None:
                go, why = False, "no prefill decider configured"
            else:
                go, why = self.decider.disaggregate(request, decode)
            request.state.set(_DECISION, (go, why))
            if go:
                names.append(p.prefill)
        enc = self.encode_decider
        if enc is not None and p.encode not in results and _ENCODE_DECISION not in request.state:
            go, why = enc.disaggregate(request, decode)
            request.state.set(_ENCODE_DECISION, (go, why))
            if go:
                names.append(p.encode)
        return names

    def pre_request(
        self, request: LLMRequest, target: Endpoint, prefill: Endpoint | None, headers: dict[str, str]
    ) -> None:
        if self.params.primary_port:  # data-parallel decode pods: the rank chosen, for llm-d's sidecar
            headers["x-data-parallel-host-port"] = target.key

    def process_results(self, request: LLMRequest, results: dict[str, ProfileRunResult]) -> ProfileOutcome:
        p: DisaggParams = self.params
        decode = results.get(p.decode)
        if decode is None or decode.target is None:
            reason = (
                "no decode endpoints after filters"
                if decode is None or not decode.endpoints
                else "decode picker chose none"
            )
            return ProfileOutcome(None, None, p.decode, reason)
        out = self._pd_outcome(request, results, decode)
        enc_go, enc_why = request.state.pop(_ENCODE_DECISION) or (False, "")
        if enc_go:
            enc_res = results.get(p.encode)
            if enc_res is not None and enc_res.target is not None:
                out.encode = enc_res.target
                out.reason = f"encode {_why(enc_res)} ({enc_why}); {out.reason}"
            else:  # no encoder pod: the prefill (or decode) pod encodes the items itself
                out.reason = f"encode on the target: {enc_why}, but no encode endpoint available; {out.reason}"
        return out

    def _pd_outcome(
        self, request: LLMRequest, results: dict[str, ProfileRunResult], decode: ProfileRunResult
    ) -> ProfileOutcome:
        p: DisaggParams = self.params
        go, why = request.state.pop(_DECISION) or (False, "no prefill profile configured")
        target = decode.target
        prefill_res = results.get(p.prefill)
        if go and prefill_res is not None and prefill_res.target is not None:
            reason = f"disaggregated: {why}; decode {_why(decode)}; prefill {_why(prefill_res)}"
            return ProfileOutcome(target, prefill_res.target, p.decode, reason)
        if go:  # decider said yes but no prefill endpoint was available: decode-only, and say so
            reason = f"decode-only: {why}, but no prefill endpoint available; {_why(decode)}"
            return ProfileOutcome(target, None, p.decode, reason, prefill_unavailable=True)
        return ProfileOutcome(target, None, p.decode, f"decode-only: {why}; {_why(decode)}")
