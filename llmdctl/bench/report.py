"""Rendering results: rich tables (one run, side-by-side comparisons with ratios, plans next to published
figures), JSON files, and PNG plots (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from llmdctl.bench.metrics import HEADLINE, get_path, ratio_key


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def summary_table(title: str, summary: dict[str, Any]) -> Table:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        (
            "requests (ok / errors / shed / timeouts)",
            f"{summary['requests']} ({summary['ok']} / {summary['errors']} / {summary['shed']} / "
            f"{summary['timeouts']})",
        ),
        ("duration (s)", _fmt(summary["duration_s"], 2)),
        ("TTFT p50 / p90 / p99 (s)", " / ".join(_fmt(summary["ttft_s"][k]) for k in ("p50", "p90", "p99"))),
        ("TTFT mean (s)", _fmt(summary["ttft_s"]["mean"])),
        ("TPOT mean / p90 (s)", " / ".join(_fmt(summary["tpot_s"][k], 4) for k in ("mean", "p90"))),
        ("E2E p50 / p90 (s)", " / ".join(_fmt(summary["e2e_s"][k]) for k in ("p50", "p90"))),
        ("output tok/s", _fmt(summary["output_tok_s"], 1)),
        ("requests/s", _fmt(summary["request_s"], 2)),
        (
            f"goodput req/s (TTFT<={summary['slo']['ttft_s']:g}s, TPOT<={summary['slo']['itl_s']:g}s)",
            _fmt(summary["goodput_req_s"], 2),
        ),
        ("SLO attainment", _fmt(summary["slo_attainment"], 3)),
        ("prefix-cache hit rate (pods)", _fmt(summary.get("pod_hit_rate"), 3)),
        ("cached prompt tokens (usage)", _fmt(summary.get("cached_token_fraction"), 3)),
    ]
    for k, v in rows:
        t.add_row(k, v)
    if summary.get("endpoints"):
        t.add_row("requests per pod", ", ".join(f"{k}: {v}" for k, v in summary["endpoints"].items()))
    return t


def compare_table(
    title: str,
    summaries: dict[str, dict[str, Any]],
    ratios: dict[str, dict[str, float | None]] | None = None,
    published: dict[str, dict[str, float]] | None = None,
) -> Table:
    """Runs side by side: each headline metric, then (if given) the factor vs the baseline run and the
    published figure."""
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    names = list(summaries)
    for n in names:
        t.add_column(n, justify="right")
    pub_keys = {"TTFT p90 (s)": "ttft_p90_s", "TTFT mean (s)": "ttft_mean_s", "Output tok/s": "output_tok_s"}
    for label, path, _higher in HEADLINE:
        t.add_row(label, *[_fmt(get_path(summaries[n], path)) for n in names])
        if published and label in pub_keys and any(pub_keys[label] in (published.get(n) or {}) for n in names):
            t.add_row(
                "  published (llm-d)",
                *[_fmt((published.get(n) or {}).get(pub_keys[label])) for n in names],
                style="dim",
            )
    if ratios:
        base = next(iter(ratios))
        for label, _p, _h in HEADLINE:
            vals = [ratios[n].get(ratio_key(label)) for n in names]
            if all(v is None for v in vals):
                continue
            t.add_row(
                f"x vs {base}: {label.split(' (')[0]}",
                *[("-" if v is None else f"{v:.2f}x") for v in vals],
                style="cyan",
            )
    return t


def in_published_form(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The plan's summaries with TTFT p90 / mean and output tok/s replaced by the published row's form (each run's
    `as_published`), for plotting beside published figures; the summaries as they are when there are none."""
    out = {}
    for name, summ in doc["summaries"].items():
        ap = (doc["runs"].get(name) or {}).get("as_published") if doc.get("published") else None
        out[name] = (
            {**summ, "ttft_s": {**summ["ttft_s"], "p90": ap["ttft_p90_s"], "mean": ap["ttft_mean_s"]}}
            | {"output_tok_s": ap["output_tok_s"]}
            if ap
            else summ
        )
    return out


