"""Recorded request traces from a real vLLM server: the format, the workload shapes, and the recorder.

A trace is what the simulator's timing is judged against: per request, when it was sent, its prompt (token
ids, shared segments stored once), how many prompt tokens the server found cached, when each streamed chunk
arrived and how many tokens it carried, and which pod served it. `sim_gpu.replay` re-runs the same arrivals
through the simulated engine on a virtual clock and compares. Shapes cover what a step-time model must get
right: long shared prefixes (hits), many short requests (per-request costs), KV pressure (evictions),
mixed output lengths (decode batches that shrink), bursts (queueing, big batches) and two pods behind a router.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

FORMAT = "llmdctl-vllm-trace/1"


class TraceError(ValueError):
    """A trace file that cannot be used; one line naming the file and what is wrong."""


@dataclass
class TracedRequest:
    """One request as sent and as the server answered it. Times are seconds since the trace's start."""

    id: str
    arrival: float
    segments: list[str]  # prompt = concatenation of these segments' token ids
    max_tokens: int
    pod: int = 0  # index into Trace.pods
    prompt_tokens: int = 0
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens
    chunk_times: list[float] = field(default_factory=list)  # arrival of each streamed chunk with tokens
    chunk_tokens: list[int] = field(default_factory=list)  # tokens in each chunk
    finished: float | None = None
    error: str | None = None

    @property
    def ttft(self) -> float:
        return self.chunk_times[0] - self.arrival

    @property
    def e2e(self) -> float:
        return (self.finished if self.finished is not None else self.chunk_times[-1]) - self.arrival

    @property
    def output_tokens(self) -> int:
        return sum(self.chunk_tokens)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunk_times)


@dataclass
class Trace:
    """One recorded shape: the server's settings, the shared token segments, and the requests."""

    shape: str
    description: str
    server: dict[str, Any]  # model config, vllm flags (block_size, num_gpu_blocks, max_num_seqs, ...), version
    pods: list[str]
    segments: dict[str, list[int]]
    requests: list[TracedRequest]
    recorded_at: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    via_router: bool = False  # sent through the router (requests carry the pod it chose)

    def prompt(self, req: TracedRequest) -> list[int]:
        out: list[int] = []
        for s in req.segments:
            out.extend(self.segments[s])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Trace":
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise TraceError(f"{path}: cannot read a trace ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise TraceError(
                f"{path}: format: expected {FORMAT!r}, got {doc.get('format') if isinstance(doc, dict) else doc!r}"
            )
        try:
            reqs = [TracedRequest(**r) for r in doc["requests"]]
            return cls(
                shape=doc["shape"],
                description=doc.get("description", ""),
                server=doc["server"],
                pods=doc["pods"],
                segments={k: list(v) for k, v in doc["segments"].items()},
                requests=reqs,
                recorded_at=doc.get("recorded_at", ""),
                machine=doc.get("machine", {}),
                via_router=bool(doc.get("via_router", False)),
            )
        except (KeyError, TypeError) as exc:
            raise TraceError(f"{path}: missing or malformed field {exc}") from None


# ---- workload shapes -------------------------------------------------------------------------------------


@dataclass
class PlannedRequest:
    segments: list[str]
    max_tokens: int
    arrival: float


@dataclass
class Shape:
    """A workload: its segments and requests (arrival offsets), built from a seed."""

    name: str
    description: str
    segments: dict[str, list[int]]
    requests: list[PlannedRequest]
    via_router: bool = False

    def prompt_len(self, req: PlannedRequest) -> int:
        return sum(len(self.segments[s]) for s in req.segments)


def _ids(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(16, vocab) for _ in range(n)]


def _poisson(rng: random.Random, n: int, rate: float) -> list[float]:
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(round(t, 4))
    return out


