"""Benchmark: P/D disaggregation versus aggregated serving, and DP-aware versus rank-blind routing for wide EP.

Both on the virtual clock (the offline planner: the real router Scheduler and SimEngines, no HTTP), so the
figures are the simulator's physics, not measurements of GPUs.

A. P/D (the shape of llm-d's P/D guide: 8 TP1 prefill + 2 TP4 decode instances, 10k ISL / 1k OSL). llm-d used
   gpt-oss-120b on 16 H200; the simulator has no gpt-oss profile, so this runs Qwen3-32B (dense, bf16) on
   16 H200: P/D 8xTP1 prefill + 2xTP4 decode versus the same 16 GPUs aggregated, as 16xTP1 and as 4xTP4.
   Load sweep at rdma-200g, then the network sweep (tcp-25g, rdma-100g/200g/400g) at the highest load.
B. Wide EP: DeepSeek-R1 on 2 pods x 8 data-parallel ranks (16 H200, EP16, rdma-400g), ranks stepping in
   lockstep; shared-prefix traffic; DP-aware routing (each rank an endpoint) versus rank-blind (one endpoint
   per pod, vLLM's in-pod balancer picks the rank) over a load sweep.

    python bench/bench_pd.py                 # both parts (~12 min on 2 cores); JSON + PNG into docs/img/
    python bench/bench_pd.py --part pd --duration 30 --jobs 2
    python bench/bench_pd.py --part wide-ep
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmdctl.bench.load import Stage, poisson_arrivals  # noqa: E402
from llmdctl.bench.metrics import summarize  # noqa: E402
from llmdctl.bench.workloads import WorkloadSpec, generate  # noqa: E402

IMG = ROOT / "docs" / "img"
MODEL, HW = "Qwen3-32B", "H200"
NETWORKS = ["tcp-25g", "rdma-100g", "rdma-200g", "rdma-400g"]
LAYOUTS = ["agg-16xTP1", "agg-4xTP4", "pd-8P1-2D4"]


# ---- A. P/D ----------------------------------------------------------------------------------------------


def pd_config(layout: str, network: str):
    from llmdctl.plan.presets import policy_configs
    from llmdctl.plan.run import pd_router
    from llmdctl.plan.sim import PlanConfig, PoolPlan

    common = dict(hardware=HW, model=MODEL, max_model_len=16384, max_num_seqs=256, max_num_batched_tokens=8192)
    load = policy_configs(16)["load"]
    if layout == "agg-16xTP1":
        return PlanConfig(
            pools=[PoolPlan(name="agg", replicas=16, tp=1, **common)], router=load, network=network, name=layout
        )
    if layout == "agg-4xTP4":
        return PlanConfig(
            pools=[PoolPlan(name="agg", replicas=4, tp=4, **common)], router=load, network=network, name=layout
        )
    if layout == "pd-8P1-2D4":
        pools = [
            PoolPlan(name="prefill", role="prefill", replicas=8, tp=1, **common),
            PoolPlan(name="decode", role="decode", replicas=2, tp=4, **common),
        ]
        return PlanConfig(pools=pools, router=pd_router(16, 256), network=network, name=layout)
    raise ValueError(layout)


def pd_workload(rate: float, duration: float, seed: int):
    arrivals = poisson_arrivals([Stage(rate, duration)], seed=seed)
    reqs = generate(
        WorkloadSpec(
            kind="random", num_requests=len(arrivals), input_len=10_000, input_jitter=0.1, output_len=1000, seed=seed
        )
    )
    return reqs, arrivals


def _row(res, extra: dict[str, Any]) -> dict[str, Any]:
    s = summarize(res.records).to_dict()
    return {
        **extra,
        "requests": s["requests"],
        "ok": s["ok"],
        "ttft_s": s["ttft_s"],
        "itl_s": s["tpot_s"],
        "e2e_s": s["e2e_s"],
        "output_tok_s": s["output_tok_s"],
        "hit_rate": res.hit_rate,
        "sim_s": round(res.sim_s, 2),
        "wall_s": round(res.wall_s, 2),
        "truncated": res.truncated,
    }


def run_pd(job: tuple[str, str, float, float, int]) -> dict[str, Any]:
    from llmdctl.plan.sim import simulate

    layout, network, rate, duration, seed = job
    reqs, arrivals = pd_workload(rate, duration, seed)
    res = simulate(pd_config(layout, network), reqs, arrivals, max_wall_s=900)
    return _row(res, {"layout": layout, "network": network, "rate": rate})


# ---- B. wide EP ------------------------------------------------------------------------------------------


def run_wide_ep(job: tuple[bool, float, float, int]) -> dict[str, Any]:
    import yaml

    from llmdctl.plan.dp import WideEPConfig, simulate_wide_ep

    aware, rate, duration, seed = job
    router = yaml.safe_load((ROOT / "profiles" / "wide-ep.yaml").read_text())["router"]["config"]
    arrivals = poisson_arrivals([Stage(rate, duration)], seed=seed)
    reqs = generate(
        WorkloadSpec(
            kind="shared-prefix",
            num_groups=32,
            prompts_per_group=8,
            system_prompt_len=2000,
            question_len=200,
            output_len=200,
            num_requests=len(arrivals),
            seed=seed,
        )
    )
    cfg = WideEPConfig(
        router=router,
        rank_aware=aware,
        pods=2,
        dp=8,
        tp=1,
        hardware="H200",
        model="DeepSeek-R1",
        network="rdma-400g",
        num_gpu_blocks=4096,
        max_num_seqs=128,
        seed=seed,
    )
    res = simulate_wide_ep(cfg, reqs, arrivals, max_wall_s=900)
    return _row(res, {"routing": "dp-aware" if aware else "rank-blind", "rate": rate})


# ---- output ----------------------------------------------------------------------------------------------


def pct(new: float, base: float) -> str:
    return f"{(new / base - 1) * 100:+.0f}%" if base else "-"


def f3(v: float | None) -> str:
    return f"{v:7.3f}" if isinstance(v, (int, float)) else "      -"


def print_pd(rows: list[dict[str, Any]], rates: list[float], hi: float) -> None:
    print("\nA. P/D vs aggregated, Qwen3-32B on 16 H200, 10k ISL / 1k OSL (random, no reuse), rdma-200g")
    print(
        f"{'rate':>5s} {'layout':12s} {'TTFT p50':>8s} {'mean':>7s} {'ITL p50':>8s} {'mean':>7s} {'E2E p50':>8s} "
        f"{'mean':>7s} {'out tok/s':>9s}"
    )
    for rate in rates:
        for lay in LAYOUTS:
            r = next(x for x in rows if x["rate"] == rate and x["layout"] == lay and x["network"] == "rdma-200g")
            print(
                f"{rate:5.1f} {lay:12s} {f3(r['ttft_s']['p50'])}  {f3(r['ttft_s']['mean'])} {f3(r['itl_s']['p50'])}  "
                f"{f3(r['itl_s']['mean'])} {f3(r['e2e_s']['p50'])}  {f3(r['e2e_s']['mean'])} {r['output_tok_s']:9.0f}"
            )
    pdr = next(x for x in rows if x["rate"] == hi and x["layout"] == "pd-8P1-2D4" and x["network"] == "rdma-200g")
    print(
        f"\nAt {hi:g} req/s, P/D versus aggregated (mean; p50 in brackets)   llm-d (gpt-oss-120b, 16 H200): E2E mean "
        "-59%"
    )
    for lay in LAYOUTS[:2]:
        a = next(x for x in rows if x["rate"] == hi and x["layout"] == lay and x["network"] == "rdma-200g")
        print(
            f"  vs {lay:11s} E2E {pct(pdr['e2e_s']['mean'], a['e2e_s']['mean'])} "
            f"({pct(pdr['e2e_s']['p50'], a['e2e_s']['p50'])})   ITL {pct(pdr['itl_s']['mean'], a['itl_s']['mean'])} "
            f"({pct(pdr['itl_s']['p50'], a['itl_s']['p50'])})   TTFT {pct(pdr['ttft_s']['mean'], a['ttft_s']['mean'])} "
            f"({pct(pdr['ttft_s']['p50'], a['ttft_s']['p50'])})"
        )


def best_aggregated(rows: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    return min(
        (x for x in rows if x["rate"] == rate and x["layout"].startswith("agg") and x["network"] == "rdma-200g"),
        key=lambda x: x["e2e_s"]["mean"],
    )


def print_bandwidth(rows: list[dict[str, Any]], net_rates: list[float]) -> None:
    from sim_gpu.latency import LatencyModel

    dec = {n: LatencyModel.from_names(HW, MODEL, tp=4, network=n) for n in NETWORKS}
    for rate in net_rates:
        best = best_aggregated(rows, rate)
        print(
            f"\nNetwork sweep at {rate:g} req/s: P/D versus the better aggregated layout ({best['layout']}, E2E mean "
            f"{best['e2e_s']['mean']:.2f}s, TTFT mean {best['ttft_s']['mean']:.2f}s)"
        )
        print(
            f"{'network':10s} {'10k-token KV':>12s} {'TTFT mean':>9s} {'ITL mean':>8s} {'E2E mean':>8s} "
            f"{'E2E p50':>8s} {'E2E mean vs agg':>15s}"
        )
        for n in NETWORKS:
            r = next(x for x in rows if x["rate"] == rate and x["layout"] == "pd-8P1-2D4" and x["network"] == n)
            print(
                f"{n:10s} {dec[n].kv_transfer_time(10_000, remote_tp=1) * 1e3:10.0f}ms {f3(r['ttft_s']['mean'])}   "
                f"{f3(r['itl_s']['mean'])}  {f3(r['e2e_s']['mean'])}  {f3(r['e2e_s']['p50'])} "
                f"{pct(r['e2e_s']['mean'], best['e2e_s']['mean']):>15s}"
            )


def print_wide_ep(rows: list[dict[str, Any]], rates: list[float]) -> None:
    print(
        "\nB. Wide EP: DeepSeek-R1, 2 pods x 8 DP ranks (16 H200, EP16, lockstep), shared-prefix 32x8 (2000+200 -> 200)"
    )
    print(
        f"{'rate':>5s} {'routing':11s} {'TTFT p50':>8s} {'mean':>7s} {'ITL p50':>8s} {'E2E p50':>8s} {'out tok/s':>9s} "
        f"{'hit':>5s}   DP-aware vs blind"
    )
    for rate in rates:
        a = next(x for x in rows if x["rate"] == rate and x["routing"] == "dp-aware")
        b = next(x for x in rows if x["rate"] == rate and x["routing"] == "rank-blind")
        for r in (a, b):
            note = (
                f"   tok/s {pct(a['output_tok_s'], b['output_tok_s'])}, TTFT p50 "
                f"{pct(a['ttft_s']['p50'], b['ttft_s']['p50'])}"
                if r is a
                else ""
            )
            print(
                f"{rate:5.0f} {r['routing']:11s} {f3(r['ttft_s']['p50'])}  {f3(r['ttft_s']['mean'])} "
                f"{f3(r['itl_s']['p50'])}  {f3(r['e2e_s']['p50'])} {r['output_tok_s']:9.0f} {r['hit_rate']:5.2f}{note}"
            )
    print("llm-d (DP-aware vs hybrid load balancing): +26% throughput")


def plot_pd(rows: list[dict[str, Any]], rates: list[float], net_rates: list[float]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"agg-16xTP1": "#9e9e9e", "agg-4xTP4": "#555555", "pd-8P1-2D4": "#1f77b4"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, title) in zip(
        axes,
        [
            ("e2e_s", "end-to-end latency (s)"),
            ("itl_s", "inter-token latency (s)"),
            ("ttft_s", "time to first token (s)"),
        ],
    ):
        for lay in LAYOUTS:
            pts = [
                next(x for x in rows if x["rate"] == r and x["layout"] == lay and x["network"] == "rdma-200g")
                for r in rates
            ]
            ax.plot(rates, [p[key]["mean"] for p in pts], "o-", color=colors[lay], label=lay)
        ax.set_title(f"mean {title}")
        ax.set_xlabel("offered load (req/s)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("P/D vs aggregated on the same 16 H200 (Qwen3-32B, 10k in / 1k out, rdma-200g; simulated)")
    fig.tight_layout()
    p1 = IMG / "pd_vs_aggregated.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    labels = ["TCP 25G", "RDMA 100G", "RDMA 200G", "RDMA 400G"]
    for rate, c in zip(net_rates, ["#7fb3e0", "#1f4e79", "#1f77b4", "#0b2a40"]):
        pdr = [
            next(x for x in rows if x["rate"] == rate and x["layout"] == "pd-8P1-2D4" and x["network"] == n)
            for n in NETWORKS
        ]
        best = best_aggregated(rows, rate)
        axes[0].plot(
            labels,
            [(p["e2e_s"]["mean"] / best["e2e_s"]["mean"] - 1) * 100 for p in pdr],
            "o-",
            color=c,
            label=f"{rate:g} req/s vs {best['layout']}",
        )
        axes[1].plot(labels, [p["ttft_s"]["mean"] for p in pdr], "o-", color=c, label=f"P/D, {rate:g} req/s")
        axes[1].axhline(best["ttft_s"]["mean"], color=c, ls="--", lw=1, label=f"{best['layout']}, {rate:g} req/s")
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_title("P/D mean end-to-end latency vs aggregated (%)")
    axes[1].set_title("mean time to first token (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("P/D gain vs network bandwidth (KV of a 10k prompt: TP1 prefill -> TP4 decode; simulated)")
    fig.tight_layout()
    p2 = IMG / "pd_bandwidth.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def plot_wide_ep(rows: list[dict[str, Any]], rates: list[float]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    style = {
        "dp-aware": ("#2ca02c", "DP-aware (rank = endpoint)"),
        "rank-blind": ("#d62728", "rank-blind (pod endpoint + in-pod LB)"),
    }
    for routing, (c, label) in style.items():
        pts = [next(x for x in rows if x["rate"] == r and x["routing"] == routing) for r in rates]
        axes[0].plot(rates, [p["output_tok_s"] for p in pts], "o-", color=c, label=label)
        axes[1].plot(rates, [p["ttft_s"]["p50"] for p in pts], "o-", color=c)
        axes[2].plot(rates, [p["itl_s"]["p50"] for p in pts], "o-", color=c)
    for ax, t in zip(axes, ["output tokens/s", "TTFT p50 (s)", "inter-token latency p50 (s)"]):
        ax.set_title(t)
        ax.set_xlabel("offered load (req/s)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Wide EP: DeepSeek-R1 on 2 pods x 8 DP ranks (16 H200, EP16), shared-prefix traffic (simulated)")
    fig.tight_layout()
    path = IMG / "wide_ep_routing.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    global IMG
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "pd", "wide-ep"], default="all")
    ap.add_argument(
        "--rates", default="2,4,6,8", help="P/D offered loads (req/s); the last is the 'high load' of the summary"
    )
    ap.add_argument("--net-rates", default="4,8", help="P/D loads of the network sweep (each must be among --rates)")
    ap.add_argument("--duration", type=float, default=60.0, help="P/D: seconds of arrivals per run")
    ap.add_argument("--ep-rates", default="20,40,80,120", help="wide EP offered loads (req/s)")
    ap.add_argument("--ep-duration", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(IMG), help="directory for JSON and PNG")
    a = ap.parse_args()
    IMG = Path(a.out)
    IMG.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        if a.part in ("all", "pd"):
            rates = [float(x) for x in a.rates.split(",")]
            hi = rates[-1]
            jobs = [(lay, "rdma-200g", r, a.duration, a.seed) for r in rates for lay in LAYOUTS]
            net_rates = [float(x) for x in a.net_rates.split(",")]
            jobs += [("pd-8P1-2D4", n, r, a.duration, a.seed) for r in net_rates for n in NETWORKS if n != "rdma-200g"]
            rows = list(ex.map(run_pd, jobs))
            doc = {
                "what": "P/D vs aggregated, virtual clock (llmdctl planner)",
                "model": MODEL,
                "hardware": HW,
                "gpus": 16,
                "workload": {
                    "input_len": 10_000,
                    "input_jitter": 0.1,
                    "output_len": 1000,
                    "arrivals": "poisson",
                    "duration_s": a.duration,
                },
                "published": {"llm-d P/D guide, gpt-oss-120b on 16 H200": {"e2e_mean_change": -0.59}},
                "rows": rows,
            }
            (IMG / "pd_bench.json").write_text(json.dumps(doc, indent=1))
            print_pd(rows, rates, hi)
            print_bandwidth(rows, net_rates)
            for p in plot_pd(rows, rates, net_rates):
                print(f"plot: {p}")
        if a.part in ("all", "wide-ep"):
            ep_rates = [float(x) for x in a.ep_rates.split(",")]
            rows = list(
                ex.map(run_wide_ep, [(aware, r, a.ep_duration, a.seed) for r in ep_rates for aware in (True, False)])
            )
            doc = {
                "what": "wide EP: DP-aware vs rank-blind routing, virtual clock",
                "model": "DeepSeek-R1",
                "hardware": "H200",
                "gpus": 16,
                "layout": "2 pods x 8 DP ranks, EP16, lockstep",
                "network": "rdma-400g",
                "workload": {
                    "kind": "shared-prefix",
                    "groups": 32,
                    "prompts_per_group": 8,
                    "system": 2000,
                    "question": 200,
                    "output": 200,
                    "duration_s": a.ep_duration,
                },
                "published": {"llm-d DP-aware vs hybrid LB": {"throughput_change": 0.26}},
                "rows": rows,
            }
            (IMG / "wide_ep_bench.json").write_text(json.dumps(doc, indent=1))
            print_wide_ep(rows, ep_rates)
            print(f"plot: {plot_wide_ep(rows, ep_rates)}")
    print(f"\ntotal wall {time.perf_counter() - t0:.0f}s; JSON in {IMG}")


if __name__ == "__main__":
    main()
