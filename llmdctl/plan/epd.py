"""The E/P/D scenario: what an encode pool buys, against P/D and aggregated serving on the same GPUs.

Multimodal chat traffic (each request: a shared system prompt, distinct images as their placeholder tokens,
a question, a short answer) runs through four deployments of the same GPUs, each at a few Poisson loads:

    aggregated   every pod runs encoder, prefill and decode (vLLM's default)
    e-pd         encoder pods + pods that prefill and decode (llm-d's E/PD)
    pd           prefill pods (which run the encoder) + decode pods
    epd          encoder pods + prefill pods + decode pods (llm-d's E/P/D)

All four route with the shipped `epd` profile's router (disagg-profile-handler, its filters and scorers), with
its deciders switched on or off: `deciders.encode` (always-disagg-multimodal-decider) for the encode leg,
`deciders.prefill` (prefix-based-pd-decider) for the P/D split. The planner runs them through the gateway's
director on its virtual clock (`plan.sim`): encoder passes on the roofline model (`sim_gpu.multimodal`),
embeddings pulled over the network profile, the KV transfer for P/D.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmdctl.bench.load import Stage, poisson_arrivals
from llmdctl.bench.metrics import SLO, summarize
from llmdctl.bench.workloads import BenchRequest
from llmdctl.plan.sim import PlanConfig, PoolPlan, simulate
from sim_gpu.multimodal import image_tokens

IMAGE_PAD = 151655  # Qwen2-VL's <|image_pad|> id: the placeholder token each image's tokens carry
_TOKENS = (1000, 30000)  # ids of the text tokens
DEPLOYMENTS = ("aggregated", "e-pd", "pd", "epd")


@dataclass(frozen=True)
class MMWorkload:
    """Multimodal chat requests: [system prompt][images][question] -> output, images distinct per request.

    An image of `image_px` pixels counts as Qwen2-VL counts it (`sim_gpu.multimodal.image_tokens`: one token
    per 28x28 pixels; 1344x896 -> 1536 tokens)."""

    images_per_request: int = 2
    image_px: tuple[int, int] = (1344, 896)
    system_prompt_len: int = 256
    question_len: int = 128
    output_len: int = 128

    @property
    def image_tokens(self) -> int:
        return image_tokens(*self.image_px)

    def describe(self) -> str:
        w, h = self.image_px
        return (
            f"{self.images_per_request} x {w}x{h} image(s) ({self.image_tokens} tokens each) + "
            f"{self.system_prompt_len}+{self.question_len} text tokens -> {self.output_len}"
        )

    def check(self) -> None:
        for name in ("images_per_request", "system_prompt_len", "question_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name.replace('_', '-')}: expected an integer >= 0, got {v!r}")
        if not isinstance(self.output_len, int) or self.output_len < 1:
            raise ValueError(f"output-len: expected an integer >= 1, got {self.output_len!r}")
        if len(self.image_px) != 2 or min(self.image_px) < 1:
            raise ValueError(f"image-px: expected WIDTH x HEIGHT >= 1, got {self.image_px!r}")


def _text(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(*_TOKENS) for _ in range(n)]


def mm_requests(w: MMWorkload, n: int, seed: int = 0, images: bool = True) -> list[BenchRequest]:
    """`n` requests of `w`. `images=False`: the text twin — the same prompt lengths with text tokens in the
    images' places and no multimodal items (no encoder anywhere), to isolate what the images cost."""
    w.check()
    rng = random.Random(seed)
    system = _text(rng, w.system_prompt_len)
    t = w.image_tokens
    out = []
    for i in range(n):
        items: list[tuple[str, int, int]] = []
        prompt = list(system)
        for k in range(w.images_per_request):
            if images:
                items.append((f"image-{seed}-{i}-{k}", len(prompt), t))
                prompt.extend([IMAGE_PAD] * t)
            else:
                prompt.extend(_text(rng, t))
        prompt.extend(_text(rng, w.question_len))
        out.append(BenchRequest(f"mm-{i}", prompt, w.output_len, group="mm", mm_items=items))
    return out


