"""The `llmdctl tui` application: pods, decision feed and charts, rendered from one subscriber's model.

The app does no I/O of its own beyond starting the subscriber and the demo load: a timer re-renders, a few
times a second, only the panels whose part of the model changed since the last render.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Static

from llmdctl.tui.charts import ChartsPanel
from llmdctl.tui.demo_load import DemoLoad, DemoLoadError, DemoSpec
from llmdctl.tui.feed import DecisionScreen, FeedPanel
from llmdctl.tui.help import HelpScreen
from llmdctl.tui.model import Model
from llmdctl.tui.pods import PodsPanel
from llmdctl.tui.subscriber import Subscriber

# The scheduling profiles `s` cycles through: cache-blind, approximate (router-side), precise (KV events).
PROFILE_CYCLE = ("round-robin", "inference-scheduling", "precise-prefix-cache")


def profile_config(name: str) -> dict:
    """The shipped profile's router config (an EndpointPickerConfig), read on this machine."""
    from llmdctl.profile import load_profile

    return load_profile(name).router.config


class LlmdTui(App):
    """See the module docstring. `connect=False` builds the app on a model someone else fills (tests)."""

    CSS_PATH = "app.tcss"
    TITLE = "llmdctl tui"
    BINDINGS = [
        Binding("d", "toggle_demo", "Demo load"),
        Binding("s", "switch_profile", "Switch profile"),
        Binding("space", "pause", "Pause"),
        Binding("f", "filter_pod", "Filter pod"),
        Binding("escape", "clear_filter", "All pods", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        demo: bool = False,
        demo_spec: DemoSpec | None = None,
        refresh_hz: float = 5.0,
        poll_s: float = 1.0,
        model: Model | None = None,
        connect: bool = True,
        profiles: tuple[str, ...] = PROFILE_CYCLE,
    ) -> None:
        super().__init__()
        self.model = model or Model()
        self.subscriber = Subscriber(self.model, url, api_key, poll_s=poll_s) if connect else None
        self.refresh_hz = max(1.0, min(30.0, refresh_hz))
        self.demo_on_start = demo
        self.demo_spec = demo_spec or DemoSpec()
        self.demo: DemoLoad | None = None
        self.profiles = profiles
        self.paused = False
        self.filter_pod: str | None = None
        self.switching = False
        self.renders = 0  # feed renders, for tests of coalescing
        self._seen: dict[str, object] = {}
        self._status_text = ""
        self._banner_text: str | None = None

    # -- layout ------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Static(id="banner")
        with Horizontal(id="top"):
            yield PodsPanel(id="pods")
            yield ChartsPanel(id="charts")
        yield FeedPanel(id="feed")
        yield Footer()

    async def on_mount(self) -> None:
        self._pods = self.query_one(PodsPanel)
        self._feed = self.query_one(FeedPanel)
        self._charts = self.query_one(ChartsPanel)
        self._status = self.query_one("#status", Static)
        self._banner = self.query_one("#banner", Static)
        if self.subscriber is not None:
            await self.subscriber.start()
        self.set_interval(1.0 / self.refresh_hz, self.refresh_panels)
        self._feed.focus()
        if self.demo_on_start:
            self.set_timer(0.5, self._demo_when_ready)
        self.refresh_panels()

    async def on_unmount(self) -> None:
        if self.demo is not None:
            await self.demo.stop()
        if self.subscriber is not None:
            await self.subscriber.stop()

    # -- rendering -----------------------------------------------------------------------------------------
    def _changed(self, part: str, gen: object) -> bool:
        if self._seen.get(part) == gen:
            return False
        self._seen[part] = gen
        return True

    def refresh_panels(self) -> None:
        """Render what changed since the last call (called by the timer; cheap when nothing did)."""
        m = self.model
        if not self.is_running:
            return
        self._render_status()
        if self.paused:
            return
        if self._changed("pods", m.gen_pods):
            self._pods.render_model(m)
        if self._changed("feed", (m.gen_feed, self.filter_pod, tuple(m.pods))):  # pods known: names replace addresses
            feed = self._feed
            feed.render_model(m, self.filter_pod)
            self.renders += 1
            feed.border_subtitle = f"{m.decisions_total} decisions · {m.decision_rate:.0f}/s" + (
                f" · router dropped {m.router_dropped:.0f} for slow readers" if m.router_dropped else ""
            )
        if self._changed("charts", m.gen_charts):
            self._charts.render_model(m)

    def status_line(self) -> Text:
        m = self.model
        dot = {
            "live": ("● live", "bold green"),
            "down": ("● down", "bold red"),
            "nothing": ("● nothing running", "bold red"),
        }.get(m.status, ("● connecting", "yellow"))
        t = Text(dot[0], style=dot[1])
        if m.url:
            t.append(f"  router {m.url}")
        if m.profile:
            t.append(f"  ·  stack {m.profile}")
        cfg = (m.router.get("config") or {}) if m.router else {}
        if m.scheduler or cfg:
            t.append("  ·  scheduler ")
            t.append(m.scheduler or "?", style="bold cyan")
            if cfg.get("version"):
                t.append(f" (config v{cfg['version']})", style="dim")
        t.append("\n")
        if self.paused:
            t.append(" PAUSED ", style="bold black on yellow")
            t.append(" ")
        if self.filter_pod:
            t.append(f"filter: {m.pod_name(self.filter_pod)}", style="bold magenta")
            t.append("  ·  ")
        demo = self.demo.describe() if self.demo is not None else "demo load off (d)"
        t.append(demo, style="bold" if self.demo is not None and self.demo.running else "dim")
        if m.notice:
            t.append("  ·  " + m.notice, style="italic")
        return t

    def _render_status(self) -> None:
        m = self.model
        line = self.status_line()
        if line.plain != self._status_text:
            self._status_text = line.plain
            self._status.update(line)
        banner = None
        if m.status == "nothing":
            banner = m.status_detail
        elif m.status == "down":
            banner = m.status_detail + "\nThe view reconnects by itself when the router is back."
        if banner != self._banner_text:
            self._banner_text = banner
            w = self._banner
            w.update(banner or "")
            w.set_class(banner is not None, "shown")

    # -- actions -------------------------------------------------------------------------------------------
    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._seen.clear()  # render everything that changed meanwhile
        self.refresh_panels()

    def action_filter_pod(self) -> None:
        keys = list(self.model.pods)
        if not keys:
            self.model.set_notice("no pods to filter by")
            return
        if self.filter_pod not in keys:
            self.filter_pod = keys[0]
        else:
            i = keys.index(self.filter_pod) + 1
            self.filter_pod = keys[i] if i < len(keys) else None
        self.refresh_panels()

    def action_clear_filter(self) -> None:
        if self.filter_pod is not None:
            self.filter_pod = None
            self.refresh_panels()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def on_feed_panel_selected(self, event: FeedPanel.Selected) -> None:
        self.push_screen(DecisionScreen(event.row, self.model))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if isinstance(event.data_table, PodsPanel):
            pod = event.data_table.cursor_pod()
            self.filter_pod = None if pod == self.filter_pod else pod
            self.refresh_panels()

    def next_profile(self) -> str:
        current = self.model.scheduler or self.model.profile
        i = self.profiles.index(current) if current in self.profiles else -1
        return self.profiles[(i + 1) % len(self.profiles)]

    def action_switch_profile(self) -> None:
        if self.subscriber is None or self.switching:
            return
        self.switching = True
        self.run_worker(self.switch_to(self.next_profile()), group="switch", exclusive=True)

    async def switch_to(self, name: str) -> bool:
        """Switch the router to profile `name`'s scheduling config; the outcome goes to the status line."""
        m = self.model
        try:
            try:
                config = profile_config(name)
            except (ValueError, OSError) as exc:
                m.set_notice(f"switch failed: {str(exc).splitlines()[0]}")
                return False
            assert self.subscriber is not None
            m.set_notice(f"switching to {name}…")
            ok, msg = await self.subscriber.switch_config(config)
            if ok:
                m.set_scheduler(name)
                note = f"scheduler → {name} ({msg})"
                if name == "precise-prefix-cache" and not ((m.router.get("kv_events") or {}).get("sockets")):
                    note += "; pods publish no KV events here, so the precise index stays empty"
                m.set_notice(note)
            else:
                m.set_notice(f"switch to {name} failed: {msg}")
            return ok
        finally:
            self.switching = False

    async def _demo_when_ready(self) -> None:
        if self.subscriber is not None and self.subscriber.target.url is None:
            self.set_timer(1.0, self._demo_when_ready)
            return
        await self.action_toggle_demo()

    async def action_toggle_demo(self) -> None:
        m = self.model
        if self.demo is not None and self.demo.running:
            await self.demo.stop()
            m.set_notice("demo load stopped")
            return
        t = self.subscriber.target if self.subscriber is not None else None
        if t is None or t.url is None:
            m.set_notice("no router to load: start a stack first")
            return
        self.demo = DemoLoad(t.url, t.model, t.api_key, self.demo_spec)
        try:
            await self.demo.start()
        except DemoLoadError as exc:
            m.set_notice(str(exc))
            self.demo = None
            return
        m.set_notice(f"demo load started against {t.url}")
