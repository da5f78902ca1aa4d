"""The live router's parts on a virtual clock, as both planners (`plan.sim`, `plan.dp`) build and drive them.

The same config loading, scheduler, director and request hashing the gateway uses; time comes from one
`VirtualClock`, and the wall seconds spent routing are summed (the planner's `scheduling_s`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from kvtiers.hashing import DEFAULT_SEED
from router_lite.config import load_config
from router_lite.director import Director, Flow, NoEndpoint, Shed
from router_lite.prefix import PrecisePrefixIndex, PrefixIndexes
from router_lite.scheduler import Scheduler
from router_lite.tokenization import request_preparer
from router_lite.types import Endpoint, LLMRequest
from sim_gpu.clock import VirtualClock


@dataclass
class PlannedRouter:
    clock: VirtualClock
    index: PrecisePrefixIndex  # fed with the engines' KV events by the planner
    director: Director  # max_retries 0: an engine's refusal (a prompt too long for it) is final, as vLLM's 400
    prepare: Any  # LLMRequest -> None: block hashes, as the gateway computes them
    scheduling_s: float = 0.0

    @classmethod
    def build(cls, router: dict[str, Any], origin: str, seed: int, engine_block_size: int) -> "PlannedRouter":
        """`router`: an EndpointPickerConfig; the engines hash with their defaults at `engine_block_size`."""
        config = load_config(router, origin=origin)
        clock = VirtualClock()
        indexes = PrefixIndexes(precise=PrecisePrefixIndex(clock=clock.now))
        scheduler = Scheduler(config, index=indexes, rng=random.Random(seed), clock=clock.now)
        prepare = request_preparer(scheduler.needs, (engine_block_size, "sha256", DEFAULT_SEED))
        return cls(clock, indexes.precise, Director(lambda: scheduler, max_retries=0), prepare)

    def route(self, request: LLMRequest, endpoints: list[Endpoint]) -> Flow | str:
        """The request's flow (scheduled and routed), or why no endpoint takes it."""
        t0 = time.perf_counter()
        try:
            self.prepare(request)
            return self.director.start(request, endpoints)
        except (NoEndpoint, Shed) as exc:
            return str(exc)
        finally:
            self.scheduling_s += time.perf_counter() - t0
