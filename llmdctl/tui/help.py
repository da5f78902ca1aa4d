"""The help screen: what each key does and how to read the panels."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("d", "start / stop the built-in demo load (shared-prefix + multi-turn, loopback routers only)"),
    ("s", "switch the router's scheduling profile live: round-robin → inference-scheduling → precise-prefix-cache"),
    ("space", "pause / resume the display (data keeps arriving; nothing is lost within the ring)"),
    ("f", "filter the feed by pod: cycles through the pods, then back to all"),
    ("enter", "on the feed: open the selected decision with all candidates side by side; on pods: filter by that pod"),
    ("escape", "clear the filter / close a dialog"),
    ("tab", "move focus between the pods table and the feed"),
    ("?", "this help"),
    ("q", "quit (the demo load stops with it)"),
)

READING = """[b]Pods[/b]: run / wait are the pod's running and waiting requests, KV used its KV-cache usage, hit 10s and
hit all its prefix-cache hit rate from its own token counters (vllm:prefix_cache_hits / queries) over the
last 10 s and since it started; routed counts the decisions in the feed that chose it. Tiers appear when
pods report CPU / DISK KV tiers.
[b]Decisions[/b]: prefix blk is the number of prompt blocks the chosen pod already held, with the best any
other candidate held in brackets — red when routing left a better match behind (that is the waste
cache-blind routing causes). scores are each scorer's weighted score on the chosen pod.
[b]Cluster[/b]: hit rate and TTFT p50/p90 over 5-s windows from the pods' counters and histograms (the
router's time-to-first-byte when pods cannot be scraped); requests/s from the router's counter."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def compose(self) -> ComposeResult:
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold yellow", no_wrap=True)
        t.add_column()
        for k, what in KEYS:
            t.add_row(k, what)
        with VerticalScroll(id="help"):
            yield Static(t)
            yield Static(Text.from_markup("\n" + READING))

    def on_mount(self) -> None:
        self.query_one("#help").border_title = "llmdctl tui — keys"
        self.query_one("#help").border_subtitle = "escape to close"

    def action_close(self) -> None:
        self.dismiss(None)
