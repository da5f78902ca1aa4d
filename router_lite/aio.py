"""Bounded task shutdown: stopping the router must never wait forever on one task.

A cancellation can be lost (on Python 3.11, `asyncio.wait_for` returns the result of an inner future that
completed in the same loop iteration as the cancel), so a stop that simply awaits cancelled tasks can hang.
Loops therefore also check a running flag, and stops wait with a bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger("router_lite")


async def cancel_and_wait(tasks: Iterable[asyncio.Task], timeout_s: float, what: str) -> int:
    """Cancel `tasks` and wait at most `timeout_s` (cancelling again halfway); returns how many are left."""
    pending = {t for t in tasks if t is not None and not t.done()}
    for _ in range(2):
        if not pending:
            return 0
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=timeout_s / 2)
    if pending:
        log.warning("%d %s task(s) did not stop within %.1fs; left behind", len(pending), what, timeout_s)
    return len(pending)
