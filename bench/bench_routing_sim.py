"""Sim twin of bench_routing_real.py: the same scenarios on simulated pods, side by side with the real figures.

    python bench/bench_routing_sim.py [--real bench/results/routing_real.json] [--seeds 0,1,2]
        [--hardware FITTED.yaml --model-profile SMALL.yaml] [--tokenizer MODEL_DIR]
        [--out bench/results/routing_sim.json]

Same workload generator, seeds, arrivals and request count as the real benchmark (its `Scenario` objects and
the runner's `plan_requests`), the same 2 pods (KV 128 blocks x 32 tokens, max_num_seqs 32), the router_lite
profiles' own router configs (the precise scorer told the pods' 32-token blocks, as `llmdctl up` does), run by
the offline planner (`llmdctl.plan.sim`: the real Scheduler and sim_gpu engines on a virtual clock).

Prompts: the real benchmark sends text (one word per generated token id) that vLLM tokenizes into ~6.4 tokens
a word; the twin tokenizes the same text with the model's own tokenizer (--tokenizer, default the bench's
`small` model), so prompt lengths and shared prefixes are the real ones. Timing: the shipped `cpu` profile,
fitted on recorded real vLLM traces (docs/simulator-accuracy.md), or another (--hardware, --model-profile).

vllm-router cannot run on the simulator, so the side-by-side ratios are against router_lite `round-robin`,
which both benchmarks run: a reader sees whether the simulator ranks the profiles the way the real pods do.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_routing_real import SCENARIOS, Scenario, _f, _ms  # noqa: E402

from llmdctl.bench.metrics import SLO, summarize  # noqa: E402
from llmdctl.bench.runner import BenchConfig, plan_requests  # noqa: E402
from llmdctl.bench.workloads import as_text  # noqa: E402
from llmdctl.plan.presets import profile_router  # noqa: E402
from llmdctl.plan.sim import PlanConfig, PoolPlan, simulate  # noqa: E402

ROUTERS = "precise-prefix-cache,inference-scheduling,predicted-latency,round-robin"
BASE = "round-robin"
RESULTS = REPO / "bench" / "results"
DEFAULT_HW = "cpu"  # the shipped profile, fitted on recorded real traces (docs/simulator-accuracy.md)
DEFAULT_MODEL = RESULTS / "routing_sim_small-calibrated.yaml"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def requests_for(scen: Scenario, seed: int, encode) -> tuple[list, list]:
    """The real benchmark's requests and arrivals for (scenario, seed), prompts as the pods' token ids."""
    cfg = BenchConfig(workload=scen.workload(seed), load=scen.load(seed), mode="text")
    reqs, arrivals = plan_requests(cfg)
    cache: dict[tuple[int, ...], list[int]] = {}
    out = []
    for r in reqs:
        key = tuple(r.prompt)
        ids = cache.get(key)
        if ids is None:
            ids = cache[key] = encode(as_text(r.prompt))
        out.append(dataclasses.replace(r, prompt=ids))
    return out, arrivals


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(args.tokenizer) / "tokenizer.json"))

    def encode(text: str) -> list[int]:
        return tok.encode(text).ids

    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    pool = PoolPlan(
        name="pod",
        replicas=2,
        hardware=str(args.hardware),
        model=str(args.model_profile),
        block_size=32,
        num_gpu_blocks=args.num_gpu_blocks,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=4096,
        max_model_len=2048,
    )
    runs = []
    t0 = time.monotonic()
    for sc in scenarios:
        scen = SCENARIOS[sc]
        for seed in seeds:
            reqs, arrivals = requests_for(scen, seed, encode)
            for rt in routers:
                cfg = PlanConfig(pools=[pool], router=profile_router(rt, 32), name=rt, seed=seed)
                res = simulate(cfg, reqs, arrivals, max_wall_s=300.0, max_sim_s=600.0)
                s = summarize(res.records, SLO(ttft_s=1.0, itl_s=0.2), pod_hit_rate=res.hit_rate).to_dict()
                split: dict[str, int] = {}
                for r in res.records:
                    split[str(r.endpoint)] = split.get(str(r.endpoint), 0) + 1
                runs.append(
                    {
                        "router": rt,
                        "scenario": sc,
                        "seed": seed,
                        "requests": s["requests"],
                        "ok": s["ok"],
                        "hit_rate": res.hit_rate,
                        "ttft_mean": s["ttft_s"]["mean"],
                        "ttft_p50": s["ttft_s"]["p50"],
                        "ttft_p90": s["ttft_s"]["p90"],
                        "e2e_mean": s["e2e_s"]["mean"],
                        "per_pod_requests": split,
                        "prompt_tokens_mean": statistics.mean(len(r.prompt) for r in reqs),
                        "wall_s": round(res.wall_s, 2),
                    }
                )
                say(
                    f"{sc} seed {seed} {rt}: hit {_f(res.hit_rate, 3)} TTFT mean {_ms(s['ttft_s']['mean'])} ms p90 "
                    f"{_ms(s['ttft_s']['p90'])} ms"
                    f"  split {split}  ({res.wall_s:.1f}s wall)"
                )
    return {
        "hardware": str(args.hardware),
        "model_profile": str(args.model_profile),
        "num_gpu_blocks": args.num_gpu_blocks,
        "seeds": seeds,
        "scenarios": scenarios,
        "routers": routers,
        "runs": runs,
        "total_seconds": round(time.monotonic() - t0, 1),
    }


def table(runs: list[dict[str, Any]], sc: str, routers: list[str]) -> dict[str, dict[str, float | None]]:
    """Per router: median over seeds of hit rate, TTFT mean and p90; ratios vs round-robin."""
    rows: dict[str, dict[str, float | None]] = {}
    for rt in routers:
        mine = [r for r in runs if r["scenario"] == sc and r["router"] == rt]
        if mine:
            rows[rt] = {
                k: statistics.median(r[k] for r in mine if r[k] is not None)
                for k in ("hit_rate", "ttft_mean", "ttft_p90")
            }
    base = rows.get(BASE)
    for row in rows.values():
        row["mean_vs_rr"] = row["ttft_mean"] / base["ttft_mean"] if base else None
        row["p90_vs_rr"] = row["ttft_p90"] / base["ttft_p90"] if base else None
    return rows


def side_by_side(sim: dict[str, Any], real: dict[str, Any] | None) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    out: dict[str, Any] = {}
    for sc in sim["scenarios"]:
        srows = table(sim["runs"], sc, sim["routers"])
        rrows = table([r for r in real["runs"] if r["seed"] in sim["seeds"]], sc, sim["routers"]) if real else {}
        t = Table(
            title=(
                f"{sc}: simulated vs real, median over seeds {','.join(map(str, sim['seeds']))} (ratios vs "
                "router_lite round-robin)"
            )
        )
        for col in (
            "router_lite profile",
            "hit sim",
            "hit real",
            "TTFT mean sim ms",
            "TTFT mean real ms",
            "mean/rr sim",
            "mean/rr real",
            "TTFT p90 sim ms",
            "TTFT p90 real ms",
            "p90/rr sim",
            "p90/rr real",
        ):
            t.add_column(col, justify="left" if col.startswith("router") else "right")
        for rt, s in srows.items():
            r = rrows.get(rt, {})
            t.add_row(
                rt,
                _f(s["hit_rate"], 3),
                _f(r.get("hit_rate"), 3),
                _ms(s["ttft_mean"]),
                _ms(r.get("ttft_mean")),
                _f(s["mean_vs_rr"], 2),
                _f(r.get("mean_vs_rr"), 2),
                _ms(s["ttft_p90"]),
                _ms(r.get("ttft_p90")),
                _f(s["p90_vs_rr"], 2),
                _f(r.get("p90_vs_rr"), 2),
            )
        con.print(t)
        win = {
            k: (min(rows, key=lambda x: rows[x][k]) if rows else None)
            for k in ("ttft_mean", "ttft_p90")
            for rows in [srows]
        }
        rwin = {k: (min(rrows, key=lambda x: rrows[x][k]) if rrows else None) for k in ("ttft_mean", "ttft_p90")}
        con.print(
            f"{sc}: lowest TTFT mean: sim {win['ttft_mean']}, real {rwin['ttft_mean']}; lowest TTFT p90: sim "
            f"{win['ttft_p90']}, real {rwin['ttft_p90']}"
        )
        out[sc] = {"sim": srows, "real": rrows, "winner_sim": win, "winner_real": rwin}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scenarios", default="light,kv-pressure")
    ap.add_argument("--routers", default=ROUTERS, help="router_lite profile names")
    ap.add_argument(
        "--hardware", default=DEFAULT_HW, help="sim_gpu hardware profile name or YAML (e.g. from `sim calibrate`)"
    )
    ap.add_argument("--model-profile", default=str(DEFAULT_MODEL), help="sim_gpu model YAML of the bench's model")
    ap.add_argument(
        "--tokenizer", default="/tmp/llmdctl-bench-routing/small-model", help="model directory with tokenizer.json"
    )
    ap.add_argument("--num-gpu-blocks", type=int, default=128)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument(
        "--real", default=str(RESULTS / "routing_real.json"), help="real-benchmark JSON to print beside (none: skip)"
    )
    ap.add_argument("--out", default=str(RESULTS / "routing_sim.json"))
    args = ap.parse_args()
    for s in args.scenarios.split(","):
        if s not in SCENARIOS:
            ap.error(f"--scenarios: unknown {s!r}; expected {', '.join(SCENARIOS)}")
    for flag, path in (
        ("--hardware", args.hardware),
        ("--model-profile", args.model_profile),
        ("--tokenizer", Path(args.tokenizer) / "tokenizer.json"),
    ):
        if str(path).endswith((".yaml", ".json")) and not Path(path).exists():  # else a shipped profile name
            ap.error(
                f"{flag}: {path} does not exist (run `llmdctl sim calibrate` against a pod, or build the model: see "
                "the docstring)"
            )
    doc = run(args)
    real = json.loads(Path(args.real).read_text()) if args.real and Path(args.real).exists() else None
    doc["side_by_side"] = side_by_side(doc, real)
    doc["real_source"] = args.real if real else None
    Path(args.out).write_text(json.dumps(doc, indent=1))
    say(f"wrote {args.out} in {doc['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