def epd_router(deployment: str, prefix_scorer: bool = False) -> dict[str, Any]:
    """The shipped `epd` profile's router with the deployment's deciders: encode on for e-pd / epd, prefill on
    for pd / epd (no decider: that stage never runs; decode-filter keeps the pods that do both).

    Without `prefix_scorer` its prefix-cache-scorer is left out: distinct images share no KV, so load alone is
    the signal for this workload (`prefix_scorer=True` routes with it; docs/pd-and-wide-ep.md)."""
    from llmdctl.profile import load_shipped_profile

    cfg = copy.deepcopy(load_shipped_profile("epd").router.config)
    for plugin in cfg["plugins"]:
        if plugin.get("type") == "disagg-profile-handler":
            deciders = plugin["parameters"]["deciders"]
            if deployment not in ("e-pd", "epd"):
                deciders.pop("encode", None)
            if deployment not in ("pd", "epd"):
                deciders.pop("prefill", None)
    if not prefix_scorer:
        cfg["plugins"] = [p for p in cfg["plugins"] if p.get("type") != "prefix-cache-scorer"]
        for prof in cfg["schedulingProfiles"]:
            prof["plugins"] = [r for r in prof["plugins"] if r.get("pluginRef") != "prefix-cache-scorer"]
    return cfg


@dataclass
class EPDScenario:
    """Deployments of the same GPUs (name -> pools) under one multimodal workload, at each of `rates`."""

    name: str
    description: str
    deployments: dict[str, list[PoolPlan]]
    workload: MMWorkload
    rates: list[float]
    duration_s: float
    network: str = "rdma-200g"
    prefix_scorer: bool = False  # route with the epd profile's prefix-cache-scorer (see `epd_router`)
    slo: SLO = SLO(0.5, 0.05)  # goodput: interactive multimodal chat (TTFT <= 0.5 s, TPOT <= 50 ms)

    def plan_config(self, deployment: str, seed: int = 0) -> PlanConfig:
        return PlanConfig(
            pools=copy.deepcopy(self.deployments[deployment]),
            router=epd_router(deployment, self.prefix_scorer),
            name=deployment,
            network=self.network,
            seed=seed,
        )


ROLE_LETTERS = {"encode": "E", "prefill": "P", "decode": "D", "both": "PD"}


def layout(pools: list[PoolPlan]) -> str:
    """A deployment in llm-d's shorthand: 1E+4P+3D, 8PD."""
    return "+".join(f"{p.replicas}{ROLE_LETTERS[p.role]}" for p in pools)


def _pools(encode: int, prefill: int, decode: int, both: int, base: PoolPlan) -> list[PoolPlan]:
    out = []
    for role, n in (("encode", encode), ("prefill", prefill), ("decode", decode), ("both", both)):
        if n:
            out.append(dataclasses.replace(base, name=role if role != "both" else "pod", role=role, replicas=n))
    return out


_H100 = PoolPlan(hardware="H100", model="Llama-3.1-8B", block_size=16, max_num_seqs=128, max_model_len=16384)

EPD = EPDScenario(
    name="epd",
    description=(
        "E/P/D vs E/PD vs P/D vs aggregated on 8 x H100 (Llama-3.1-8B, a 0.6 B ViT): 2 x 1344x896 images + 384 "
        "text tokens -> 128, Poisson 8 -> 40 req/s, 30 s each"
    ),
    deployments={
        "aggregated": _pools(0, 0, 0, 8, _H100),
        "e-pd": _pools(1, 0, 0, 7, _H100),
        "pd": _pools(0, 4, 4, 0, _H100),
        "epd": _pools(1, 4, 3, 0, _H100),
    },
    workload=MMWorkload(),
    rates=[8.0, 16.0, 24.0, 32.0, 40.0],
    duration_s=30.0,
)

EPD_SCENARIOS = {s.name: s for s in (EPD,)}

Progress = Callable[[str, float, int, int], None]  # (run name, sim seconds, finished, total)


