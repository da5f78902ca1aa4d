"""The gateway's bookkeeping per request leg, driven in-process over ASGI against real simulator pods:
the prefill leg is released when it ends (not when decode ends), a client that disconnects before the relay
starts still releases the pod connection and the scheduler's count exactly once, the router keys requests
by its own id (the client's x-request-id is forwarded and recorded), and a cancelled `Backend.post` closes
its connection."""

from __future__ import annotations

import asyncio
import json

import pytest

from router_lite.app_state import RouterSettings, RouterState
from router_lite.config import load_config
from router_lite.datalayer.discovery import EndpointSpec
from router_lite.gateway import build_app
from router_lite.proxy import Backend
from tests.router.procs import MODEL, sim_group, words

pytestmark = pytest.mark.timeout(90)

PD_CONFIG = {
    "apiVersion": "llm-d.ai/v1alpha1",
    "kind": "EndpointPickerConfig",
    "plugins": [
        {"type": "prefill-filter"},
        {"type": "decode-filter"},
        {"type": "active-request-scorer"},
        {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 16}},
        {"type": "disagg-profile-handler", "parameters": {"prefillDeciderPluginName": "prefix-based-pd-decider"}},
    ],
    "schedulingProfiles": [
        {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "active-request-scorer"}]},
        {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "active-request-scorer"}]},
    ],
}


@pytest.fixture(scope="module")
def pd_pods():
    with sim_group(
        2, role=["prefill", "decode"], events=False, time_scale=1.0
    ) as sims:  # real pacing: streams stay open
        yield sims


def _state(pods) -> RouterState:
    specs = [EndpointSpec(address=p.address(), labels=(("llm-d.ai/role", p.role),)) for p in pods]
    return RouterState(
        RouterSettings(endpoints=specs, config=load_config(PD_CONFIG, origin="test"), tokenizer="builtin")
    )


def _scope(path: str, headers: dict[str, str]) -> dict:
    raw = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in headers.items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
    }


async def _with_router(pods, body):
    """Start a router state (scraping the pods) around `body(app, state)`."""
    state = _state(pods)
    app = build_app(state=state)
    await state.start()
    try:
        for _ in range(200):
            if len(state.datalayer.candidates()) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(state.datalayer.candidates()) == 2
        return await body(app, state)
    finally:
        await state.stop()


def _active(state: RouterState) -> dict[str, int]:
    return dict(state.scheduler.plugins["active-request-scorer"].counts)


def _body(stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "prompt": words("legs", 200), "max_tokens": 8, "stream": stream}).encode()


def test_prefill_leg_is_released_when_it_ends_not_when_decode_ends(pd_pods):
    prefill, decode = pd_pods

    async def body(app, state):
        seen: dict = {}
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": _body(True), "more_body": False}
            await asyncio.Event().wait()  # the client stays connected

        async def send(msg):
            if msg["type"] == "http.response.start":
                seen["headers"] = {k.decode(): v.decode() for k, v in msg["headers"]}
            elif msg["type"] == "http.response.body" and "mid_stream" not in seen:
                seen["mid_stream"] = _active(state)  # the decode stream is still being relayed

        await app(_scope("/v1/completions", {}), receive, send)
        return seen, _active(state)

    seen, after = asyncio.run(_with_router(pd_pods, body))
    assert seen["headers"]["x-llmd-prefill-endpoint"] == prefill.address()  # it really was a P/D request
    assert seen["mid_stream"] == {decode.address(): 1}
    assert after == {}


def test_client_gone_before_the_relay_starts_releases_everything_once(pd_pods):
    async def body(app, state):
        finished: list[str] = []
        real = state.scheduler.on_finished

        def counting(req, ep, **kw):
            finished.append(ep.key)
            real(req, ep, **kw)

        state.scheduler.on_finished = counting
        upstreams: list = []
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": _body(True), "more_body": False}
            return {"type": "http.disconnect"}  # gone before a single body byte was relayed

        async def send(msg):
            if msg["type"] == "http.response.start":
                upstreams.extend(state.open_upstreams)
                await asyncio.sleep(0.3)  # the disconnect listener cancels the response meanwhile

        await app(_scope("/v1/completions", {}), receive, send)
        await asyncio.sleep(0.05)
        return finished, upstreams, _active(state), len(state.open_upstreams)

    finished, upstreams, active, still_open = asyncio.run(_with_router(pd_pods, body))
    prefill, decode = pd_pods
    assert sorted(finished) == sorted([prefill.address(), decode.address()])  # each leg once
    assert active == {} and still_open == 0
    assert len(upstreams) == 1 and upstreams[0]._conn.transport.is_closing()  # the pod connection was closed


def test_router_keys_requests_by_its_own_id_and_records_the_clients(pd_pods):
    async def body(app, state):
        got = []
        for _ in range(2):
            msgs = iter([{"type": "http.request", "body": _body(False), "more_body": False}])
            headers: dict = {}

            async def receive():
                try:
                    return next(msgs)
                except StopIteration:
                    await asyncio.Event().wait()

            async def send(msg):
                if msg["type"] == "http.response.start":
                    headers.update({k.decode(): v.decode() for k, v in msg["headers"]})
                    headers["status"] = msg["status"]

            await app(_scope("/v1/completions", {"x-request-id": "same-id"}), receive, send)
            got.append(headers)
        decisions = [json.loads(b) for b in state.hub.history(2)]
        return got, decisions

    got, decisions = asyncio.run(_with_router(pd_pods, body))
    assert [h["status"] for h in got] == [200, 200]
    assert [h["x-request-id"] for h in got] == ["same-id", "same-id"]  # the client's id comes back
    assert [d["client_request_id"] for d in decisions] == ["same-id", "same-id"]
    ids = [d["request_id"] for d in decisions]
    assert len(set(ids)) == 2 and "same-id" not in ids


def test_cancelled_post_closes_its_connection():
    async def main():
        closed = asyncio.Event()

        async def silent(reader, writer):  # accepts the request, never answers
            await reader.read()  # returns at EOF: the router closed the connection
            closed.set()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            backend = Backend(f"127.0.0.1:{port}", 2.0, 30.0)
            task = asyncio.create_task(backend.post("/v1/completions", b"{}", {}))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(closed.wait(), 5)
        finally:
            server.close()

    asyncio.run(main())
