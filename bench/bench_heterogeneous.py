"""Speed-aware vs speed-blind routing on a mixed H100 / MI300X / Gaudi3 fleet (the `heterogeneous` profile).

Both routers see the same thing, the uncached prompt tokens this router has in flight on each endpoint, and
the same precise prefix index. The speed-blind one (token-load-scorer) balances those tokens; the speed-aware
one (estimated-ttft-scorer) divides them by the prefill rate it has measured on each endpoint, so it sends
more to the fast pods without being told which they are. Runs on the planner (`llmdctl.plan`: the real
scheduler and the simulator's engines on a virtual clock), over a sweep of offered loads. Prints, per load,
TTFT, throughput and goodput of each router, and per vendor: share of requests, output tokens/s, TTFT p50
and $ per million output tokens (prices per GPU-hour: `--price`, list-price assumptions, not quotes).

    python bench/bench_heterogeneous.py                      # the default sweep
    python bench/bench_heterogeneous.py --rates 10,20 --duration 30
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmdctl.bench.load import Stage  # noqa: E402
from llmdctl.bench.metrics import OK, SLO  # noqa: E402
from llmdctl.bench.workloads import WorkloadSpec  # noqa: E402
from llmdctl.plan.run import run_one, workload_and_arrivals  # noqa: E402
from llmdctl.plan.sim import PlanConfig, PoolPlan  # noqa: E402
from llmdctl.profile import load_profile  # noqa: E402
from router_lite.speeds import SPEED_LABEL  # noqa: E402

PRICES = {
    "H100": 2.5,
    "MI300X": 2.0,
    "Gaudi3": 1.5,
    "A100": 1.2,
    "L40S": 1.0,
}  # $/GPU-hour assumed for the table; override with --price


def routers(profile_router: dict[str, Any], ablate: bool = False) -> dict[str, dict[str, Any]]:
    """speed-aware: the profile's own config; speed-blind: the same config as llm-d's own EPP reads it (router_lite
    extensions dropped: token-load-scorer without `speedAware` and `maxNumSeqs`). `ablate` adds the two halves:
    seat limit without speeds, speeds without the seat limit."""
    from llmdctl.k8s.render import upstream_epp_config

    blind, _ = upstream_epp_config(copy.deepcopy(profile_router))
    out = {"speed-blind": blind}
    if ablate:
        out["seats-only"] = _with_load_params(profile_router, speedAware=False)
        out["speeds-only"] = _with_load_params(profile_router, maxNumSeqs=0)
    out["speed-aware"] = copy.deepcopy(profile_router)
    return out


def untold(pools: list[PoolPlan]) -> list[PoolPlan] | None:
    """The pools without their told speeds (the router must learn them), or None when none is told."""
    if not any(SPEED_LABEL in p.labels for p in pools):
        return None
    return [dataclasses.replace(p, labels={k: v for k, v in p.labels.items() if k != SPEED_LABEL}) for p in pools]


def _with_load_params(router: dict[str, Any], **params: Any) -> dict[str, Any]:
    out = copy.deepcopy(router)
    for plugin in out["plugins"]:
        if plugin["type"] == "token-load-scorer":
            plugin["parameters"] = {**(plugin.get("parameters") or {}), **params}
    return out


def per_vendor(
    records: list, pools: dict[str, str], duration: float, gpus: dict[str, int], prices: dict[str, float]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    ok = [r for r in records if r.status == OK]
    for pool, hw in pools.items():
        mine = [r for r in ok if (r.endpoint or "").rsplit("-", 1)[0] == pool]
        tokens = sum(r.output_tokens for r in mine)
        dollars = gpus[pool] * prices.get(hw, 1.0) * duration / 3600
        out[hw] = {
            "share": len(mine) / max(1, len(ok)),
            "out_tok_s": tokens / duration,
            "ttft_p50_s": statistics.median([r.ttft for r in mine if r.ttft is not None]) if mine else float("nan"),
            "usd_per_m_tok": dollars / tokens * 1e6 if tokens else float("nan"),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="8,16,24,32,40", help="offered loads to sweep, requests/s")
    p.add_argument("--duration", type=float, default=60.0, help="simulated seconds per load")
    p.add_argument("--price", default=",".join(f"{k}={v}" for k, v in PRICES.items()), help="$/GPU-hour per hardware")
    p.add_argument("--profile", default="heterogeneous", help="profile name or YAML path (a mixed fleet)")
    p.add_argument("--ablate", action="store_true", help="also run seat limit only and speeds only")
    p.add_argument("--markdown", metavar="JSON", help="print the docs table of a written result and exit")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "heterogeneous.json"))
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())["rows"]))
        return 0
    prices = {k: float(v) for k, v in (kv.split("=") for kv in args.price.split(","))}
    prof = load_profile(args.profile)
    pools = [
        PoolPlan(
            name=pl.name,
            replicas=pl.replicas,
            hardware=pl.hardware,
            model=pl.model_profile,
            block_size=pl.block_size,
            max_model_len=pl.max_model_len,
            max_num_seqs=pl.max_num_seqs,
            labels=dict(pl.labels),
        )
        for pl in prof.pools
    ]
    hw = {pl.name: pl.hardware for pl in pools}
    gpus = {pl.name: pl.gpus for pl in pools}
    wl = WorkloadSpec(
        kind="shared-prefix",
        num_groups=48,
        prompts_per_group=8,
        system_prompt_len=1024,
        question_len=1024,
        output_len=128,
    )
    slo = SLO(ttft_s=1.0, itl_s=0.1)
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        stages = [Stage(rate, args.duration)]
        reqs, arrivals = workload_and_arrivals(wl, stages, seed=0)
        row: dict[str, Any] = {"rate": rate, "requests": len(arrivals), "runs": {}}
        variants = [(name, router, pools) for name, router in routers(prof.router.config, args.ablate).items()]
        learned = untold(pools)
        if learned is not None:  # the profile tells speeds: also show what learning them gives
            variants.append(("speed-aware, learned", prof.router.config, learned))
        for name, router, fleet in variants:
            t0 = time.monotonic()
            run = run_one(
                PlanConfig(fleet, router, name),
                reqs,
                arrivals,
                stages,
                slo,
                price={k.lower(): v for k, v in prices.items()},
            )
            s = run.summary
            row["runs"][name] = {
                "ttft_mean_s": s["ttft_s"]["mean"],
                "ttft_p90_s": s["ttft_s"]["p90"],
                "out_tok_s": s["output_tok_s"],
                "goodput_req_s": s["goodput_req_s"],  # requests in SLO / (first send to last finish)
                "slo_attainment": s["slo_attainment"],
                "ok": s["ok"],
                "cost_per_hour": run.cost,
                "vendors": per_vendor(run.result.records, hw, run.result.sim_s or args.duration, gpus, prices),
                "wall_s": time.monotonic() - t0,
            }
        rows.append(row)
        b, a = row["runs"]["speed-blind"], row["runs"]["speed-aware"]
        if "speed-aware, learned" in row["runs"]:
            lr = row["runs"]["speed-aware, learned"]
            print(
                f"{rate:>5g} req/s learned speeds: TTFT mean {lr['ttft_mean_s']:.4f} s, "
                f"goodput {lr['goodput_req_s']:.2f} req/s"
            )
        print(
            f"{rate:>5g} req/s ({row['requests']} requests): TTFT mean blind {b['ttft_mean_s']:.3f} s aware "
            f"{a['ttft_mean_s']:.3f} s (x{b['ttft_mean_s'] / a['ttft_mean_s']:.2f}), p90 {b['ttft_p90_s']:.3f} / "
            f"{a['ttft_p90_s']:.3f} s, goodput {b['goodput_req_s']:.2f} / {a['goodput_req_s']:.2f} req/s, out "
            f"{b['out_tok_s']:.0f} / {a['out_tok_s']:.0f} tok/s",
            flush=True,
        )
    print(
        f"\nfleet: {', '.join(f'{pl.replicas} x {pl.hardware}' for pl in pools)} ({pools[0].model}); workload: "
        f"{wl.describe()}; SLO TTFT <= {slo.ttft_s} s; prices $/GPU-h {prices}"
    )
    print(
        f"{'req/s':>6} {'router':<12} {'TTFT mean':>9} {'p90':>7} {'goodput':>8} {'out tok/s':>9} | per vendor: share, "
        "out tok/s, TTFT p50, $/M out tok"
    )
    for row in rows:
        for name, r in row["runs"].items():
            vend = "  ".join(
                f"{h} {v['share']:.0%} {v['out_tok_s']:.0f} {v['ttft_p50_s']:.3f}s ${v['usd_per_m_tok']:.2f}"
                for h, v in r["vendors"].items()
            )
            print(
                f"{row['rate']:>6g} {name:<12} {r['ttft_mean_s']:>9.3f} {r['ttft_p90_s']:>7.3f} "
                f"{r['goodput_req_s']:>8.2f} {r['out_tok_s']:>9.0f} | {vend}"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"argv": sys.argv[1:], "workload": wl.describe(), "prices": prices, "rows": rows}, indent=1, default=str
        )
    )
    print(f"wrote {args.out}")
    print(markdown(rows))
    return 0


def markdown(rows: list[dict[str, Any]]) -> str:
    """The docs table (docs/benchmarks.md section 4): blind / aware per load, per-vendor cells in pool order."""
    out = [
        "| req/s | TTFT mean blind / aware (s) | p90 blind / aware (s) | goodput blind / aware (req/s, SLO met) "
        "| share, blind | share, aware | out tok/s, aware | $/M out tok, blind | $/M out tok, aware |",
        "| ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- |",
    ]
    learned = [r for r in rows if "speed-aware, learned" in r["runs"]]
    if learned:
        out[0] += " TTFT mean / goodput, learned |"
        out[1] += " ---: |"
    for row in rows:
        b, a = row["runs"]["speed-blind"], row["runs"]["speed-aware"]
        lr = row["runs"].get("speed-aware, learned")
        tail = f" {lr['ttft_mean_s']:.4f} / {lr['goodput_req_s']:.2f} |" if lr else ""

        def good(r: dict[str, Any]) -> str:
            met = r.get("slo_attainment")
            return f"{r['goodput_req_s']:.2f}" + (f" ({met:.1%})" if met is not None else "")

        def cells(r: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
            vals = [v[key] * scale for v in r["vendors"].values()]
            return " / ".join("idle" if x != x else format(x, fmt) for x in vals)  # nan: no tokens to price

        out.append(
            f"| {row['rate']:g} | {b['ttft_mean_s']:.4f} / {a['ttft_mean_s']:.4f} | {b['ttft_p90_s']:.3f} / "
            f"{a['ttft_p90_s']:.3f} | {good(b)} / {good(a)} | "
            f"{cells(b, 'share', '.0f', 100)}% | {cells(a, 'share', '.0f', 100)}% | {cells(a, 'out_tok_s', '.0f')} | "
            f"{cells(b, 'usd_per_m_tok', '.2f')} | {cells(a, 'usd_per_m_tok', '.2f')} |{tail}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
