"""A router reachable from the network without an API key refuses admin changes (403), says so at start,
and still serves reads; a key, or a loopback bind, enables them."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from router_lite.app_state import RouterSettings
from router_lite.datalayer.discovery import EndpointSpec
from router_lite.gateway import build_app, is_loopback
from router_lite.server import warn_if_admin_exposed


def _client(host: str, api_key: str | None = None) -> TestClient:
    # No lifespan (no `with`): nothing scrapes; the admin handlers answer before touching endpoints.
    return TestClient(build_app(RouterSettings(host=host, api_key=api_key, endpoints=[EndpointSpec("127.0.0.1:9")])))


@pytest.mark.parametrize("path,body", [("/admin/config", "not: [valid"), ("/admin/profile", '{"profile": "precise-prefix-cache"}')])
def test_non_loopback_without_key_refuses_admin_posts(path, body):
    c = _client("0.0.0.0")
    r = c.post(path, content=body)
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["type"] == "permission_error" and err["code"] == "admin_disabled" and "--api-key" in err["message"]
    assert c.get("/admin/config").status_code == 200  # reads stay open


def test_a_key_or_loopback_enables_admin_posts():
    keyed = _client("0.0.0.0", api_key="s3cret")
    assert keyed.post("/admin/config", content="not: [valid").status_code == 401
    r = keyed.post("/admin/config", content="not: [valid", headers={"authorization": "Bearer s3cret"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
    r = _client("127.0.0.1").post("/admin/config", content="not: [valid")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"


def test_start_warns_when_admin_is_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="router_lite"):
        assert warn_if_admin_exposed(RouterSettings(host="0.0.0.0")) is True
        assert not warn_if_admin_exposed(RouterSettings(host="0.0.0.0", api_key="k"))
        assert not warn_if_admin_exposed(RouterSettings(host="::1"))
    assert len(caplog.records) == 1 and "admin changes are disabled" in caplog.records[0].getMessage()


def test_loopback_detection():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "router.example"))


def test_router_serve_reads_its_key_from_the_environment(monkeypatch):
    """What the Kubernetes Deployment relies on: the Secret arrives as LLMD_ROUTER_API_KEY."""
    import httpx

    from tests.router.procs import router

    monkeypatch.setenv("LLMD_ROUTER_API_KEY", "from-env")
    with router([{"address": "127.0.0.1:9", "name": "nowhere"}]) as rt:
        assert httpx.get(rt.url + "/admin/config").status_code == 401
        assert httpx.get(rt.url + "/admin/config", headers={"authorization": "Bearer from-env"}).status_code == 200
