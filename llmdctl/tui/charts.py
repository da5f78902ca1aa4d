"""The charts panel: cluster prefix-cache hit rate, TTFT p50 / p90 and request rate over the last minutes."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline

from llmdctl.tui import fmt
from llmdctl.tui.model import SERIES_LEN, Model

CHARTS = (
    ("hit", "cluster hit rate", "hit_rate"),
    ("p50", "TTFT p50", "ttft_p50"),
    ("p90", "TTFT p90", "ttft_p90"),
    ("rate", "requests/s", "req_rate"),
)


def _values(series: Iterable[float | None]) -> list[float]:
    return [0.0 if v is None else float(v) for v in series]


def _last(series) -> float | None:
    for v in reversed(series):
        if v is not None:
            return v
    return None


def caption(key: str, title: str, value: float | None, source: str = "") -> str:
    if key == "hit":
        text = fmt.pct(value, 1)
    elif key == "rate":
        text = "-" if value is None else f"{value:.1f}"
    else:
        text = fmt.secs(value)
    return f"{title:<17}{text:>9}" + (f"  [dim]{source}[/dim]" if source else "")


class ChartsPanel(Vertical):
    """Four sparklines (5 minutes of 1-s samples each) with their latest value."""

    def compose(self) -> ComposeResult:
        for key, title, _ in CHARTS:
            yield Label(caption(key, title, None), id=f"cap-{key}", classes="chart-caption")
            yield Sparkline([], id=f"spark-{key}", summary_function=max, classes=f"chart chart-{key}")

    def on_mount(self) -> None:
        self.border_title = "Cluster"
        self.border_subtitle = f"last {SERIES_LEN // 60} min"

    def render_model(self, model: Model) -> None:
        for key, title, attr in CHARTS:
            series = getattr(model.series, attr)
            source = model.ttft_source if key in ("p50", "p90") and model.ttft_source not in ("pods", "-") else ""
            self.query_one(f"#cap-{key}", Label).update(caption(key, title, _last(series), source))
            self.query_one(f"#spark-{key}", Sparkline).data = _values(series)
