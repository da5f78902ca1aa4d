"""The decision feed: one row per routing decision, newest first; select a row for the full decision."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Group
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from llmdctl.tui.model import FeedRow, Model, short_scorer

COLUMNS = (
    ("time", 8),
    ("request", 20),
    ("tokens", 6),
    ("pod", 24),
    ("prefix blk (alt)", 16),
    ("scores (weighted)", 0),
    ("sched", 9),
)
ABBREV = {
    "precise-prefix-cache": "prefix*",
    "prefix-cache": "prefix",
    "kv-cache-utilization": "kv",
    "queue": "queue",
    "active-request": "active",
    "load-aware": "load",
    "session-affinity": "session",
    "no-hit-lru": "nohit",
    "lora-affinity": "lora",
    "running-requests": "running",
    "estimated-ttft": "ttft",
    "token-load": "tokens",
    "latency": "latency",
}
_PLAIN = Style()
_BOLD = Style(bold=True)
_DIM = Style(dim=True)
_STYLES = {
    "green": Style(color="green"),
    "red": Style(color="red", bold=True),
    "dim": _DIM,
    "magenta": Style(color="magenta"),
    "bold": _BOLD,
    "": _PLAIN,
}
_HEADER = Style(bold=True, color="bright_white")
_ZEBRA = Style(bgcolor="grey11")
_CURSOR = Style(bgcolor="dodger_blue3", color="white", bold=True)
_CURSOR_BLUR = Style(bgcolor="grey27")


def abbrev(scorer: str) -> str:
    s = short_scorer(scorer)
    return ABBREV.get(s, s.split("-")[0])


def pods_cell(row: FeedRow, model: Model) -> list[tuple[str, str]]:
    served = model.pod_name(row.served_by)
    if row.prefill:
        return [(f"P {model.pod_name(row.prefill)} ", "magenta"), (f"→ D {served}", "bold")]
    out = [(served, "bold")]
    if row.status is not None and row.status != 200:
        out.append((f" {row.status}", "red"))
    return out


def prefix_cell(row: FeedRow) -> list[tuple[str, str]]:
    """Blocks matched on the chosen pod vs the best other pod: red when routing left a better match behind."""
    if row.matched is None:
        return [("-", "dim")]
    alt = row.best_alt
    style = "dim" if row.matched == 0 and not alt else "red" if alt is not None and alt > row.matched else "green"
    return [(f"{row.matched}" + (f" ({alt})" if alt is not None else ""), style)]


def scores_text(row: FeedRow) -> str:
    if not row.scores:
        return "(no scorers)"
    return " ".join(f"{abbrev(n)} {v:.2f}" for n, v in row.scores)


def feed_cells(row: FeedRow, model: Model) -> list[list[tuple[str, str]]]:
    """The row's columns, each a list of (text, style name) runs."""
    return [
        [(time.strftime("%H:%M:%S", time.localtime(row.ts)), "")],
        [(row.request_id[-20:], "")],
        [(str(row.prompt_tokens), "")],
        pods_cell(row, model),
        prefix_cell(row),
        [(scores_text(row), "")],
        [(f"{row.scheduling_ms:.2f} ms", "")],
    ]


def _widths(total: int) -> list[int]:
    fixed = sum(w + 1 for _, w in COLUMNS if w) + 1
    return [w or max(12, total - fixed - 1) for _, w in COLUMNS]


def _strip(cells: list[list[tuple[str, str]]], widths: list[int]) -> Strip:
    """One line: each column padded or cut to its width, one space between columns."""
    segs = [Segment(" ")]
    for runs, w in zip(cells, widths):
        used = 0
        for text, style in runs:
            if used >= w:
                break
            part = text[: w - used]
            segs.append(Segment(part, _STYLES.get(style, _PLAIN)))
            used += len(part)
        segs.append(Segment(" " * (w - used + 1)))
    return Strip(segs)


