"""Redraw the docs' benchmark PNGs from the JSON the runs saved, with the current plotting code.

Only plots: no benchmark runs again, so the figures match the tables the docs quote. Each entry names the
PNG, the JSON it is drawn from and the script whose plotting function draws it (the same one a fresh run
uses). The planner demos' JSON is `llmdctl demo NAME --out DIR`'s NAME.json, kept as docs/img/demo-NAME.json;
the live kv-cache-wins run kept none: docs/img/kv-cache-wins-live.json holds the figures its docs table quotes
(no per-stage data, so kv-cache-wins-live-stages.png is not redrawn here).

    python bench/replot_docs.py              # every PNG below, into docs/img
    python bench/replot_docs.py --out /tmp/x # somewhere else (to compare)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

IMG = ROOT / "docs" / "img"
RESULTS = ROOT / "bench" / "results"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def plan(out: Path) -> list[Path]:
    """plan-llmd-73-x0.1(.png, -stages.png): bench_plan.py --from-json."""
    from llmdctl.bench import report

    doc = _load(IMG / "plan-llmd-73-x0.1.json")
    scale = doc.get("time_scale", 0.1)
    title = f"{doc['scenario']} (ladder x{scale:g})"
    return [
        report.plot_bars(
            doc["summaries"],
            out / f"plan-{doc['scenario']}-x{scale:g}.png",
            title=title,
            published=doc.get("published_reference"),
            source="llmdctl plan, virtual clock",
        ),
        report.plot_stages(doc["summaries"], out / f"plan-{doc['scenario']}-x{scale:g}-stages.png", title=title),
    ]


def pd(out: Path) -> list[Path]:
    """pd_vs_aggregated.png, pd_bandwidth.png, wide_ep_routing.png: bench_pd.py's plots."""
    import bench_pd

    bench_pd.IMG = out  # its plots write next to its JSON
    rows = _load(IMG / "pd_bench.json")["rows"]
    rates = sorted({r["rate"] for r in rows if r["network"] == "rdma-200g"})  # the load sweep
    nets = sorted({r["rate"] for r in rows if r["network"] == "tcp-25g"})  # the loads of the network sweep
    paths = list(bench_pd.plot_pd(rows, rates, nets))
    ep = _load(IMG / "wide_ep_bench.json")["rows"]
    paths.append(bench_pd.plot_wide_ep(ep, sorted({r["rate"] for r in ep})))
    return paths


def kvtiers(out: Path) -> list[Path]:
    """kvtiers_a_working_set.png, kvtiers_b_agentic.png, kvtiers_c_fs_throughput.png: bench_kvtiers.py's plot."""
    import bench_kvtiers

    bench_kvtiers.IMG = out
    return [Path(p) for p in bench_kvtiers.plot(_load(IMG / "kvtiers_bench.json"))]


def routing_real(out: Path) -> list[Path]:
    """routing-real.png (seeds 0-2), routing-real-pooled.png (seeds 0-5), routing-real-nofix.png (before the fix)."""
    import bench_routing_real

    sources = {
        "routing-real.png": ["routing_real_v3_seeds0-2.json"],
        "routing-real-pooled.png": ["routing_real_v3_seeds0-2.json", "routing_real_v3_seeds3-5.json"],
        "routing-real-nofix.png": ["routing_real_nofix_pooled.json"],
    }
    paths = []
    with tempfile.TemporaryDirectory() as tmp:  # the pooled JSON it also writes is not ours to change
        for png, files in sources.items():
            bench_routing_real.report_only([RESULTS / f for f in files], Path(tmp) / "pooled.json", out / png)
            paths.append(out / png)
    return paths


def demos(out: Path) -> list[Path]:
    """demo-pd.png, demo-wide-ep.png, demo-kv-offload.png: the planner demos' bars (llmdctl.demos.catalog)."""
    from llmdctl.bench import report

    paths = []
    for name in ("pd", "wide-ep", "kv-offload"):
        doc = _load(IMG / f"demo-{name}.json")
        png = out / f"demo-{name}.png"
        paths.append(report.plot_bars(doc["summaries"], png, title=doc["title"], source="llmdctl plan, virtual clock"))
    return paths


def kv_wins_live(out: Path) -> list[Path]:
    """kv-cache-wins-live.png: the live demo's bars, from the figures the docs' table quotes."""
    from llmdctl.bench import report

    doc = _load(IMG / "kv-cache-wins-live.json")
    png = out / "kv-cache-wins-live.png"
    return [report.plot_bars(doc["summaries"], png, title=doc["title"], source="live stack, simulated pods")]


def sweep(out: Path) -> list[Path]:
    """plan-sweep-pareto-ttft.png: docs/benchmarks.md's `llmdctl plan small --replicas 2,4,8 ...` sweep."""
    from llmdctl.bench import report

    doc = _load(IMG / "plan-sweep-small.json")
    return [report.plot_pareto(doc, out / "plan-sweep-pareto-ttft.png", "ttft_p90_s", "small")]


PARTS = {
    "plan": plan,
    "demos": demos,
    "sweep": sweep,
    "kv-wins-live": kv_wins_live,
    "pd": pd,
    "kvtiers": kvtiers,
    "routing-real": routing_real,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=IMG)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name in a.parts.split(","):
        if name not in PARTS:
            ap.error(f"--parts: expected a subset of {','.join(PARTS)}, got {name!r}")
        for p in PARTS[name](a.out):
            print(f"plot: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
