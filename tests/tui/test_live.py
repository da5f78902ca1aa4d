"""The TUI against a real local stack: simulator pods and a router on loopback, driven with Textual's pilot."""

from __future__ import annotations

import pytest
import yaml

from llmdctl.local.state import RunState, save_state
from llmdctl.tui.app import LlmdTui, profile_config
from llmdctl.tui.demo_load import DemoSpec
from llmdctl.tui.feed import DecisionScreen, FeedPanel, decision_detail
from llmdctl.tui.pods import PodsPanel
from tests.conftest import free_port
from tests.router.procs import router, sim_pods
from tests.tui.helpers import group_prompt, restartable_router, run_app, send, until

pytestmark = pytest.mark.timeout(120)

PRECISE = yaml.safe_dump(profile_config("precise-prefix-cache"))


@pytest.fixture(scope="module")
def sims():
    with sim_pods(4, events=True) as s:
        yield s


ADMIN_KEY = "tui-live-admin-key-0123456789"


@pytest.fixture(scope="module")
def stack(sims):
    # the router reads the admin key from the environment, and so does the TUI it switches configs through
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMD_ROUTER_ADMIN_KEY", ADMIN_KEY)
        with router(sims.endpoint_entries(), PRECISE) as r:
            yield r


def _text(renderable) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def test_pods_rows_and_decisions_stream_and_detail(stack, sims) -> None:
    async def body(app: LlmdTui, pilot) -> None:
        await until(pilot, lambda: app.model.status == "live" and len(app.model.pods) == 4, what="live with 4 pods")
        await until(pilot, lambda: app.query_one(PodsPanel).row_count == 4, what="4 pod rows")
        await until(
            pilot,
            lambda: app.model.scheduler == "precise-prefix-cache",
            what="router's scheduler named from /admin/config",
        )
        names = {str(app.query_one(PodsPanel).get_row_at(i)[0]) for i in range(4)}
        assert names == {f"pod-{sims.port + i}" for i in range(4)}
        for i in range(5):
            await send(stack.url, group_prompt(7, i), f"stream-{i}")
        await until(
            pilot,
            lambda: {f"stream-{i}" for i in range(5)} <= {r.request_id for r in app.query_one(FeedPanel).shown},
            what="5 decisions in the feed",
        )
        feed = app.query_one(FeedPanel)
        assert feed.shown[0].request_id == "stream-4"  # newest first
        await until(pilot, lambda: all(p.from_pod for p in app.model.pods.values()), what="pod metrics scraped")
        served = app.model.pods[feed.shown[0].served_by]
        await until(
            pilot, lambda: served.hit_rate is not None and served.hit_rate > 0, what="hit rate from the pod's counters"
        )
        feed.focus()
        feed.move_cursor(row=4)  # stream-0, the group's first request: no pod is warm, none is filtered out
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DecisionScreen), what="detail screen")
        detail = _text(decision_detail(app.screen.row, app.model))
        for i in range(4):  # every candidate side by side, with each scorer's row
            assert f"pod-{sims.port + i}" in detail
        assert "precise-prefix-cache" in detail and "estimated-ttft ×3" in detail and "prefix blocks" in detail, detail
        assert "in flight req/tok" in detail  # the router's own load behind the load terms
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DecisionScreen), what="detail closed")

    run_app(LlmdTui(stack.url, poll_s=0.3), body)


def test_switching_profile_changes_routing_seen_in_the_feed(stack) -> None:
    async def body(app: LlmdTui, pilot) -> None:
        await until(pilot, lambda: app.model.status == "live" and len(app.model.pods) == 4, what="live")
        assert await app.switch_to("precise-prefix-cache")
        for i in range(8):
            await send(stack.url, group_prompt(1, i), f"precise-{i}")
        await until(
            pilot,
            lambda: sum(r.request_id.startswith("precise-") for r in app.query_one(FeedPanel).shown) == 8,
            what="8 precise decisions",
        )
        precise = [r for r in app.query_one(FeedPanel).shown if r.request_id.startswith("precise-")]
        assert len({r.served_by for r in precise}) == 1  # the prefix group stays on one pod
        assert all(r.matched and r.matched >= 16 for r in precise[:-1])  # ... where its blocks are
        await pilot.press("s")  # precise -> round-robin
        await until(pilot, lambda: app.model.scheduler == "round-robin", what="switched to round-robin")
        assert "config version" in app.model.notice
        for i in range(8):
            await send(stack.url, group_prompt(2, i), f"rr-{i}")
        await until(
            pilot,
            lambda: sum(r.request_id.startswith("rr-") for r in app.query_one(FeedPanel).shown) == 8,
            what="8 round-robin decisions",
        )
        rr = [r for r in app.query_one(FeedPanel).shown if r.request_id.startswith("rr-")]
        assert len({r.served_by for r in rr}) == 4  # the same kind of group, spread over every pod
        assert all(r.scores == [] and r.matched is None for r in rr)
        assert "round-robin" in str(app.query_one("#status").render())

    try:
        run_app(LlmdTui(stack.url, poll_s=0.3), body)
    finally:  # leave the shared router as the other tests expect it
        import httpx

        httpx.post(
            stack.url + "/admin/config",
            content=PRECISE,
            timeout=5,
            headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/yaml"},
        )


