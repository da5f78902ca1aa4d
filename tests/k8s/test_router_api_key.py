"""The in-cluster router binds 0.0.0.0, so it reads an API key from a Secret (LLMD_ROUTER_API_KEY). A plain
render only references the Secret (two renders are byte-identical: no key churn in GitOps); `up` creates it
once with a random key, and apply never replaces a key that a running stack already has."""

from __future__ import annotations

from llmdctl.k8s.apply import RecordingClient, apply_objects
from llmdctl.k8s.render import RenderOptions, ensure_api_key_secret, render, router_api_key_secret_name
from llmdctl.k8s.validate import validate_objects
from tests.k8s.k8s_profiles import built_profiles


def _key(rendered) -> str:
    return rendered.find("Secret", router_api_key_secret_name(rendered.stack))["stringData"]["api-key"]


def test_render_references_the_secret_and_up_creates_a_random_key_once():
    profile = built_profiles()["aggregated"]
    for target in ("kind", "kube"):
        rendered = render(profile, RenderOptions(target=target))
        assert rendered.by_kind("Secret") == []  # referenced, not generated
        assert any(router_api_key_secret_name(rendered.stack) in n for n in rendered.notes)
        router = rendered.find("Deployment", f"{rendered.stack}-router")
        env = {e["name"]: e for e in router["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["LLMD_ROUTER_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": router_api_key_secret_name(rendered.stack), "key": "api-key"}
        up = ensure_api_key_secret(rendered)
        assert validate_objects(up.by_kind("Secret")) == []
        secret = up.find("Secret", router_api_key_secret_name(up.stack))
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llmdctl"
        assert len(_key(up)) >= 32
        kinds = [o["kind"] for o in up.objects]
        assert kinds.index("Secret") < kinds.index("Deployment")  # the key exists before the router starts
    assert _key(ensure_api_key_secret(render(profile))) != _key(ensure_api_key_secret(render(profile)))  # random
    pinned = render(profile, RenderOptions(router_api_key="pinned-key"))
    assert _key(pinned) == "pinned-key" and _key(ensure_api_key_secret(pinned)) == "pinned-key"


def test_apply_keeps_the_key_a_stack_already_has():
    profile = built_profiles()["aggregated"]
    client = RecordingClient()
    first = ensure_api_key_secret(render(profile, RenderOptions(target="kube")))
    second = ensure_api_key_secret(render(profile, RenderOptions(target="kube")))
    apply_objects(client, first.objects)
    apply_objects(client, second.objects)  # a second `up`: new random key rendered, old one kept
    stored = client.get("v1", "Secret", router_api_key_secret_name(first.stack), first.namespace)
    assert stored["stringData"]["api-key"] == _key(first) != _key(second)
