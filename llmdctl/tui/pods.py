"""The pods panel: one row per pod (and per data-parallel rank) with its load and cache figures."""

from __future__ import annotations

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from llmdctl.tui import fmt
from llmdctl.tui.model import Model, PodView

COLUMNS = ("pod", "role", "health", "run", "wait", "KV used", "hit 10s", "hit all", "routed")


def tier_text(pod: PodView) -> str:
    """`CPU 40% 1.2k hit · DISK 12% 300 hit` — occupancy and hit tokens per tier below the GPU."""
    parts = []
    for tier, f in sorted(pod.tiers.items()):
        part = tier
        if "occupancy" in f:
            occ = f["occupancy"]
            part += f" {occ * 100:.0f}%" if occ <= 1.0 else f" {fmt.num(occ)} blk"
        if "hits" in f:
            part += f" {fmt.num(f['hits'])} hit"
        parts.append(part)
    return " · ".join(parts) or "-"


def pod_cells(pod: PodView) -> tuple:
    health = Text("ok", style="green") if pod.healthy else Text("down", style="bold red")
    role = {"both": "both", "prefill": "prefill", "decode": "decode"}.get(pod.role, pod.role)
    return (
        Text(pod.label, style="bold"),
        role,
        health,
        fmt.num(pod.running),
        fmt.num(pod.waiting),
        fmt.bar(pod.kv_usage),
        fmt.hit(pod.hit_rate_recent),
        fmt.hit(pod.hit_rate),
        str(pod.routed),
    )


class PodsPanel(DataTable):
    """Rendered from the model; the cursor row's pod can be used as the feed filter (enter)."""

    BORDER_TITLE = "Pods"

    def __init__(self, **kw) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self._tiers_shown = False
        self._keys: list[str] = []

    def on_mount(self) -> None:
        self.border_title = "Pods"
        self.add_columns(*COLUMNS)

    def render_model(self, model: Model) -> None:
        pods = list(model.pods.values())
        want_tiers = any(p.tiers for p in pods)
        if want_tiers != self._tiers_shown:
            self.clear(columns=True)
            self.add_columns(*COLUMNS, *(("tiers",) if want_tiers else ()))
            self._tiers_shown = want_tiers
            self._keys = []
        keys = [p.key for p in pods]
        if keys != self._keys:
            cursor = self.cursor_row
            self.clear()
            for p in pods:
                self.add_row(*pod_cells(p), *((tier_text(p),) if want_tiers else ()), key=p.key)
            self._keys = keys
            if pods:
                self.move_cursor(row=min(cursor, len(pods) - 1), scroll=False)
        else:  # same pods: update cells in place (keeps cursor and scroll)
            for p in pods:
                for col, cell in enumerate((*pod_cells(p), *((tier_text(p),) if want_tiers else ()))):
                    self.update_cell_at(Coordinate(keys.index(p.key), col), cell)
        n_up = sum(p.healthy for p in pods)
        self.border_subtitle = f"{n_up}/{len(pods)} healthy" if pods else "no pods"

    def cursor_pod(self) -> str | None:
        if 0 <= self.cursor_row < len(self._keys):
            return self._keys[self.cursor_row]
        return None