class FeedPanel(Widget, can_focus=True):
    """The newest decisions, newest first, drawn line by line (Textual's line API).

    Each decision's line is built once and cached, and a render touches only the visible lines, so the feed
    costs the same at 5 or 500 decisions per second. The cursor row stays on the decision it is on while
    newer ones arrive; on the top row it follows the newest. Enter opens the selected decision.
    """

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor(-10)", show=False),
        Binding("pagedown", "cursor(10)", show=False),
        Binding("home", "top", "Newest", show=False),
        Binding("enter", "select", "Details", show=False),
    ]

    class Selected(Message):
        """Enter on a feed row."""

        def __init__(self, row: FeedRow) -> None:
            super().__init__()
            self.row = row

    def __init__(self, limit: int = 200, **kw) -> None:
        super().__init__(**kw)
        self.limit = limit
        self._rows: list[FeedRow] = []
        self._cursor = 0
        self._held: FeedRow | None = None  # the row the cursor is on when it is not following the top
        self._lines: dict[int, tuple[FeedRow, Strip]] = {}
        self._model: Model | None = None
        self._width = 0
        self._names: tuple[str, ...] = ()

    def on_mount(self) -> None:
        self.border_title = "Decisions"

    # -- data -------------------------------------------------------------------------------------------
    def render_model(self, model: Model, pod: str | None = None) -> None:
        self._model = model
        names = tuple(p.label for p in model.pods.values())
        if names != self._names:  # pod names arrived or changed: rows show names, rebuild their lines
            self._names = names
            self._lines.clear()
            self.refresh()
        rows = model.rows(pod, self.limit)
        if len(rows) == len(self._rows) and all(a is b for a, b in zip(rows, self._rows)):
            return
        self._rows = rows
        if self._held is not None and any(r is self._held for r in rows):
            self._cursor = next(i for i, r in enumerate(rows) if r is self._held)
        else:
            self._held = None
            self._cursor = 0
        alive = {id(r) for r in rows}
        if len(self._lines) > 2 * self.limit:
            self._lines = {k: v for k, v in self._lines.items() if k in alive}
        self.refresh()

    @property
    def shown(self) -> list[FeedRow]:
        return list(self._rows)

    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def cursor_row(self) -> int:
        return self._cursor

    def selected(self) -> FeedRow | None:
        return self._rows[self._cursor] if 0 <= self._cursor < len(self._rows) else None

    def move_cursor(self, row: int) -> None:
        if not self._rows:
            return
        self._cursor = max(0, min(row, len(self._rows) - 1))
        self._held = self._rows[self._cursor] if self._cursor > 0 else None
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self._cursor + delta)

    def action_top(self) -> None:
        self.move_cursor(0)

    def action_select(self) -> None:
        row = self.selected()
        if row is not None:
            self.post_message(self.Selected(row))

    # -- drawing ----------------------------------------------------------------------------------------
    def _line(self, row: FeedRow, widths: list[int]) -> Strip:
        cached = self._lines.get(id(row))
        if cached is not None and cached[0] is row:
            return cached[1]
        assert self._model is not None
        strip = _strip(feed_cells(row, self._model), widths)
        self._lines[id(row)] = (row, strip)
        return strip

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if width != self._width:
            self._width = width
            self._lines.clear()
        widths = _widths(width)
        if y == 0:
            return (
                _strip([[(name, "")] for name, _ in COLUMNS], widths)
                .apply_style(_HEADER)
                .crop_extend(0, width, _HEADER)
            )
        height = self.size.height
        first = max(0, self._cursor - (height - 2)) if height > 1 else 0  # keep the cursor on screen
        i = first + y - 1
        if i >= len(self._rows):
            return Strip.blank(width)
        strip = self._line(self._rows[i], widths)
        if i == self._cursor:
            style = _CURSOR if self.has_focus else _CURSOR_BLUR
            return strip.crop_extend(0, width, style).apply_style(style)
        if i % 2:
            return strip.crop_extend(0, width, _ZEBRA).apply_style(_ZEBRA)
        return strip.crop_extend(0, width, None)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


# ---- the detail view -------------------------------------------------------------------------------------


def _weight(raw: float, weighted: float) -> float | None:
    r = min(1.0, max(0.0, raw))
    return weighted / r if r > 0 else None