def _grouped(
    name: str,
    desc: str,
    rng: random.Random,
    vocab: int,
    groups: int,
    prefix: int,
    suffix: int,
    count: int,
    rate: float,
    out_tokens: int,
    via_router: bool = False,
) -> Shape:
    segs = {f"g{g}": _ids(rng, prefix, vocab) for g in range(groups)}
    reqs = []
    for i, t in enumerate(_poisson(rng, count, rate)):
        segs[f"u{i}"] = _ids(rng, suffix, vocab)
        reqs.append(PlannedRequest([f"g{rng.randrange(groups)}", f"u{i}"], out_tokens, t))
    return Shape(name, desc, segs, reqs, via_router)


def _unique(
    name: str,
    desc: str,
    rng: random.Random,
    vocab: int,
    count: int,
    rate: float,
    lengths: tuple[int, int],
    out_tokens: int | list[int],
) -> Shape:
    """`count` prompts sharing nothing, lengths drawn from `lengths`, outputs fixed or drawn from a list."""
    segs, reqs = {}, []
    for i, t in enumerate(_poisson(rng, count, rate)):
        segs[f"u{i}"] = _ids(rng, rng.randrange(*lengths), vocab)
        out = rng.choice(out_tokens) if isinstance(out_tokens, list) else out_tokens
        reqs.append(PlannedRequest([f"u{i}"], out, t))
    return Shape(name, desc, segs, reqs)


def build_shapes(vocab: int, seed: int = 0) -> dict[str, Shape]:
    """The recorded shapes, sized for a small model on one CPU core per pod with 256 KV blocks of 32 tokens."""
    rng = random.Random(seed)
    shapes: dict[str, Shape] = {}
    shapes["long-prefix"] = _grouped(
        "long-prefix",
        "4 groups x 1536-token shared prefix + 32 own, 1.2 QPS, 24 out",
        rng,
        vocab,
        4,
        1536,
        32,
        40,
        1.2,
        24,
    )
    shapes["short-many"] = _unique(
        "short-many", "100 unique 24-160-token prompts, 8 QPS, 8-32 out", rng, vocab, 100, 8.0, (24, 160), [8, 16, 32]
    )
    shapes["kv-pressure"] = _grouped(
        "kv-pressure",
        "16 groups x 640-token prefix (~1.3x the KV) + 32 own, 4 QPS, 16 out",
        rng,
        vocab,
        16,
        640,
        32,
        80,
        4.0,
        16,
    )
    shapes["mixed-output"] = _unique(
        "mixed-output",
        "48 unique 128-1024-token prompts, 1.6 QPS, 4-160 out",
        rng,
        vocab,
        48,
        1.6,
        (128, 1024),
        [4, 16, 64, 160],
    )
    segs, reqs = {f"g{g}": _ids(rng, 512, vocab) for g in range(3)}, []
    for b in range(3):
        for j in range(12):
            name = f"u{b}_{j}"
            segs[name] = _ids(rng, rng.randrange(64, 384), vocab)
            reqs.append(PlannedRequest([f"g{j % 3}", name], 32, round(b * 6.0 + 0.002 * j, 4)))
    shapes["burst"] = Shape(
        "burst", "3 bursts of 12 requests (3 shared 512-token prefixes + 64-384 own), 32 out", segs, reqs
    )
    shapes["two-pods"] = _grouped(
        "two-pods",
        "2 pods behind the router: 8 groups x 768 prefix + 32 own, 4 QPS, 16 out",
        rng,
        vocab,
        8,
        768,
        32,
        80,
        4.0,
        16,
        True,
    )
    shapes["two-pods-b"] = _grouped(
        "two-pods-b",
        "2 pods behind the router: 6 groups x 512 prefix + 48 own, 3 QPS, 24 out",
        rng,
        vocab,
        6,
        512,
        48,
        60,
        3.0,
        24,
        True,
    )
    shapes["preemption"] = _unique(
        "preemption",
        "24 unique 500-700-token prompts, 12 QPS, 240 out: ~2x the KV, vLLM preempts",
        rng,
        vocab,
        24,
        12.0,
        (500, 700),
        240,
    )
    # Appended last so the shapes above keep their tokens (one rng, drawn in order).
    segs, reqs = {}, []
    for w in range(4):
        for j in range(8):
            name = f"w{w}_{j}"
            segs[name] = _ids(rng, rng.randrange(200, 900), vocab)
            reqs.append(PlannedRequest([name], 128, round(w * 9.0 + 0.3 * j, 4)))
    shapes["decode-waves"] = Shape(
        "decode-waves", "4 waves of 8 unique 200-900-token prompts (0.3 s apart, waves 9 s apart), 128 out", segs, reqs
    )
    # Two pods at a load where they are seldom busy at once: on a host with fewer cores than engines plus
    # serving processes, this is the two-pod shape whose timing is the pods' own (two-pods measures the host).
    shapes["two-pods-light"] = _grouped(
        "two-pods-light",
        "2 pods behind the router: 8 groups x 768 prefix + 32 own, 1 QPS, 16 out",
        rng,
        vocab,
        8,
        768,
        32,
        40,
        1.0,
        16,
        True,
    )
    return shapes


