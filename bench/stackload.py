"""Helpers shared by bench/bench_priority.py and bench/soak.py: a local stack started with the real CLI in
a throw-away run directory, and a streaming client that records what happened to every request.

A request is *lost* when the client got neither a complete answer nor a clean refusal: a 429 with
Retry-After (admission control) is a refusal, and so is nothing else. A stream that started and was cut with
an error event is *cut*, counted apart: it cannot be retried once tokens went out.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_block(n: int) -> int:
    """The first of `n` consecutive free loopback ports."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        socks = []
        try:
            for p in range(base, base + n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no block of free ports")


@dataclass
class Stack:
    """A stack started by `llmdctl up` in its own run directory."""

    home: Path
    env: dict[str, str]
    state: dict[str, Any]

    @property
    def url(self) -> str:
        return self.state["router_url"]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "llmdctl", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )

    def admin_headers(self) -> dict[str, str]:
        key = (self.home / "run" / "admin.key").read_text().strip()
        return {"authorization": f"Bearer {key}"}

    def down(self) -> None:
        r = self.cli("down", "--grace", "3")
        if r.returncode != 0:
            print(f"llmdctl down failed: {r.stderr.strip()[-500:]}", file=sys.stderr)


def up(
    profile: str,
    replicas: int | None,
    sets: list[str],
    home: Path | None = None,
    timeout: float = 180,
    endpoints: int | None = None,
) -> Stack:
    """`llmdctl up PROFILE` on free ports in a fresh run directory (or `home`); `endpoints`: how many pod
    endpoints the stack has (default `replicas`), to reserve their ports."""
    home = home or Path(tempfile.mkdtemp(prefix="llmdctl-bench-"))
    env = {
        **os.environ,
        "LLMDCTL_HOME": str(home),
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    n = endpoints or replicas or 1
    base = free_block(1 + 2 * n)
    args = [
        "up",
        profile,
        "--port",
        str(base),
        "--pod-port",
        str(base + 1),
        "--events-port",
        str(base + 1 + n),
        "--json",
    ]
    if replicas is not None:
        args += ["--replicas", str(replicas)]
    for s in sets:
        args += ["--set", s]
    r = subprocess.run(
        [sys.executable, "-m", "llmdctl", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise RuntimeError(f"llmdctl up {profile} failed ({r.returncode}): {r.stderr.strip()[-1500:]}")
    state = json.loads((home / "state.json").read_text())
    return Stack(home, env, state)


@dataclass
class Record:
    """What happened to one request."""

    label: str
    sent_at: float
    status: int | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    started: bool = False  # a content chunk reached the client
    done: bool = False  # the answer ended properly ([DONE], or a whole JSON answer)
    error_event: bool = False  # the stream ended with an error event (cut)
    retry_after: bool = False
    error: str | None = None
    endpoint: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.done

    @property
    def refused(self) -> bool:
        return self.status == 429 and self.retry_after

    @property
    def cut(self) -> bool:
        return self.started and not self.done

    @property
    def lost(self) -> bool:
        """Neither answered nor cleanly refused, and not cut after it started (that is `cut`)."""
        return not self.ok and not self.refused and not self.cut


async def stream_completion(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    label: str,
    headers: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> Record:
    """POST a streaming completion and record it; never raises for what the server does."""
    rec = Record(label, time.perf_counter())
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                "POST", url + "/v1/completions", json={**body, "stream": True}, headers=headers or {}
            ) as r:
                rec.status = r.status_code
                rec.endpoint = r.headers.get("x-llmd-endpoint")
                rec.retry_after = "retry-after" in r.headers
                if r.status_code != 200:
                    raw = await r.aread()
                    rec.error = raw[:200].decode("utf-8", "replace")
                else:
                    async for line in r.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        if line == "data: [DONE]":
                            rec.done = True
                        elif '"error"' in line[:20]:
                            rec.error_event = True
                            rec.error = line[6:206]
                        elif not rec.started:
                            rec.started = True
                            rec.ttft_s = time.perf_counter() - rec.sent_at
    except (httpx.HTTPError, TimeoutError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
    rec.total_s = time.perf_counter() - rec.sent_at
    return rec


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (0-1) of `values`, None when empty."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


def summarize(records: list[Record]) -> dict[str, Any]:
    ttfts = [r.ttft_s for r in records if r.ok and r.ttft_s is not None]
    return {
        "n": len(records),
        "ok": sum(r.ok for r in records),
        "refused_429": sum(r.refused for r in records),
        "refused_without_retry_after": sum(r.status == 429 and not r.retry_after for r in records),
        "cut": sum(r.cut for r in records),
        "lost": sum(r.lost for r in records),
        "ttft_p50_s": pct(ttfts, 0.5),
        "ttft_p90_s": pct(ttfts, 0.9),
        "ttft_p99_s": pct(ttfts, 0.99),
        "lost_examples": [asdict(r) for r in records if r.lost][:3],
    }


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


@dataclass
class Timeline:
    """Events of a run with their time from its start (printed with the results)."""

    t0: float = field(default_factory=time.perf_counter)
    events: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, what: str) -> None:
        self.events.append((round(time.perf_counter() - self.t0, 3), what))
