"""A hung pod leaves rotation by its silence (issue 18: time to exclusion for a hang): the first scrape that
gets no answer within `--silent-after` takes it out while another pod answers; a lone pod, with nobody to
compare with, is left to the /health probe (a router or machine stall silences every pod at once, and must
not empty the pool). Real simulator and router processes; SIGSTOP leaves the port accepting, answering nothing."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from tests.router.procs import router, sim_group, sim_pods, wait_until

pytestmark = pytest.mark.timeout(60)


def _row(rt, address: str) -> dict:
    rows = httpx.get(rt.url + "/debug/endpoints", timeout=5).json()["endpoints"]
    return next(r for r in rows if r["endpoint"] == address)


def _stopped_until_excluded(rt, pid: int, address: str) -> dict:
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: _row(rt, address)["healthy"] is False, timeout=10, interval=0.05)
        return _row(rt, address)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_hung_pod_is_excluded_for_its_silence_and_comes_back_when_it_answers():
    with sim_group(2, events=False) as (hung, good), router(hung.endpoint_entries() + good.endpoint_entries()) as rt:
        wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=2", timeout=2).status_code == 200, timeout=15)
        row = _stopped_until_excluded(rt, hung.proc.pid, hung.address())
        assert row["reason"].startswith("answered nothing for "), row  # the silence rule, not the 1 s probe
        assert _row(rt, good.address())["healthy"] is True
        wait_until(lambda: _row(rt, hung.address())["healthy"] is True, timeout=10, interval=0.05)


def test_with_silence_off_the_probe_excludes_it():
    with (
        sim_group(2, events=False) as (hung, good),
        router(hung.endpoint_entries() + good.endpoint_entries(), args=["--silent-after", "0"]) as rt,
    ):
        wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=2", timeout=2).status_code == 200, timeout=15)
        row = _stopped_until_excluded(rt, hung.proc.pid, hung.address())
        assert row["reason"] == "/health: TimeoutError", row


def test_a_lone_hung_pod_is_left_to_the_health_probe():
    with sim_pods(1, events=False) as pod, router(pod.endpoint_entries()) as rt:
        wait_until(lambda: httpx.get(rt.url + "/health?min_healthy=1", timeout=2).status_code == 200, timeout=15)
        row = _stopped_until_excluded(rt, pod.proc.pid, pod.address())
        assert row["reason"] == "/health: TimeoutError", row
