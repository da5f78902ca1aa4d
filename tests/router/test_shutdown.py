"""SIGTERM stops the router promptly, whatever is open: dead pods being scraped, KV-event sockets to dead
publishers, `/debug/decisions` readers and proxied streams that never end.

The hang this guards against: uvicorn waits for every open response before its lifespan shutdown (an SSE
stream never ends by itself), and the lifespan shutdown awaited scrape tasks whose cancellation Python 3.11's
`asyncio.wait_for` could swallow when a connection attempt to a dead pod completed in the same loop turn.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from router_lite.datalayer import DataLayer, EndpointSpec
from tests.conftest import free_port_block
from tests.router.procs import MODEL, router

EXIT_BOUND_S = 10.0  # the router's own budget is ~1.2 s (1 s grace for open responses); the bug guarded is a hang


def test_data_layer_stop_is_bounded_with_many_dead_pods():
    """Many dead endpoints scraped back to back: every stop ends every scrape task, quickly (5 tries: the
    lost-cancellation race hit about one try in two with 50 endpoints before the fix)."""
    logging.getLogger("router_lite.datalayer").setLevel(logging.ERROR)

    async def one_try() -> tuple[float, int]:
        base = free_port_block(50)  # nothing listens there: every connect is refused at once
        dl = DataLayer(
            [EndpointSpec(f"127.0.0.1:{base + i}") for i in range(50)], scrape_interval_s=0.001, health_interval_s=0.0
        )
        await dl.start()
        await asyncio.sleep(0.15)
        tasks = [s.task for s in dl.states.values()]
        t0 = time.monotonic()
        await dl.stop()
        return time.monotonic() - t0, sum(not t.done() for t in tasks)

    async def scenario() -> None:
        for _ in range(5):
            took, alive = await one_try()
            assert alive == 0 and took < 5.0, f"stop took {took:.2f}s and left {alive} scrape tasks running"

    asyncio.run(asyncio.wait_for(scenario(), 30))


class StallingPod:
    """A model server that answers health and metrics, and streams one chunk of a completion, then stalls."""

    def __init__(self) -> None:
        self.release = threading.Event()

        pod = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                body = b"ok" if self.path == "/health" else b""
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                data = b'data: {"choices": [{"text": "first"}]}\n\n'
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                pod.release.wait(30)  # never finishes on its own within the test
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_sigterm_exits_promptly_with_dead_pods_sse_readers_and_a_stalled_stream():
    pod = StallingPod()
    dead = free_port_block(20)
    entries = [{"address": pod.address, "name": "stalling"}] + [
        {"address": f"127.0.0.1:{dead + i}", "kvEvents": {"endpoint": f"tcp://127.0.0.1:{dead + i}", "bind": False}}
        for i in range(20)
    ]
    try:
        with router(entries, args=["--scrape-interval-ms", "1"]) as r:
            sse_ended = threading.Event()
            sse_started = threading.Event()

            def read_decisions() -> None:
                try:
                    with httpx.stream("GET", r.url + "/debug/decisions", timeout=httpx.Timeout(5.0, read=30.0)) as resp:
                        for _ in resp.iter_bytes():
                            sse_started.set()
                except httpx.HTTPError:
                    pass
                sse_ended.set()

            readers = [threading.Thread(target=read_decisions, daemon=True) for _ in range(2)]
            for t in readers:
                t.start()
            assert sse_started.wait(5), "the decision stream did not open"

            got_first = threading.Event()
            received: list[bytes] = []

            def stream_completion() -> None:
                body = {"model": MODEL, "prompt": "hello", "stream": True, "max_tokens": 8}
                try:
                    with httpx.stream(
                        "POST", r.url + "/v1/completions", json=body, timeout=httpx.Timeout(5.0, read=30.0)
                    ) as resp:
                        received.append(resp.headers["x-llmd-endpoint"].encode())
                        for chunk in resp.iter_bytes():
                            received.append(chunk)
                            got_first.set()
                except httpx.HTTPError:
                    pass

            streamer = threading.Thread(target=stream_completion, daemon=True)
            streamer.start()
            assert got_first.wait(10), "the stalled pod's first chunk never reached the client"
            time.sleep(0.3)  # the dead pods have been failing scrapes for a while now

            t0 = time.monotonic()
            r.proc.send_signal(signal.SIGTERM)
            r.proc.wait(10)
            took = time.monotonic() - t0
            out = r.proc.stdout.read().decode(errors="replace") if r.proc.stdout else ""
            assert took < EXIT_BOUND_S, f"router took {took:.2f}s to exit after SIGTERM:\n{out[-2000:]}"
            assert sse_ended.wait(2), "the decision stream was not ended"
            assert "Traceback" not in out, out[-3000:]
            streamer.join(5)
            text = b"".join(received).decode()
            assert text.startswith(pod.address) and '"text": "first"' in text
            # The cut is said in-band, as an OpenAI error event, not a silent end of the stream.
            assert text.rstrip().endswith('"code": 503}}') and "the router is shutting down" in text
    finally:
        pod.close()


def test_sigterm_exits_promptly_when_every_pod_is_gone():
    """The `llmdctl down` case: pods killed first, then the router, with a decision reader attached."""
    dead = free_port_block(8)
    entries = [
        {"address": f"127.0.0.1:{dead + i}", "kvEvents": {"endpoint": f"tcp://127.0.0.1:{dead + i}", "bind": False}}
        for i in range(8)
    ]
    with router(entries) as r:
        opened = threading.Event()

        def read_decisions() -> None:
            try:
                with httpx.stream(
                    "GET", r.url + "/debug/decisions?history=5", timeout=httpx.Timeout(5.0, read=30.0)
                ) as resp:
                    for _ in resp.iter_bytes():
                        opened.set()
            except httpx.HTTPError:
                pass

        threading.Thread(target=read_decisions, daemon=True).start()
        assert opened.wait(5)
        assert (
            httpx.post(r.url + "/v1/completions", json={"model": MODEL, "prompt": "x"}, timeout=10).status_code == 503
        )
        t0 = time.monotonic()
        r.proc.send_signal(signal.SIGTERM)
        r.proc.wait(10)
        assert time.monotonic() - t0 < EXIT_BOUND_S
