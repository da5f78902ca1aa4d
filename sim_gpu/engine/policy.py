"""Scheduling policies (vLLM's `--scheduling-policy`): the order of the waiting queue and who is preempted.

`fcfs` (vLLM's default): waiting requests in arrival order, a preempted request back at the head; when the
KV pool runs dry the most recently started running request is preempted. `priority`: the waiting queue is a
heap on (priority, arrival time, request id) — a lower value first, as the request field `priority` means in
vLLM — and the victim is the running request with the largest (priority, arrival time). The scheduler asks
only these three things; everything else about forming a batch is the same under both policies.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator

from sim_gpu.engine.request import Request

POLICIES = ("fcfs", "priority")

__all__ = ["POLICIES", "PriorityWaiting", "make_waiting", "victim_index"]


def _key(r: Request) -> tuple[int, float, str]:
    return (r.priority, r.arrival_time, r.request_id)


class PriorityWaiting:
    """The waiting queue under `priority`, with the deque operations the scheduler uses.

    "Left" means "front": `appendleft`/`extendleft` (a preempted or skipped request going back) insert by key,
    as vLLM's priority queue does — there is no front to put anything at but its place in the order.
    """

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[int, float, str], int, Request]] = []

    def append(self, r: Request) -> None:
        heapq.heappush(self._heap, (_key(r), id(r), r))

    appendleft = append

    def extendleft(self, rs: Iterable[Request]) -> None:
        for r in rs:
            self.append(r)

    def popleft(self) -> Request:
        return heapq.heappop(self._heap)[2]

    def __getitem__(self, i: int) -> Request:
        if i != 0:
            raise IndexError("a priority queue exposes only its head")
        return self._heap[0][2]

    def remove(self, r: Request) -> None:
        for i, entry in enumerate(self._heap):
            if entry[2] is r:
                self._heap[i] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                return
        raise ValueError("request not in the waiting queue")

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __iter__(self) -> Iterator[Request]:
        return (entry[2] for entry in self._heap)  # heap order: callers only test membership or sum


def make_waiting(policy: str) -> "deque[Request] | PriorityWaiting":
    if policy == "fcfs":
        return deque()
    if policy == "priority":
        return PriorityWaiting()
    raise ValueError(f"scheduling_policy: expected one of {', '.join(POLICIES)}, got {policy!r}")


def victim_index(policy: str, running: list[Request], start: int) -> int:
    """Index in `running` of the request to preempt, among `running[start:]` (those this step has not planned
    yet; vLLM may also take back one it planned, the simulator never does): the tail under fcfs, the one with
    the largest (priority, arrival time) under priority."""
    if policy == "fcfs":
        return len(running) - 1
    best = start
    for i in range(start + 1, len(running)):
        r, b = running[i], running[best]
        if (r.priority, r.arrival_time) >= (b.priority, b.arrival_time):
            best = i
    return best
