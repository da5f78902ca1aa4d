"""The app on a model filled by hand (no router): coalesced rendering under a flood, snapshots, the CLI face."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from llmdctl.tui.app import LlmdTui
from llmdctl.tui.feed import FeedPanel
from llmdctl.tui.model import Model
from llmdctl.tui.pods import PodsPanel
from tests.router.procs import ROOT
from tests.tui.decisions import PODS, cand, decision, endpoints_doc, pod_metrics
from tests.tui.helpers import run_app, until


def _flood(model: Model, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        ep = PODS[i % 3]
        model.ingest_decision(
            decision(
                f"f{i}",
                ep,
                [cand(p, 4 if p == ep else 0, 5.0 if p == ep else 4.0, prefix=0.5 if p == ep else 0.0) for p in PODS],
            )
        )


def test_a_flood_of_decisions_is_rendered_coalesced_and_bounded() -> None:
    model = Model()
    app = LlmdTui(model=model, connect=False, refresh_hz=5)

    async def body(app: LlmdTui, pilot) -> None:
        await pilot.pause(0.3)
        r0 = app.renders
        t0 = time.monotonic()
        for burst in range(5):  # 10 000 decisions in ~1 s: far more than one render each
            _flood(model, 2000, burst * 2000)
            await pilot.pause(0.2)
        await until(
            pilot, lambda: app.query_one(FeedPanel).shown[0].request_id == "f9999", what="feed shows the newest"
        )
        elapsed = time.monotonic() - t0
        assert app.renders - r0 <= elapsed * app.refresh_hz + 2
        feed = app.query_one(FeedPanel)
        assert feed.row_count == feed.limit and len(model.feed) == model.feed.maxlen
        assert model.decisions_total == 10_000

    run_app(app, body)


def test_idle_model_means_no_rerender() -> None:
    model = Model()
    _flood(model, 10)
    app = LlmdTui(model=model, connect=False, refresh_hz=10)

    async def body(app: LlmdTui, pilot) -> None:
        await pilot.pause(0.3)
        r0 = app.renders
        await pilot.pause(0.6)
        assert app.renders == r0  # nothing changed: nothing re-rendered
        _flood(model, 1, 10)
        await until(pilot, lambda: app.renders == r0 + 1, what="one render for the new decision")

    run_app(app, body)


def canned_model() -> Model:
    """A deterministic model: 3 pods with metrics, 2 polls, 12 decisions, a few chart points."""
    m = Model()
    doc = endpoints_doc()
    m.set_status("live", "", "http://127.0.0.1:8000")
    m.profile = "precise-prefix-cache"
    m.set_scheduler("precise-prefix-cache", 1)
    ttft0 = {"0.01": 0, "0.1": 0, "1.0": 0, "+Inf": 0}
    for step in range(8):
        texts = {
            p: pod_metrics(
                1000 * step * (i + 1),
                800 * step * (i + 1),
                running=i,
                waiting=i // 2,
                kv=0.2 * (i + 1),
                ttft={"0.01": 2 * step, "0.1": 5 * step, "1.0": 6 * step, "+Inf": 6 * step} if step else ttft0,
            )
            for i, p in enumerate(PODS)
        }
        router = 'llmd_router_requests_total{route="/v1/completions",status="200"} %d\n' % (step * step * 3)
        m.ingest_poll(doc, router, texts, now=float(step))
    for i in range(12):
        ep = PODS[i % 3]
        m.ingest_decision(
            decision(
                f"req-{i:03d}",
                ep,
                [
                    cand(
                        p,
                        40 if p == ep else (12 if i % 4 == 0 else 0),
                        6.9 if p == ep else 4.2,
                        prefix=1.0 if p == ep else 0.3,
                    )
                    for p in PODS
                ],
                ts=1_700_000_000.0 + i,
            )
        )
    m.ingest_poll(doc, None, {p: None for p in PODS}, now=9.0)  # pod figures from the router's view from here on
    return m


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_snapshot_live_screen(snap_compare, utc) -> None:
    assert snap_compare(LlmdTui(model=canned_model(), connect=False), terminal_size=(150, 42))


def test_snapshot_decision_detail(snap_compare, utc) -> None:
    async def open_detail(pilot) -> None:
        await pilot.pause(0.3)
        feed = pilot.app.query_one(FeedPanel)
        feed.focus()
        feed.move_cursor(row=1)
        await pilot.press("enter")
        await pilot.pause(0.2)

    assert snap_compare(LlmdTui(model=canned_model(), connect=False), terminal_size=(150, 42), run_before=open_detail)


def test_snapshot_nothing_running(snap_compare, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMDCTL_HOME", "/nonexistent/llmdctl-home")

    async def settle(pilot) -> None:
        await until(pilot, lambda: pilot.app.query_one("#banner").has_class("shown"), what="banner")

    assert snap_compare(LlmdTui(), terminal_size=(120, 30), run_before=settle)


def test_pods_panel_shows_router_view_when_pods_cannot_be_scraped() -> None:
    m = canned_model()
    app = LlmdTui(model=m, connect=False)

    async def body(app: LlmdTui, pilot) -> None:
        await pilot.pause(0.3)
        table = app.query_one(PodsPanel)
        row = [str(c) for c in table.get_row_at(0)]
        assert row[0] == "pod-0" and row[3] == "1" and row[6] == "-"  # running from the router, no hit rate

    run_app(app, body)


def _cli(*args: str, home: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMDCTL_HOME": home, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "llmdctl", "tui", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_cli_errors_are_one_line(tmp_path) -> None:
    r = _cli(home=str(tmp_path))
    assert (
        r.returncode == 1
        and r.stderr.strip() == "error: llmdctl tui needs an interactive terminal (use `llmdctl status` in scripts)"
    )
    r = _cli("--refresh-hz", "100", home=str(tmp_path))
    assert r.returncode == 1 and r.stderr.strip().startswith("error: --refresh-hz") and "Traceback" not in r.stderr
    r = _cli("--demo-rate", "0", home=str(tmp_path))
    assert r.returncode == 1 and "--demo-rate" in r.stderr and len(r.stderr.strip().splitlines()) == 1
