"""The in-cluster router binds 0.0.0.0, so the stack carries a Secret with a random API key, the router reads
it from LLMD_ROUTER_API_KEY, and apply never replaces a key that a running stack already has."""

from __future__ import annotations

from llmdctl.k8s.apply import RecordingClient, apply_objects
from llmdctl.k8s.render import RenderOptions, render, router_api_key_secret_name
from llmdctl.k8s.validate import validate_objects
from tests.k8s.k8s_profiles import built_profiles


def _key(rendered) -> str:
    return rendered.find("Secret", router_api_key_secret_name(rendered.stack))["stringData"]["api-key"]


def test_render_has_a_valid_secret_with_a_random_key_the_router_reads():
    profile = built_profiles()["aggregated"]
    for target in ("kind", "kube"):
        rendered = render(profile, RenderOptions(target=target))
        assert validate_objects(rendered.by_kind("Secret")) == []
        secret = rendered.find("Secret", router_api_key_secret_name(rendered.stack))
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llmdctl"
        assert len(_key(rendered)) >= 32
        router = rendered.find("Deployment", f"{rendered.stack}-router")
        env = {e["name"]: e for e in router["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["LLMD_ROUTER_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": "api-key"}
        kinds = [o["kind"] for o in rendered.objects]
        assert kinds.index("Secret") < kinds.index("Deployment")  # the key exists before the router starts
    assert _key(render(profile)) != _key(render(profile))  # random, not a shipped constant
    assert _key(render(profile, RenderOptions(router_api_key="pinned-key"))) == "pinned-key"


def test_apply_keeps_the_key_a_stack_already_has():
    profile = built_profiles()["aggregated"]
    client = RecordingClient()
    first, second = render(profile, RenderOptions(target="kube")), render(profile, RenderOptions(target="kube"))
    apply_objects(client, first.objects)
    apply_objects(client, second.objects)  # a second `up`: new random key rendered, old one kept
    stored = client.get("v1", "Secret", router_api_key_secret_name(first.stack), first.namespace)
    assert stored["stringData"]["api-key"] == _key(first) != _key(second)
