"""The admission shell: shedding while saturated, and the queue dispatching by priority once capacity returns."""

from __future__ import annotations

import asyncio
import time

import pytest

from router_lite.admission import Admission, Rejected
from router_lite.saturation import SaturationConfig, SaturationDetector
from router_lite.types import Endpoint, EndpointMetrics, LLMRequest


def _pool(waiting: int) -> list[Endpoint]:
    ep = Endpoint("127.0.0.1", 9000)
    ep.metrics = EndpointMetrics(waiting_queue_size=waiting, updated_at=time.monotonic())
    return [ep]


def test_queue_dispatches_highest_priority_first_when_capacity_returns():
    async def run() -> None:
        adm = Admission(
            SaturationDetector(SaturationConfig(metrics_staleness_threshold_s=60)), queue_size=4, queue_ttl_s=5
        )
        pool = _pool(waiting=10)  # saturated: queue depth over the threshold of 5
        order: list[str] = []

        async def client(name: str, prio: int) -> None:
            ticket = await adm.admit(LLMRequest(name, "m", priority=prio), lambda: pool)
            order.append(name)
            assert ticket is not None
            ticket.release()

        with pytest.raises(Rejected, match="sheddable"):
            await adm.admit(LLMRequest("shed", "m", priority=-1), lambda: pool)
        tasks = [asyncio.create_task(client("low", 0)), asyncio.create_task(client("high", 5))]
        await asyncio.sleep(0.05)
        assert order == [] and adm.queue_size == 2
        pool[0].metrics = EndpointMetrics(waiting_queue_size=0, updated_at=time.monotonic())
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert order == ["high", "low"] and adm.queue_size == 0
        # Not saturated and nobody waiting: straight through, no ticket.
        assert await adm.admit(LLMRequest("free", "m"), lambda: pool) is None

    asyncio.run(run())


def test_full_queue_rejects_and_displaces_lower_priority():
    async def run() -> None:
        adm = Admission(
            SaturationDetector(SaturationConfig(metrics_staleness_threshold_s=60)), queue_size=1, queue_ttl_s=5
        )
        pool = _pool(waiting=10)
        low = asyncio.create_task(adm.admit(LLMRequest("low", "m", priority=0), lambda: pool))
        await asyncio.sleep(0.02)
        with pytest.raises(Rejected, match="queue full"):
            await adm.admit(LLMRequest("same", "m", priority=0), lambda: pool)
        high = asyncio.create_task(adm.admit(LLMRequest("high", "m", priority=3), lambda: pool))
        with pytest.raises(Rejected, match="displaced"):
            await asyncio.wait_for(low, 1)
        high.cancel()

    asyncio.run(run())