def test_pause_and_filter(stack) -> None:
    async def body(app: LlmdTui, pilot) -> None:
        await until(pilot, lambda: app.model.status == "live" and len(app.model.pods) == 4, what="live")
        served = {await send(stack.url, group_prompt(3 + i, 0), f"pf-{i}") for i in range(6)}
        await until(
            pilot,
            lambda: sum(r.request_id.startswith("pf-") for r in app.query_one(FeedPanel).shown) == 6,
            what="decisions",
        )
        await pilot.press("space")
        before = [r.request_id for r in app.query_one(FeedPanel).shown]
        await send(stack.url, group_prompt(9, 0), "while-paused")
        await until(pilot, lambda: app.model.find("while-paused") is not None, what="decision arrives in the model")
        await pilot.pause(0.5)
        assert [r.request_id for r in app.query_one(FeedPanel).shown] == before
        assert "PAUSED" in str(app.query_one("#status").render())
        await pilot.press("space")
        await until(
            pilot, lambda: app.query_one(FeedPanel).shown[0].request_id == "while-paused", what="feed catches up"
        )
        await pilot.press("f")
        pod = app.filter_pod
        assert pod == next(iter(app.model.pods))
        await pilot.pause(0.3)
        shown = app.query_one(FeedPanel).shown
        assert all(pod in r.pods for r in shown)
        assert len(shown) < len(app.model.rows(limit=1000)) or served == {pod}
        await pilot.press("escape")
        assert app.filter_pod is None

    run_app(LlmdTui(stack.url, poll_s=0.3), body)


def test_demo_load_brings_the_screen_alive(stack) -> None:
    async def body(app: LlmdTui, pilot) -> None:
        await until(pilot, lambda: app.model.status == "live", what="live")
        await pilot.press("d")
        await until(
            pilot,
            lambda: sum(r.request_id.startswith("demo-") for r in app.model.feed) >= 10,
            timeout=15,
            what="10 demo decisions",
        )
        assert app.demo is not None and app.demo.running and app.demo.failed == 0
        groups = {r.request_id.split("-")[1] for r in app.model.feed if r.request_id.startswith("demo-")}
        assert any(g.startswith("s") for g in groups) and any(g.startswith("m") for g in groups)  # both shapes
        await pilot.press("d")
        await until(pilot, lambda: not app.demo.running, what="demo stopped")
        assert "demo load stopped" in app.model.notice

    run_app(LlmdTui(stack.url, poll_s=0.3, demo_spec=DemoSpec(rate=20, duration_s=30)), body)


def test_nothing_running_banner_then_attaches_to_the_local_stack(stack, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMDCTL_HOME", str(tmp_path))

    async def body(app: LlmdTui, pilot) -> None:
        await until(pilot, lambda: app.model.status == "nothing", what="nothing running")
        banner = app.query_one("#banner")
        await until(pilot, lambda: banner.has_class("shown"), what="banner")
        assert "Nothing is running" in str(banner.render()) and "llmdctl up" in str(banner.render())
        save_state(
            RunState(
                "precise-prefix-cache",
                "profiles/precise-prefix-cache.yaml",
                "sim",
                "sim-model",
                stack.url,
                0.0,
                status="running",
            )
        )
        await until(
            pilot,
            lambda: app.model.status == "live" and len(app.model.pods) == 4,
            timeout=20,
            what="attached to the local stack",
        )
        await until(pilot, lambda: not banner.has_class("shown"), what="banner gone")
        assert app.model.profile == "precise-prefix-cache"
        assert app.next_profile() == "round-robin"

    run_app(LlmdTui(poll_s=0.3), body)


def test_reconnects_when_the_router_restarts(sims) -> None:
    port = free_port()
    with restartable_router(port, sims.endpoint_entries(), PRECISE) as r:

        async def body(app: LlmdTui, pilot) -> None:
            await until(pilot, lambda: app.model.status == "live", what="live")
            r.kill()
            await until(pilot, lambda: app.model.status == "down", what="down")
            banner = app.query_one("#banner")
            await until(pilot, lambda: banner.has_class("shown"), what="banner")
            assert "unreachable" in str(banner.render()) and "reconnects" in str(banner.render())
            r.start()
            await until(pilot, lambda: app.model.status == "live", timeout=15, what="live again")
            await send(r.url, group_prompt(5, 0), "after-restart")
            await until(pilot, lambda: app.model.find("after-restart") is not None, what="decisions after the restart")
            await until(pilot, lambda: not banner.has_class("shown"), what="banner gone")
            assert app.subscriber.reconnects >= 1

        run_app(LlmdTui(r.url, poll_s=0.3), body)


def test_api_key_refusal_is_a_banner_and_the_key_works(sims) -> None:
    port = free_port()
    with restartable_router(port, sims.endpoint_entries(), PRECISE, args=["--api-key", "s3cret"]) as r:

        async def refused(app: LlmdTui, pilot) -> None:
            await until(
                pilot, lambda: app.model.status == "down" and "API key" in app.model.status_detail, what="refused"
            )
            await until(
                pilot, lambda: "--api-key" in str(app.query_one("#banner").render()), what="banner names --api-key"
            )

        run_app(LlmdTui(r.url, api_key="wrong", poll_s=0.3), refused)

        async def accepted(app: LlmdTui, pilot) -> None:
            await until(
                pilot, lambda: app.model.status == "live" and len(app.model.pods) == 4, what="live with the key"
            )
            assert await app.switch_to("round-robin")

        run_app(LlmdTui(r.url, api_key="s3cret", poll_s=0.3), accepted)
