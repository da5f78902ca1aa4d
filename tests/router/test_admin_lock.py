"""Admin changes need a key on every bind (admin key, else API key; neither: 403 and a warning at start),
a JSON/YAML content type, no foreign Origin and, on loopback, a loopback Host; reads stay open."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from router_lite.app_state import RouterSettings
from router_lite.datalayer.discovery import EndpointSpec
from router_lite.gateway import build_app, is_loopback
from router_lite.server import warn_if_admin_exposed
from tests.helpers_configs import shipped_configs_dir

JSON = {"content-type": "application/json"}
YAML = {"content-type": "application/yaml"}
KEY = "k" * 24


def _client(host: str, api_key: str | None = None, admin_key: str | None = None) -> TestClient:
    # No lifespan (no `with`): nothing scrapes; the admin handlers answer before touching endpoints.
    settings = RouterSettings(
        host=host,
        api_key=api_key,
        admin_key=admin_key,
        endpoints=[EndpointSpec("127.0.0.1:9")],
        named_configs=str(shipped_configs_dir()),
    )
    return TestClient(build_app(settings), base_url="http://127.0.0.1:8000")


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
@pytest.mark.parametrize(
    "path,body", [("/admin/config", "not: [valid"), ("/admin/profile", '{"profile": "precise-prefix-cache"}')]
)
def test_without_any_key_admin_posts_are_refused_on_every_bind(host, path, body):
    """Issue 18: no key configured means no admin changes, loopback included (any web page reaches loopback)."""
    c = _client(host)
    r = c.post(path, content=body, headers=JSON)
    assert r.status_code == 403
    err = r.json()["error"]
    assert (
        err["type"] == "permission_error" and err["code"] == "admin_disabled" and "--admin-key-file" in err["message"]
    )
    assert c.get("/admin/config").status_code == 200  # reads stay open


def test_the_admin_key_or_the_api_key_enables_admin_posts():
    for c, key in ((_client("0.0.0.0", api_key="s3cret"), "s3cret"), (_client("127.0.0.1", admin_key=KEY), KEY)):
        assert c.post("/admin/config", content="not: [valid", headers=YAML).status_code == 401
        assert (
            c.post("/admin/config", content="not: [valid", headers={**YAML, "authorization": "Bearer nope"}).status_code
            == 401
        )
        r = c.post("/admin/config", content="not: [valid", headers={**YAML, "authorization": f"Bearer {key}"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
    # the admin key is not an API key: OpenAI routes of a keyless router stay open, admin needs the key
    assert _client("127.0.0.1", admin_key=KEY).get("/debug/endpoints").status_code == 200


@pytest.mark.parametrize(
    "headers,status,code",
    [
        ({"content-type": "text/plain"}, 415, "unsupported_media_type"),
        ({"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        ({}, 415, "unsupported_media_type"),
        ({**JSON, "origin": "http://evil.example"}, 403, "bad_origin"),
        ({**JSON, "origin": "null"}, 403, "bad_origin"),
        ({**JSON, "host": "evil.example:8000"}, 403, "bad_host"),
    ],
)
def test_cross_site_and_rebinding_shapes_are_refused_even_with_the_key(headers, status, code):
    """Issue 18: a browser's cross-site POST (simple content types, foreign Origin) or a DNS-rebound Host."""
    c = _client("127.0.0.1", admin_key=KEY)
    r = c.post(
        "/admin/profile", content='{"profile": "round-robin"}', headers={**headers, "authorization": f"Bearer {KEY}"}
    )
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    same_origin = {**JSON, "origin": "http://127.0.0.1:8000", "authorization": f"Bearer {KEY}"}
    assert c.post("/admin/profile", content='{"profile": "round-robin"}', headers=same_origin).status_code == 200
    assert c.get("/debug/endpoints", headers={"host": "evil.example:8000"}).status_code == 403


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../profiles/round-robin", "../../etc/hostname", "x.yaml", "/etc/hostname"]
)
def test_admin_profile_never_reads_a_file(name, tmp_path):
    """Issue 18: POST /admin/profile names configs of --named-configs only; nothing of any file comes back."""
    secret = tmp_path / "secret.yaml"
    secret.write_text("TOPSECRET-LINE\n")
    c = _client("127.0.0.1", admin_key=KEY)
    for candidate in (name, str(secret)):
        r = c.post("/admin/profile", json={"profile": candidate}, headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_profile"
        assert (
            "TOPSECRET" not in r.text
            and "root:" not in r.text
            and ("expected a config name" in r.text or "no config named" in r.text)
        )


def test_start_warns_when_admin_is_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="router_lite"):
        assert warn_if_admin_exposed(RouterSettings(host="0.0.0.0")) is True
        assert not warn_if_admin_exposed(RouterSettings(host="0.0.0.0", api_key="k"))
        assert not warn_if_admin_exposed(RouterSettings(host="::1", admin_key=KEY))
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
