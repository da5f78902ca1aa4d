"""The TUI's built-in demo load: a little shared-prefix and multi-turn traffic so the screen comes alive.

Bounded in every direction: a Poisson rate (default 8 req/s), a duration (5 min), a cap on requests in
flight (arrivals over it are skipped, not queued) and on total requests; only a loopback router is ever
loaded. Prompts are token ids (exact lengths, no tokenizer needed): `groups` shared system prompts, each
request adding a unique question, and `sessions` conversations whose next turn repeats the whole previous
prompt plus a reply and a new question — the two shapes where cache-aware routing shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

TOKEN_LO, TOKEN_HI = 1000, 30000
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class DemoLoadError(ValueError):
    """The demo load cannot run (e.g. a router that is not on this machine); one line."""


@dataclass
class DemoSpec:
    rate: float = 8.0  # requests per second (Poisson arrivals)
    duration_s: float = 300.0
    max_inflight: int = 32
    max_requests: int = 5000
    groups: int = 32  # shared system prompts: 32 x 2048 tokens fill one default pod's KV cache (4096 blocks),
    system_len: int = 2048  # so cache-blind routing thrashes while prefix-aware routing keeps ~8 groups per pod
    question_len: int = 32
    sessions: int = 4  # multi-turn conversations
    turn_len: int = 48  # reply + next question added per turn
    max_turns: int = 8  # a conversation restarts after this many turns
    multi_turn_share: float = 0.4
    output_len: int = 16
    seed: int = 0

    def check(self) -> None:
        if not 0 < self.rate <= 200:
            raise DemoLoadError(f"demo rate: expected 0 < rate <= 200 requests/s, got {self.rate}")
        if not 0 < self.duration_s <= 3600:
            raise DemoLoadError(f"demo duration: expected 0 < seconds <= 3600, got {self.duration_s}")
        if self.max_inflight < 1 or self.max_requests < 1:
            raise DemoLoadError("demo limits: max_inflight and max_requests must be >= 1")


@dataclass
class DemoPrompts:
    """The deterministic prompt source (no I/O): `next()` -> (kind, group, token ids)."""

    spec: DemoSpec
    rng: random.Random = field(init=False)
    _systems: list[list[int]] = field(init=False)
    _sessions: list[list[int]] = field(init=False)
    _turns: list[int] = field(init=False)

    def __post_init__(self) -> None:
        s = self.spec
        self.rng = random.Random(s.seed)
        self._systems = [self._tokens(s.system_len) for _ in range(s.groups)]
        self._sessions = [[] for _ in range(s.sessions)]
        self._turns = [0] * s.sessions

    def _tokens(self, n: int) -> list[int]:
        r = self.rng.randrange
        return [r(TOKEN_LO, TOKEN_HI) for _ in range(n)]

    def next(self) -> tuple[str, str, list[int]]:
        s = self.spec
        if s.sessions and self.rng.random() < s.multi_turn_share:
            i = self.rng.randrange(s.sessions)
            if self._turns[i] >= s.max_turns or not self._sessions[i]:
                self._sessions[i] = self._tokens(s.system_len // 2)
                self._turns[i] = 0
            self._sessions[i] = self._sessions[i] + self._tokens(s.turn_len)
            self._turns[i] += 1
            return "multi-turn", f"s{i}", list(self._sessions[i])
        g = self.rng.randrange(s.groups)
        return "shared-prefix", f"g{g}", self._systems[g] + self._tokens(s.question_len)


def is_loopback(url: str) -> bool:
    host = urlsplit(url if "://" in url else "http://" + url).hostname or ""
    return host in LOOPBACK or host.startswith("127.")


class DemoLoad:
    """Sends the demo traffic to a loopback router from the caller's event loop until stopped or done."""

    def __init__(
        self, url: str, model: str | None = None, api_key: str | None = None, spec: DemoSpec | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.spec = spec or DemoSpec()
        self.sent = self.ok = self.failed = self.skipped = 0
        self.inflight = 0
        self.started_at: float | None = None
        self.last_error = ""
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self._requests: set[asyncio.Task] = set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def describe(self) -> str:
        s = self.spec
        if self.started_at is None:
            return "demo load off"
        state = "on" if self.running else "done"
        left = max(0.0, s.duration_s - (time.monotonic() - self.started_at)) if self.running else 0.0
        text = f"demo load {state}: {s.rate:g} req/s · sent {self.sent} ok {self.ok} err {self.failed}"
        if self.failed and self.last_error:
            text += f" ({self.last_error})"
        if self.skipped:
            text += f" skipped {self.skipped}"
        if self.running:
            text += f" · {left:.0f}s left"
        return text

    async def start(self) -> None:
        """Begin (raises DemoLoadError for a non-loopback router or bad limits)."""
        if self.running:
            return
        if not is_loopback(self.url):
            raise DemoLoadError(f"the demo load only runs against a router on this machine; {self.url} is not loopback")
        self.spec.check()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=self.spec.max_inflight),
        )
        if not self.model:
            self.model = await self._served_model()
        self.started_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="tui-demo-load")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for t in list(self._requests):
            t.cancel()
        if self._requests:
            await asyncio.gather(*self._requests, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _served_model(self) -> str:
        assert self._client is not None
        try:
            data = (await self._client.get("/v1/models", timeout=3.0)).json().get("data") or []
            if data and isinstance(data[0], dict) and data[0].get("id"):
                return str(data[0]["id"])
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return "sim-model"

    async def _run(self) -> None:
        s = self.spec
        prompts = DemoPrompts(s)
        rng = random.Random(s.seed + 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.duration_s
        n = 0
        next_at = loop.time()
        while n < s.max_requests:
            next_at += rng.expovariate(s.rate)  # absolute arrival times: a busy loop does not lower the rate
            if next_at >= deadline:
                break
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            n += 1
            if self.inflight >= s.max_inflight:
                self.skipped += 1
                continue
            kind, group, prompt = prompts.next()
            t = asyncio.create_task(self._send(f"demo-{kind[0]}{group}-{n}", prompt))
            self._requests.add(t)
            t.add_done_callback(self._requests.discard)
        if self._requests:
            await asyncio.gather(*list(self._requests), return_exceptions=True)

    async def _send(self, request_id: str, prompt: list[int]) -> None:
        assert self._client is not None
        self.inflight += 1
        self.sent += 1
        try:
            body = {"model": self.model, "prompt": prompt, "max_tokens": self.spec.output_len, "temperature": 0}
            r = await self._client.post("/v1/completions", json=body, headers={"x-request-id": request_id})
            if r.status_code == 200:
                self.ok += 1
            else:
                self.failed += 1
                self.last_error = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            self.failed += 1
            self.last_error = type(exc).__name__
        finally:
            self.inflight -= 1