def run_one(
    scenario: EPDScenario,
    deployment: str,
    rate: float,
    *,
    duration_s: float,
    seed: int = 0,
    slo: SLO | None = None,
    workload: MMWorkload | None = None,
    images: bool = True,
    keep_decisions: int = 0,
    max_wall_s: float = 900.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One deployment at one load: its row (TTFT, E2E, goodput, per-role utilisation, encode legs)."""
    slo = slo or scenario.slo
    w = workload or scenario.workload
    arrivals = poisson_arrivals([Stage(rate, duration_s)], seed, 100_000)
    reqs = mm_requests(w, len(arrivals), seed, images=images)
    cfg = scenario.plan_config(deployment, seed)
    name = f"{deployment}@{rate:g}"
    cb = (lambda now, done, total: progress(name, now, done, total)) if progress else None
    res = simulate(cfg, reqs, arrivals, max_wall_s=max_wall_s, progress=cb, keep_decisions=keep_decisions)
    s = summarize(res.records, slo).to_dict()
    return {
        "deployment": deployment,
        "rate": rate,
        "pods": {p.role: p.replicas for p in cfg.pools},
        "layout": layout(cfg.pools),
        "gpus": cfg.gpus,
        "requests": s["requests"],
        "ok": s["ok"],
        "ttft_mean_s": s["ttft_s"]["mean"],
        "ttft_p90_s": s["ttft_s"]["p90"],
        "e2e_mean_s": s["e2e_s"]["mean"],
        "e2e_p90_s": s["e2e_s"]["p90"],
        "tpot_mean_s": s["tpot_s"]["mean"],
        "goodput_req_s": s["goodput_req_s"],
        "output_tok_s": s["output_tok_s"],
        "utilization": {k: round(v, 4) for k, v in res.utilization.items()},
        "encode_legs": res.encode_legs,
        "encode_leg_mean_s": res.encode_leg_s / res.encode_legs if res.encode_legs else None,
        "sim_s": round(res.sim_s, 3),
        "wall_s": round(res.wall_s, 3),
        "cpu_s": round(res.cpu_s, 3),
        "truncated": res.truncated,
        **({"decisions": res.decisions} if keep_decisions else {}),
    }


def run_epd(
    scenario: EPDScenario,
    deployments: list[str] | None = None,
    *,
    time_scale: float = 1.0,
    rate_scale: float = 1.0,
    seed: int = 0,
    slo: SLO | None = None,
    max_wall_s: float = 900.0,
    progress: Progress | None = None,
    keep_decisions: int = 0,
) -> dict[str, Any]:
    """Every deployment at every load: rates x `rate_scale`, each `duration_s` x `time_scale` of sends; goodput
    against `slo`, else the scenario's. Returns {scenario, description, workload, rates, rows: [one per
    (deployment, rate)]}."""
    names = deployments or list(scenario.deployments)
    for d in names:
        if d not in scenario.deployments:
            raise ValueError(f"deployment: expected one of {', '.join(scenario.deployments)}, got {d!r}")
    if not (time_scale > 0 and rate_scale > 0):
        raise ValueError("--time-scale and --rate-scale: expected > 0")
    slo = slo or scenario.slo
    rates = [r * rate_scale for r in scenario.rates]
    rows = [
        run_one(
            scenario,
            d,
            rate,
            duration_s=scenario.duration_s * time_scale,
            seed=seed,
            slo=slo,
            keep_decisions=keep_decisions,
            max_wall_s=max_wall_s,
            progress=progress,
        )
        for rate in rates
        for d in names
    ]
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "workload": scenario.workload.describe(),
        "deployments": {d: {p.role: p.replicas for p in scenario.deployments[d]} for d in names},
        "hardware": sorted({p.hardware for d in names for p in scenario.deployments[d]}),
        "slo": dataclasses.asdict(slo),
        "rates": rates,
        "duration_s": scenario.duration_s * time_scale,
        "rows": rows,
    }


__all__ = ["DEPLOYMENTS", "EPD", "EPD_SCENARIOS", "EPDScenario", "MMWorkload", "epd_router", "mm_requests", "run_epd"]