def plan_table(doc: dict[str, Any]) -> Table:
    """A plan's runs and the simulated-to-wall time ratio; llm-d's published figures beside ours only when the
    run is comparable with them (`doc["published"]` non-empty), else the title says it is not."""
    pub = doc.get("published") or {}
    title = f"plan {doc.get('scenario', '')}: times in s, tok/s = output tokens/s, x = simulated/wall time"
    if not pub and doc.get("not_comparable"):
        title += f"\nnot comparable with published figures: {doc['not_comparable']}"
    if pub:
        title += "\nours in the published row's form: main stages; tok/s = mean of the stages' tok/s"
    t = Table(title=title, show_header=True, header_style="bold")
    cols = ["policy", "TTFT p90", "llm-d", "TTFT mean", "llm-d", "tok/s", "llm-d", "hit", "sim s", "wall s", "x"]
    for c in cols if pub else [c for c in cols if c != "llm-d"]:
        t.add_column(
            c, justify="left" if c == "policy" else "right", style="dim" if c == "llm-d" else None, no_wrap=True
        )
    for name, r in doc["runs"].items():
        p = pub.get(name, {})
        q = (r.get("as_published") or r) if pub else r
        ours = [_fmt(q["ttft_p90_s"]), _fmt(q["ttft_mean_s"]), _fmt(q["output_tok_s"], 0)]
        theirs = [_fmt(p.get("ttft_p90_s")), _fmt(p.get("ttft_mean_s")), _fmt(p.get("output_tok_s"), 0)]
        mid = [v for pair in zip(ours, theirs) for v in pair] if pub else ours
        t.add_row(
            name, *mid, _fmt(r["hit_rate"], 2), _fmt(r["sim_s"], 0), _fmt(r["wall_s"], 1), _fmt(r["sim_to_wall"], 1)
        )
    return t


def sweep_table(doc: dict[str, Any], key: str, title: str) -> Table:
    t = Table(title=title, show_header=True, header_style="bold")
    for c in ("configuration", "cost", "TTFT p90 s", "out tok/s", "goodput req/s", "hit rate"):
        t.add_column(c, justify="left" if c == "configuration" else "right")
    for r in doc[key]:
        t.add_row(
            r["name"],
            _fmt(r["cost"], 1),
            _fmt(r["ttft_p90_s"]),
            _fmt(r["output_tok_s"], 1),
            _fmt(r["goodput_req_s"], 2),
            _fmt(r["hit_rate"]),
        )
    return t


def write_json(path: str | Path, doc: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1, default=str))
    return p


def print_table(table: Table, console: Console | None = None) -> None:
    (console or Console()).print(table)


# ---- plots -------------------------------------------------------------------------------------------------


def _save(fig: Any, path: str | Path) -> Path:
    """Write a figure as PNG (creating its folder) and release it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    _plt().close(fig)
    return p


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(fig: Any, title: str, fontsize: float = 10) -> float:
    """A suptitle wrapped to the figure's width (long run descriptions were cut off); returns the top margin
    (figure fraction) tight_layout must leave it."""
    import textwrap

    width_chars = max(20, int(fig.get_figwidth() * 72 / (fontsize * 0.6)))
    text = "\n".join(textwrap.wrap(title, width_chars)) if title else ""
    if text:
        fig.suptitle(text, fontsize=fontsize)
    lines = text.count("\n") + 1 if text else 0
    return 1 - lines * fontsize * 1.5 / 72 / fig.get_figheight()


def _y_scale(ax: Any, values: list[float], label: str) -> None:
    """Linear y unless the values span more than 20x, then log with 1-2-5 ticks labelled in plain numbers (a
    symlog axis once showed two unreadable ticks)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        fmt = ScalarFormatter()
        fmt.set_scientific(False)
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs="auto"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(f"{label}, log scale")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel(label)


def plot_stages(summaries: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """TTFT p90 and output tok/s per stage (offered QPS) for each run: llm-d's report charts. None when the
    runs have no stages (closed loop)."""
    if not any(s.get("stages") for s in summaries.values()):
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    ttfts: list[float] = []
    for name, s in summaries.items():
        st = [x for x in s.get("stages") or [] if x.get("requests")]
        xs = list(range(len(st)))
        ttft = [x.get("ttft_p90_s") or 0 for x in st]
        ttfts += ttft
        a1.plot(xs, ttft, marker="o", label=name)
        a2.plot(xs, [x.get("output_tok_s") or 0 for x in st], marker="o", label=name)
        labels = [f"{x['rate']:g}" for x in st]
    for a in (a1, a2):
        a.set_xticks(range(len(labels)))
        a.set_xticklabels(labels, rotation=45, fontsize=8)
        a.set_xlabel("offered QPS (stage)")
        a.grid(alpha=0.3)
    _y_scale(a1, ttfts, "TTFT p90 (s)")
    a2.set_ylim(bottom=0)
    a2.set_ylabel("output tokens/s")
    a1.legend(fontsize=8)
    top = _title(fig, title)
    fig.tight_layout(rect=(0, 0, 1, top))
    return _save(fig, path)


def plot_bars(
    summaries: dict[str, dict[str, Any]],
    path: str | Path,
    title: str = "",
    published: dict[str, dict[str, float]] | None = None,
    source: str = "measured",
) -> Path:
    """TTFT p90 and output tok/s per run as bars, with published figures as hatched bars. `source` names what
    produced the bars in the legend (e.g. "llmdctl bench, live stack", "llmdctl plan, virtual clock")."""
    plt = _plt()
    names = list(summaries)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = range(len(names))
    w = 0.38 if published else 0.7
    ttft = [get_path(summaries[n], "ttft_s.p90") or 0 for n in names]
    thr = [summaries[n].get("output_tok_s") or 0 for n in names]
    a1.bar([x - (w / 2 if published else 0) for x in xs], ttft, w, label=source)
    a2.bar([x - (w / 2 if published else 0) for x in xs], thr, w, label=source)
    pub_ttft: list[float] = []
    if published:
        pub_ttft = [(published.get(n) or {}).get("ttft_p90_s", 0) for n in names]
        a1.bar([x + w / 2 for x in xs], pub_ttft, w, hatch="//", alpha=0.6, label="llm-d published")
        a2.bar(
            [x + w / 2 for x in xs],
            [(published.get(n) or {}).get("output_tok_s", 0) for n in names],
            w,
            hatch="//",
            alpha=0.6,
            label="llm-d published",
        )
    _y_scale(a1, ttft + pub_ttft, "TTFT p90 (s)")
    a2.set_ylabel("output tokens/s")
    for a in (a1, a2):
        a.set_xticks(list(xs))
        a.set_xticklabels(names, rotation=20 if len(names) > 4 else 0, fontsize=8)
        a.grid(axis="y", alpha=0.3)
    # One legend for both panels, in its own row under the title: inside an axes it covered the bars.
    handles, labels = a1.get_legend_handles_labels()
    top = _title(fig, title)
    row = 8 * 2.2 / 72 / fig.get_figheight()  # one row of 8-pt legend text, as a figure fraction
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, top), ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, top - row))
    return _save(fig, path)


