"""A bounded soak of a local stack under mixed traffic with faults (issue 18): prints what was lost (must be
nothing), how cut streams ended, how fast each faulty pod left (and came back into) rotation, p50/p99, the
router's memory and its KV-event receive loop after a malformed-frame barrage.

The stack is `llmdctl up` of the precise-prefix-cache profile reshaped into four one-pod pools (each its own
simulator process, so one can be faulted alone). Traffic: Poisson arrivals at `--rate` for `--duration`
seconds (at most `--max-requests`), a mix of streaming and non-streaming completions and chat, some sharing
prefixes. Faults, at fractions of the duration:
  0.15 kill   pod a (SIGKILL of its process: streams on it are cut, it stays dead)
  0.35 hang   pod b (SIGSTOP: it accepts connections and answers nothing), resumed (SIGCONT) at 0.55
  0.45 storm  pod c replaced by a simulator answering 503 to every request (timed from when it serves);
              a healthy one again at 0.70
  0.10-0.90   malformed KV-event frames to every pod's event socket (random bytes, wrong frame counts, deep
              nesting, wrong types), `--frames-per-s`
Before the traffic, `--fuzz N` hostile and malformed HTTP requests (bench/httpfuzz.py) go to the router and the
pods: no 5xx, every 4xx an OpenAI error object.
A request is lost when it got neither an answer nor a 429 with Retry-After and had not started streaming;
a started stream that was cut must end with an error event. Every wait is bounded (client timeout 120 s).

    python bench/soak.py [--duration 60] [--rate 12] [--max-requests 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stackload import REPO, Record, Stack, fmt, pct, stream_completion, summarize, up  # noqa: E402

POOLS = ("a", "b", "c", "d")


def soak_profile(path: Path, max_num_seqs: int) -> Path:
    doc = yaml.safe_load((REPO / "profiles" / "precise-prefix-cache.yaml").read_text())
    pool = doc["pools"][0]
    doc["name"] = "soak"
    doc["pools"] = [{**pool, "name": name, "replicas": 1, "max_num_seqs": max_num_seqs} for name in POOLS]
    path.write_text(yaml.safe_dump(doc))
    return path


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Monitor(threading.Thread):
    """Polls the router's /debug/endpoints every 50 ms: when each endpoint left and re-entered rotation."""

    def __init__(self, stack: Stack, t0: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.t0 = stack, t0
        self.transitions: list[tuple[float, str, bool, str | None]] = []
        self.kv: dict = {}
        self.stop = threading.Event()

    def run(self) -> None:
        last: dict[str, bool] = {}
        with httpx.Client(timeout=2, headers=self.stack.admin_headers()) as c:
            while not self.stop.is_set():
                try:
                    doc = c.get(self.stack.url + "/debug/endpoints").json()
                    now = time.perf_counter() - self.t0
                    for row in doc["endpoints"]:
                        if last.get(row["endpoint"]) != row["healthy"]:
                            last[row["endpoint"]] = row["healthy"]
                            self.transitions.append((round(now, 3), row["endpoint"], row["healthy"], row.get("reason")))
                    self.kv = doc["kv_events"]
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                self.stop.wait(0.05)

    def first(self, endpoint: str, healthy: bool, after: float) -> float | None:
        return next((t for t, ep, h, _ in self.transitions if ep == endpoint and h == healthy and t >= after), None)


class DecisionLog(threading.Thread):
    """Reads the router's decision stream: per decision, when it was published, the endpoints that survived
    the filters (scored), the one chosen and those that failed it — why a faulty pod was (not) tried."""

    def __init__(self, stack: Stack, t0: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.t0 = stack, t0
        self.rows: list[tuple[float, list[str], str | None, list[str]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        timeout = httpx.Timeout(5, read=None)
        while not self.stop.is_set():
            try:
                with (
                    httpx.Client(timeout=timeout, headers=self.stack.admin_headers()) as c,
                    c.stream("GET", self.stack.url + "/debug/decisions") as r,
                ):
                    for line in r.iter_lines():
                        if self.stop.is_set():
                            return
                        if not line.startswith("data: "):
                            continue
                        d = json.loads(line[6:])
                        self.rows.append(
                            (
                                round(time.perf_counter() - self.t0, 3),
                                [c["endpoint"] for c in d.get("candidates", [])],
                                (d.get("chosen") or {}).get("decode"),
                                [a["endpoint"] for a in d.get("attempts", [])],
                            )
                        )
            except (httpx.HTTPError, ValueError, KeyError):
                self.stop.wait(0.2)

    def window(self, endpoint: str, start: float, end: float) -> dict[str, object]:
        """Decisions of requests sent in [start, end]: a decision is published once its request was answered
        (after any retry), so those published up to 2 s later count too (the pod is out by then)."""
        rows = [r for r in self.rows if start <= r[0] <= end + 2.0]
        tried = [r[0] for r in rows if endpoint in r[3] or r[2] == endpoint]
        return {
            "decisions": len(rows),
            "candidate": sum(endpoint in r[1] for r in rows),
            "tried": len(tried),
            "first_try_s": round(tried[0] - start, 3) if tried else None,
        }


def malformed_frames(rng: random.Random, topic: bytes) -> list[list[bytes]]:
    """One of each kind of broken KV-event message a publisher could send."""
    import msgspec

    nested = b"\x91" * 5000 + b"\x01"  # msgpack: 5000 nested one-element arrays
    return [
        [topic, (1).to_bytes(8, "big"), rng.randbytes(rng.randint(1, 2048))],  # random payload
        [topic],  # too few frames
        [topic, b"\x00", b"\x90", b"extra"],  # wrong sequence width, too many frames
        [topic, (2).to_bytes(8, "big"), nested],  # hostile nesting
        [
            topic,
            (3).to_bytes(8, "big"),
            msgspec.msgpack.encode([1.5, [["BlockStored", "not-a-list", None, 1, 2, 3]], "rank"]),
        ],  # wrong types
        [topic, (4).to_bytes(8, "big"), msgspec.msgpack.encode({"ts": "x"})],
    ]


def kv_fuzzer(stack: Stack, stop: threading.Event, frames_per_s: float, seed: int, sent: list[int]) -> None:
    import zmq

    rng = random.Random(seed)
    ctx = zmq.Context.instance()
    socks = []
    for pod in stack.state["pods"]:
        if pod.get("kv_events"):
            s = ctx.socket(zmq.PUB)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(pod["kv_events"])  # the router binds each pod's event endpoint; a second publisher joins
            socks.append((s, pod["kv_topic"].encode()))
    time.sleep(0.3)  # slow joiner
    try:
        while not stop.is_set() and socks:
            for s, topic in socks:
                for msg in malformed_frames(rng, topic):
                    s.send_multipart(msg)
                    sent[0] += 1
            stop.wait(len(socks) * 6 / max(frames_per_s, 1.0))
    finally:
        for s, _ in socks:
            s.close()


async def whole_completion(client: httpx.AsyncClient, url: str, path: str, body: dict, label: str) -> Record:
    rec = Record(label, time.perf_counter())
    try:
        async with asyncio.timeout(120):
            r = await client.post(url + path, json=body)
        rec.status, rec.endpoint, rec.retry_after = (
            r.status_code,
            r.headers.get("x-llmd-endpoint"),
            "retry-after" in r.headers,
        )
        if r.status_code == 200:
            rec.done = isinstance(r.json().get("choices"), list)
            rec.ttft_s = time.perf_counter() - rec.sent_at
        else:
            rec.error = r.text[:200]
    except (httpx.HTTPError, TimeoutError, ValueError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
    rec.total_s = time.perf_counter() - rec.sent_at
    return rec


async def chat_stream(client: httpx.AsyncClient, url: str, body: dict, label: str) -> Record:
    """Streaming chat through the same recorder (the chunks differ, the ending rules do not)."""
    rec = Record(label, time.perf_counter())
    try:
        async with asyncio.timeout(120):
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                rec.status, rec.endpoint, rec.retry_after = (
                    r.status_code,
                    r.headers.get("x-llmd-endpoint"),
                    "retry-after" in r.headers,
                )
                if r.status_code != 200:
                    rec.error = (await r.aread())[:200].decode("utf-8", "replace")
                else:
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            rec.done = True
                        elif line.startswith('data: {"error"'):
                            rec.error_event, rec.error = True, line[6:206]
                        elif line.startswith("data: ") and not rec.started:
                            rec.started, rec.ttft_s = True, time.perf_counter() - rec.sent_at
    except (httpx.HTTPError, TimeoutError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
    rec.total_s = time.perf_counter() - rec.sent_at
    return rec


async def traffic(
    url: str, model: str, rate: float, duration: float, max_requests: int, seed: int, max_tokens: int
) -> list[Record]:
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    while len(arrivals) < max_requests:
        t += rng.expovariate(rate)
        if t > duration:
            break
        arrivals.append(t)
    prefixes = [" ".join(f"sys{p}w{j}" for j in range(120)) for p in range(6)]
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        t0 = time.perf_counter()

        async def one(i: int, at: float) -> Record:
            await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
            prompt = (
                prefixes[i % len(prefixes)]
                + f" question {i} "
                + " ".join(f"q{i}w{j}" for j in range(rng.randint(5, 40)))
            )
            n_tok = rng.randint(8, max_tokens)
            kind = i % 4
            if kind == 0:
                return await stream_completion(
                    c,
                    url,
                    {"model": model, "prompt": prompt, "max_tokens": n_tok, "ignore_eos": True},
                    "completion-stream",
                )
            if kind == 1:
                return await whole_completion(
                    c,
                    url,
                    "/v1/completions",
                    {"model": model, "prompt": prompt, "max_tokens": n_tok, "ignore_eos": True},
                    "completion",
                )
            messages = [
                {"role": "system", "content": prefixes[i % len(prefixes)]},
                {"role": "user", "content": prompt[-200:]},
            ]
            if kind == 2:
                return await chat_stream(
                    c,
                    url,
                    {"model": model, "messages": messages, "max_tokens": n_tok, "ignore_eos": True, "stream": True},
                    "chat-stream",
                )
            return await whole_completion(
                c,
                url,
                "/v1/chat/completions",
                {"model": model, "messages": messages, "max_tokens": n_tok, "ignore_eos": True},
                "chat",
            )

        return list(await asyncio.gather(*(one(i, at) for i, at in enumerate(arrivals))))


def _sim(port: int, extra: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sim_gpu", "serve", "--port", str(port), "--model", "sim-model", *extra],
        cwd=REPO,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=12.0, help="requests per second offered")
    ap.add_argument("--max-requests", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--frames-per-s", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--fuzz", type=int, default=2000, help="malformed/hostile HTTP requests to the router and pods first (0: none)"
    )
    ap.add_argument("--out", default="bench/results/soak.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llmdctl-soak-"))
    stack = up(
        str(soak_profile(work / "soak.yaml", args.max_num_seqs)), None, [], home=work / "home", endpoints=len(POOLS)
    )
    comps = {c["name"]: c for c in stack.state["components"]}
    pods = {p["pool"]: p for p in stack.state["pods"]}
    router_pid = comps["router"]["pid"]
    key = {name: f"127.0.0.1:{pods[name]['port']}" for name in POOLS}
    extra: list[subprocess.Popen] = []
    fuzz_result = None
    try:
        if args.fuzz:
            from httpfuzz import fuzz as http_fuzz

            targets = [stack.url] + [f"http://127.0.0.1:{pods[name]['port']}" for name in POOLS]
            rss_f0 = _rss_kib(router_pid) or 0
            fuzz_result = asyncio.run(http_fuzz(targets, stack.state["model"], args.fuzz, args.seed))
            fuzz_result["router_rss_kib"] = [rss_f0, _rss_kib(router_pid)]
            print(
                f"HTTP fuzz: {fuzz_result['sent']} requests ({fuzz_result['shapes']} shapes) to the router and 4 pods: "
                f"statuses {fuzz_result['statuses']}; router RSS {rss_f0 // 1024} -> "
                f"{(_rss_kib(router_pid) or 0) // 1024} MiB",
                flush=True,
            )
            for key_, n in fuzz_result["failures"].items():
                print(f"  FAIL {n:>4}x {key_}: {fuzz_result['examples'][key_]!r}")
    except BaseException:
        stack.down()
        raise
    t0 = time.perf_counter()
    monitor = Monitor(stack, t0)
    monitor.start()
    decisions = DecisionLog(stack, t0)
    decisions.start()
    stop_fuzz = threading.Event()
    sent = [0]
    kv_at_fuzz: dict = {}

    def start_fuzz() -> None:
        kv_at_fuzz.update(monitor.kv)
        kv_fuzzer(stack, stop_fuzz, args.frames_per_s, args.seed, sent)

    fuzz = threading.Timer(0.1 * args.duration, start_fuzz)
    rss0 = _rss_kib(router_pid)
    faults: dict[str, float] = {}

    def at(frac: float, name: str, action) -> threading.Timer:
        def fire() -> None:
            faults[name] = time.perf_counter() - t0
            action()

        timer = threading.Timer(frac * args.duration, fire)
        timer.start()
        return timer

    def storm_on() -> None:
        os.killpg(comps["sim-c"]["pid"], signal.SIGKILL)
        extra.append(
            _sim(
                pods["c"]["port"],
                ["--failure-injection-rate", "100", "--failure-types", "server_error"],
                work / "storm.log",
            )
        )

    def storm_off() -> None:
        extra[-1].kill()
        extra[-1].wait(10)
        extra.append(_sim(pods["c"]["port"], [], work / "healed.log"))

    timers = [
        at(0.15, "kill a", lambda: os.killpg(comps["sim-a"]["pid"], signal.SIGKILL)),
        at(0.35, "hang b", lambda: os.killpg(comps["sim-b"]["pid"], signal.SIGSTOP)),
        at(0.55, "resume b", lambda: os.killpg(comps["sim-b"]["pid"], signal.SIGCONT)),
        at(0.45, "storm c", storm_on),
        at(0.70, "heal c", storm_off),
        at(0.90, "stop fuzz", stop_fuzz.set),
    ]
    fuzz.start()
    try:
        records = asyncio.run(
            traffic(
                stack.url, stack.state["model"], args.rate, args.duration, args.max_requests, args.seed, args.max_tokens
            )
        )
        time.sleep(1.0)
        kv_end = dict(monitor.kv)
        rss1 = _rss_kib(router_pid)
        router_alive = _rss_kib(router_pid) is not None
        # the receive loop kept working through the barrage: pod d (never faulted) kept feeding the index
        d_batches = [kv.get("per_endpoint", {}).get(key["d"], {}).get("batches", 0) for kv in (kv_at_fuzz, kv_end)]
    finally:
        for tm in timers:
            tm.cancel()
        stop_fuzz.set()
        monitor.stop.set()
        decisions.stop.set()
        with_b = comps["sim-b"]["pid"]
        try:
            os.killpg(with_b, signal.SIGCONT)
        except ProcessLookupError:
            pass
        for p in extra:
            if p.poll() is None:
                p.kill()
        stack.down()

    summary = summarize(records)
    silent_cuts = [r for r in records if r.cut and not r.error_event]
    oks = [r.total_s for r in records if r.ok]
    exclusion = {
        "kill a": monitor.first(key["a"], False, faults.get("kill a", 1e9)),
        "hang b": monitor.first(key["b"], False, faults.get("hang b", 1e9)),
    }
    # c left rotation when its process was killed for the swap; the storm is timed from the storming server
    # re-entering rotation (its scrapes work) to the router ejecting it for its 503s
    storm_up = monitor.first(key["c"], True, faults.get("storm c", 1e9))
    storm_out = monitor.first(key["c"], False, storm_up) if storm_up is not None else None
    exclusion["storm c"] = storm_out
    if storm_up is not None:
        faults["storm c (serving)"] = storm_up
    back = {
        "resume b": monitor.first(key["b"], True, faults.get("resume b", 1e9)),
        "heal c": monitor.first(key["c"], True, faults.get("heal c", 1e9)),
    }
    print(
        f"\nsoak: {summary['n']} requests over {args.duration:g} s at {args.rate:g}/s, 4 pods, faults at "
        f"{json.dumps({k: round(v, 2) for k, v in faults.items()})}"
    )
    print(f"{'kind':<18} {'n':>5} {'ok':>5} {'429+RA':>6} {'cut':>4} {'lost':>4} {'p50 s':>7} {'p99 s':>7}")
    for label in ("completion-stream", "completion", "chat-stream", "chat"):
        s = summarize([r for r in records if r.label == label])
        lat = [r.total_s for r in records if r.label == label and r.ok]
        print(
            f"{label:<18} {s['n']:>5} {s['ok']:>5} {s['refused_429']:>6} {s['cut']:>4} {s['lost']:>4} "
            f"{fmt(pct(lat, 0.5)):>7} {fmt(pct(lat, 0.99)):>7}"
        )
    print(
        f"{'all':<18} {summary['n']:>5} {summary['ok']:>5} {summary['refused_429']:>6} {summary['cut']:>4} "
        f"{summary['lost']:>4} {fmt(pct(oks, 0.5)):>7} {fmt(pct(oks, 0.99)):>7}"
    )
    print(f"LOST: {summary['lost']} (must be 0); cut streams without an error event: {len(silent_cuts)} (must be 0)")
    starts = {"kill a": "kill a", "hang b": "hang b", "storm c": "storm c (serving)"}
    for name, t in exclusion.items():
        start = faults.get(starts[name])
        print(f"time to exclusion, {name}: {'never' if t is None or start is None else f'{t - start:.2f} s'}")
    for name, t in back.items():
        print(f"back in rotation after {name}: {'never' if t is None else f'{t - faults[name]:.2f} s'}")
    storm_window = (
        decisions.window(key["c"], storm_up, storm_out if storm_out is not None else storm_up + 10)
        if storm_up is not None
        else None
    )
    print(f"storm c, from serving to ejection (decision stream): {storm_window}")
    errs = monitor.kv.get("errors")
    print(
        f"KV fuzz: {sent[0]} malformed messages sent; router counted {errs} event errors; receive loops running: "
        f"{all(s['receiving'] for s in kv_end.get('sockets', []))}; pod d's event batches applied from the barrage's "
        f"start to the end: {d_batches[1] - d_batches[0]}"
    )
    print(f"router: alive {router_alive}; RSS {rss0 and rss0 // 1024} MiB -> {rss1 and rss1 // 1024} MiB")
    if summary["lost_examples"]:
        print("lost examples:", json.dumps(summary["lost_examples"], indent=1)[:1500])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "args": vars(args),
                "faults": faults,
                "summary": summary,
                "silent_cuts": len(silent_cuts),
                "p50_s": pct(oks, 0.5),
                "p99_s": pct(oks, 0.99),
                "exclusion_s": {
                    k: (v - faults[starts[k]]) if v is not None and starts[k] in faults else None
                    for k, v in exclusion.items()
                },
                "back_s": {k: (v - faults[k]) if v is not None else None for k, v in back.items()},
                "transitions": monitor.transitions,
                "storm_window": storm_window,
                "http_fuzz": fuzz_result,
                "kv_fuzz_sent": sent[0],
                "kv_errors": errs,
                "pod_d_batches_during_fuzz": d_batches[1] - d_batches[0],
                "records": [
                    [
                        round(r.sent_at - t0, 3),
                        r.label,
                        r.status,
                        r.endpoint,
                        round(r.total_s or 0, 3),
                        r.ok,
                        r.cut,
                        r.error,
                    ]
                    for r in records
                ],
                "router_rss_kib": [rss0, rss1],
                "router_alive": router_alive,
            },
            separators=(",", ":"),
        )
    )
    print(f"wrote {args.out}")
    fuzz_ok = fuzz_result is None or not fuzz_result["failures"]
    return 0 if summary["lost"] == 0 and not silent_cuts and fuzz_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
