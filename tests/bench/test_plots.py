"""Plots read at a glance: linear or log axes with labelled ticks inside the data, titles that fit, legends that
name what ran; piped `plan` tables are not cut to 80 columns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from llmdctl.bench import report  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _labelled_ticks(ax) -> list[float]:
    lo, hi = ax.get_ylim()
    return [t for t in ax.get_yticks() if lo <= t <= hi]


def test_ttft_axis_is_linear_for_a_narrow_range_and_log_with_labelled_ticks_for_a_wide_one():
    fig, (narrow, wide) = plt.subplots(1, 2)
    values = [0.03, 0.2, 3.0]
    narrow.plot([0, 1], [0.035, 0.049])
    report._y_scale(narrow, [0.035, 0.049], "TTFT p90 (s)")
    wide.plot([0, 1, 2], values)
    report._y_scale(wide, values, "TTFT p90 (s)")
    fig.canvas.draw()
    assert narrow.get_yscale() == "linear" and narrow.get_ylim()[0] == 0
    assert wide.get_yscale() == "log" and "log scale" in wide.get_ylabel()
    ticks = _labelled_ticks(wide)
    assert len(ticks) >= 4, ticks  # 1-2-5 ticks, not two decades
    labels = [t.get_text() for t in wide.get_yticklabels() if t.get_text()]
    assert labels and not any("10^" in s or "$" in s for s in labels), labels  # plain numbers
    plt.close(fig)


def test_long_title_wraps_inside_the_figure_and_the_legend_names_the_source(tmp_path: Path):
    summaries = {name: {"ttft_s": {"p90": v}, "output_tok_s": 100 * v} for name, v in (("load", 0.5), ("precise", 0.1))}
    title = "4 pods Llama-3.1-8B on 1xH100 with a small KV cache, " * 4
    captured = {}
    orig = report._save

    def keep(fig, path):
        fig.canvas.draw()
        captured["fig"] = fig
        captured["title"] = fig._suptitle.get_window_extent()
        captured["width"] = fig.bbox.width
        legend = fig.legends[0]
        captured["legend"] = [t.get_text() for t in legend.get_texts()]
        captured["legend_box"] = legend.get_window_extent()
        captured["axes_top"] = max(a.get_window_extent().y1 for a in fig.axes)
        return orig(fig, path)

    report._save = keep
    try:
        report.plot_bars(summaries, tmp_path / "bars.png", title=title, source="llmdctl bench, live")
    finally:
        report._save = orig
    box = captured["title"]
    assert box.x0 >= 0 and box.x1 <= captured["width"]
    assert captured["legend"] == ["llmdctl bench, live"]
    legend = captured["legend_box"]  # between the title and the panels: it covers no bar
    assert box.y0 >= legend.y1 - 1 and legend.y0 >= captured["axes_top"] - 1, (box, legend, captured["axes_top"])
    assert (tmp_path / "bars.png").stat().st_size > 0


def test_piped_plan_tables_are_not_cut_to_80_columns():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(REPO), "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, "-m", "llmdctl", "plan", "small", "--policies", "precise", "--replicas", "2,4"]
        + ["--time-scale", "0.1"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) > 80 and not any("…" in line for line in lines), out.stdout