def decision_detail(row: FeedRow, model: Model) -> Group:
    """Everything about one decision: summary, then each profile's candidates side by side."""
    d: dict[str, Any] = row.raw
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold cyan")
    head.add_column()
    head.add_row("request", row.request_id)
    head.add_row(
        "time", time.strftime("%H:%M:%S", time.localtime(row.ts)) + f"  ·  scheduling {row.scheduling_ms:.3f} ms"
    )
    head.add_row(
        "model",
        f"{d.get('model')}"
        + (f" → {d.get('target_model')}" if d.get("target_model") not in (None, d.get("model")) else ""),
    )
    head.add_row("prompt", f"{row.prompt_tokens} tokens  ·  priority {d.get('priority', 0)}")
    chosen = d.get("chosen") or {}
    head.add_row(
        "chosen",
        f"decode {model.pod_name(chosen.get('decode'))}"
        + (f"  ·  prefill {model.pod_name(chosen.get('prefill'))}" if chosen.get("prefill") else "")
        + (f"  ·  encode {model.pod_name(chosen.get('encode'))}" if chosen.get("encode") else ""),
    )
    head.add_row(
        "served by",
        f"{model.pod_name(row.served_by)}  ·  HTTP {row.status}"
        + (f"  ·  {d.get('retries')} retries" if d.get("retries") else ""),
    )
    if row.matched is not None:
        head.add_row(
            "prefix",
            f"{row.matched} blocks on the chosen pod; best other: {row.best_alt} on "
            f"{model.pod_name(row.best_alt_endpoint)}",
        )
    if d.get("pd"):
        head.add_row("P/D", json.dumps(d["pd"]))
    if d.get("epd"):
        head.add_row("E/P/D", json.dumps(d["epd"]))
    if d.get("lora"):
        head.add_row("LoRA", str(d["lora"]))
    if row.reason:
        head.add_row("reason", row.reason)
    attempts = d.get("attempts") or []
    if len(attempts) > 1:
        head.add_row(
            "attempts", ", ".join(f"{model.pod_name(a.get('endpoint'))}: {a.get('outcome')}" for a in attempts)
        )
    for name, err in model.prediction_errors().items():
        if (err["ttft"] or {}).get("n"):
            head.add_row(
                "prediction error",
                f"{name}: TTFT {_err_cell(err['ttft'])}  ·  TPOT {_err_cell(err['tpot'])}  (|pred-actual|/actual after "
                "warm-up)",
            )
    parts: list[Any] = [head]
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for c in d.get("candidates") or []:
        by_profile.setdefault(str(c.get("profile", "default")), []).append(c)
    for profile, cands in by_profile.items():
        picked = {chosen.get("decode"), chosen.get("prefill"), row.served_by}
        t = Table(
            title=f"profile {profile}: {len(cands)} candidates", title_justify="left", show_lines=False, expand=False
        )
        t.add_column("", style="bold")
        for c in cands:
            ep = c.get("endpoint")
            mark = " ✔" if ep in picked else ""
            t.add_column(f"{model.pod_name(ep)}{mark}", justify="right", style="bold green" if mark else None)
        scorers: list[str] = []
        for c in cands:
            for s in c.get("scores") or {}:
                if s not in scorers:
                    scorers.append(s)
        for s in scorers:
            cells = []
            weight = None
            for c in cands:
                sc = (c.get("scores") or {}).get(s) or {}
                raw, wtd = float(sc.get("raw", 0.0)), float(sc.get("weighted", 0.0))
                weight = weight or _weight(raw, wtd)
                cells.append(f"{raw:.2f} → {wtd:.2f}")
            t.add_row(f"{short_scorer(s)}" + (f" ×{weight:g}" if weight else ""), *cells)
        t.add_row("total", *(Text(f"{c.get('total', 0.0):.3f}", style="bold") for c in cands))
        t.add_row("prefix blocks", *(str(c.get("prefix_match_blocks", 0)) for c in cands))
        if any("inflight" in c for c in cands):  # the router's own load when it decided
            t.add_row("in flight req/tok", *(_inflight_cell(c.get("inflight")) for c in cands))
        if any("predicted" in c for c in cands):
            t.add_row("predicted TTFT", *(_predicted_cell(c.get("predicted")) for c in cands))
            outcome = model.prediction_outcome(str(d.get("request_id")))
            if outcome is not None:  # what really happened on the pod that served it
                t.add_row(
                    "actual TTFT / TPOT",
                    *(_actual_cell(outcome) if c.get("endpoint") == outcome.get("endpoint") else "" for c in cands),
                )
        t.add_row("role", *(str(c.get("role", "")) for c in cands))
        parts.append(Text(""))
        parts.append(t)
    if not by_profile:
        parts.append(Text("\nno candidates (no healthy endpoint)", style="red"))
    return Group(*parts)


class DecisionScreen(ModalScreen[None]):
    """One decision in full; escape (or enter, or q) closes it."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, row: FeedRow, model: Model) -> None:
        super().__init__()
        self.row = row
        self.model = model

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(decision_detail(self.row, self.model), id="detail-body")

    def on_mount(self) -> None:
        self.query_one("#detail").border_title = f"Decision {self.row.request_id}"
        self.query_one("#detail").border_subtitle = "escape to close"

    def action_close(self) -> None:
        self.dismiss(None)


def _inflight_cell(load: dict | None) -> str:
    """`requests / uncached prompt tokens` the router had in flight on the pod when it decided."""
    return "" if not load else f"{load.get('requests', 0)} / {load.get('tokens', 0)}"


def _actual_cell(outcome: dict) -> str:
    ttft, tpot = outcome.get("ttft_ms"), outcome.get("tpot_ms")
    return ("-" if ttft is None else f"{ttft:.0f} ms") + " / " + ("-" if tpot is None else f"{tpot:.1f} ms")


def _err_cell(err: dict) -> str:
    if not err or not err.get("n"):
        return "-"
    return f"median {err['median'] * 100:.0f}% p90 {err['p90'] * 100:.0f}% (n={err['n']})"


def _predicted_cell(pred: dict | None) -> str:
    ttft = (pred or {}).get("ttft_ms")
    return "warming up" if ttft is None else f"{ttft:.0f} ms"
