"""The subscriber's bounds against a misbehaving router, and how it names the router's scheduler."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from llmdctl.tui.model import Model
from llmdctl.tui.subscriber import MAX_SSE_BUFFER, Subscriber, known_signatures, scheduler_name
from tests.tui.decisions import cand, decision


class _NoBlankLineRouter:
    """A router whose decision stream first sends more than MAX_SSE_BUFFER bytes with no event end, then one
    good event, then stays open; every other path is 404 (the poll just fails)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if not self.path.startswith("/debug/decisions"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                junk = b"data: " + b"x" * 65536
                for _ in range(MAX_SSE_BUFFER // 65536 + 2):
                    self.wfile.write(junk)
                good = decision("after-junk", "127.0.0.1:9001", [cand("127.0.0.1:9001", 0, 1.0)])
                self.wfile.write(b"\n\ndata: " + json.dumps(good).encode() + b"\n\n")
                self.wfile.flush()
                owner.release.wait(10)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_an_endless_event_is_dropped_and_counted_and_the_stream_goes_on() -> None:
    router = _NoBlankLineRouter()

    async def main() -> tuple[int, list[str]]:
        model = Model()
        sub = Subscriber(model, router.url, poll_s=5.0)
        await sub.start()
        try:
            deadline = time.monotonic() + 10
            while not any(r.request_id == "after-junk" for r in model.rows()) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return sub.sse_overflows, [r.request_id for r in model.rows()]
        finally:
            await sub.stop()

    try:
        overflows, ids = asyncio.run(main())
    finally:
        router.close()
    assert overflows == 1
    assert ids == ["after-junk"]  # the junk's tail (up to the blank line) is one bad event, not a decision


def test_profiles_sharing_a_scheduler_are_named_after_the_running_one() -> None:
    from llmdctl.profile import list_profiles
    from llmdctl.tui.app import profile_config

    names = [n for group in known_signatures().values() for n in group]
    assert sorted(names) == sorted(p.stem for p in list_profiles())  # derived from profiles/, none left out
    assert scheduler_name(profile_config("semantic-kv"), "semantic-kv") == "semantic-kv"
    assert scheduler_name(profile_config("semantic-kv")) == "precise-prefix-cache"  # first of its group
    assert scheduler_name(profile_config("round-robin"), "semantic-kv") == "round-robin"