def plot_pareto(doc: dict[str, Any], path: str | Path, metric: str = "ttft_p90_s", title: str = "") -> Path:
    plt = _plt()
    front = doc["pareto_ttft_p90" if metric == "ttft_p90_s" else "pareto_throughput"]
    # Front points are numbered on the plot and named in a key below it: full configuration names written
    # next to the points ran into each other and off the figure.
    key_h = 0.16 * len(front)
    fig, ax = plt.subplots(figsize=(7.5, 4.0 + key_h))
    rows = doc["rows"]
    label = {"ttft_p90_s": "TTFT p90 (s)", "output_tok_s": "output tokens/s"}.get(metric, metric)
    ax.scatter([r["cost"] for r in rows], [r.get(metric) or 0 for r in rows], alpha=0.5, label="configurations")
    ax.plot([r["cost"] for r in front], [r.get(metric) or 0 for r in front], "r-o", label="Pareto front")
    for i, r in enumerate(front, 1):
        ax.annotate(str(i), (r["cost"], r.get(metric) or 0), xytext=(4, 5), textcoords="offset points", fontsize=8)
    key = "\n".join(f"{i}: {r['name']}" for i, r in enumerate(front, 1))
    fig.text(0.02, 0.01, key, fontsize=7, va="bottom", ha="left", family="monospace")
    ax.set_xlabel("cost (GPUs x price per GPU-hour, or GPUs)")
    _y_scale(ax, [r.get(metric) or 0 for r in rows], label)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    top = _title(fig, title, 9)
    fig.tight_layout(rect=(0, (key_h + 0.1) / fig.get_figheight(), 1, top))
    return _save(fig, path)


def plot_epd(doc: dict[str, Any], path: str | Path) -> Path:
    """`llmdctl plan epd`: TTFT p90, E2E mean and goodput against the offered rate, one line per deployment."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    by: dict[str, list[dict[str, Any]]] = {}
    for r in doc["rows"]:
        by.setdefault(r["deployment"], []).append(r)
    ttfts: list[float] = []
    for name, rows in by.items():
        xs = [r["rate"] for r in rows]
        ttft = [r["ttft_p90_s"] or 0 for r in rows]
        ttfts += ttft
        axes[0].plot(xs, ttft, marker="o", label=f"{name} {rows[0]['layout']}")
        axes[1].plot(xs, [r["e2e_mean_s"] or 0 for r in rows], marker="o", label=name)
        axes[2].plot(xs, [r["goodput_req_s"] or 0 for r in rows], marker="o", label=name)
    slo = doc.get("slo") or {}
    axes[1].set_ylabel("E2E mean (s)")
    axes[2].set_ylabel("goodput (req/s)")
    axes[2].set_title(f"SLO: TTFT <= {slo.get('ttft_s', 0):g} s, TPOT <= {slo.get('itl_s', 0):g} s", fontsize=9)
    for a in axes:
        a.set_xlabel("offered req/s")
        a.grid(alpha=0.3)
    _y_scale(axes[0], ttfts, "TTFT p90 (s)")
    axes[1].set_ylim(bottom=0)
    axes[2].set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    top = _title(fig, f"llmdctl plan {doc['scenario']}: {doc['description']}", 9)
    fig.tight_layout(rect=(0, 0, 1, top))
    return _save(fig, path)