# ---- the recorder ----------------------------------------------------------------------------------------


async def _send(
    client: httpx.AsyncClient, url: str, model: str, prompt: list[int], req: TracedRequest, t0: float, timeout_s: float
) -> str | None:
    """Stream one request into `req`; returns the serving pod named by the router (x-llmd-endpoint), if any."""
    endpoint: str | None = None
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": req.max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    try:
        async with client.stream("POST", url + "/v1/completions", json=body, timeout=timeout_s) as resp:
            if resp.status_code != 200:
                req.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return None
            endpoint = resp.headers.get("x-llmd-endpoint")
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                doc = json.loads(data)
                now = time.monotonic() - t0
                if doc.get("usage"):
                    u = doc["usage"]
                    req.prompt_tokens = int(u.get("prompt_tokens") or 0)
                    req.cached_tokens = int(((u.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
                for ch in doc.get("choices") or []:
                    ids = ch.get("token_ids") or []
                    if ids:
                        req.chunk_times.append(round(now, 6))
                        req.chunk_tokens.append(len(ids))
        req.finished = round(time.monotonic() - t0, 6)
    except (httpx.HTTPError, ValueError) as exc:
        req.error = f"{type(exc).__name__}: {exc}"
    return endpoint


async def record_shape(
    shape: Shape,
    url: str,
    model: str,
    pods: list[str],
    server: dict[str, Any],
    timeout_s: float = 120.0,
    progress: Callable[[int, int], None] | None = None,
) -> Trace:
    """Send `shape` open-loop at its arrival offsets to `url` (a pod, or the router for via_router shapes)."""
    reqs = [
        TracedRequest(id=f"{shape.name}-{i}", arrival=0.0, segments=p.segments, max_tokens=p.max_tokens)
        for i, p in enumerate(shape.requests)
    ]
    trace = Trace(shape.name, shape.description, server, pods, shape.segments, reqs, via_router=shape.via_router)
    done = 0
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(trust_env=False, limits=limits) as client:
        t0 = time.monotonic()

        async def one(req: TracedRequest, plan: PlannedRequest) -> None:
            nonlocal done
            delay = plan.arrival - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            req.arrival = round(time.monotonic() - t0, 6)
            endpoint = await _send(client, url, model, trace.prompt(req), req, t0, timeout_s)
            if endpoint:
                req.pod = _pod_index(endpoint, pods)
            done += 1
            if progress:
                progress(done, len(reqs))

        await asyncio.gather(*(one(r, p) for r, p in zip(reqs, shape.requests)))
    trace.recorded_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return trace


def _pod_index(endpoint: str, pods: list[str]) -> int:
    """Which of `pods` (URLs) an `x-llmd-endpoint` header (host:port or URL) names."""
    hostport = endpoint.split("://")[-1].rstrip("/")
    for i, p in enumerate(pods):
        if p.split("://")[-1].rstrip("/") == hostport:
            return i
    return 0
