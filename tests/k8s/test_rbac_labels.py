"""Least privilege, labels on everything, and selectors that pick exactly the right pods."""

from __future__ import annotations

import pytest

from llmdctl.k8s.render import MANAGED_BY, STACK_LABEL, RenderOptions, render
from llmdctl.profile import list_profiles, load_profile
from tests.k8s.k8s_profiles import built_profiles

CASES = [(k, p) for k, p in built_profiles().items()]
READ = {"get", "list", "watch"}


def _renders():
    for key, profile in CASES:
        for opts in (RenderOptions(), RenderOptions(gateway=True), RenderOptions(target="kube", namespace="team-a")):
            if key == "vllm":
                opts.gpus = opts.target == "kind"
            yield key, render(profile, opts)
    for path in list_profiles():
        yield path.stem, render(load_profile(path.stem), RenderOptions(gateway=True))


@pytest.mark.parametrize("key,rendered", list(_renders()), ids=lambda x: x if isinstance(x, str) else "")
def test_rbac_is_namespaced_read_only_and_minimal(key, rendered):
    kinds = {o["kind"] for o in rendered.objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for role in rendered.by_kind("Role"):
        assert role["metadata"]["namespace"] == rendered.namespace
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert set(rule["verbs"]) <= READ
            assert not {"secrets", "configmaps", "pods/exec", "pods/portforward"} & set(rule["resources"])
    router_role = rendered.find("Role", f"{rendered.stack}-router")
    assert router_role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    for binding in rendered.by_kind("RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert [s["namespace"] for s in binding["subjects"]] == [rendered.namespace]
        sa = binding["subjects"][0]["name"]
        assert any(
            d["spec"]["template"]["spec"].get("serviceAccountName") == sa for d in rendered.by_kind("Deployment")
        )
    for dep in rendered.by_kind("Deployment"):
        spec = dep["spec"]["template"]["spec"]
        if dep["metadata"]["labels"]["app.kubernetes.io/component"] == "model-server":
            assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec


@pytest.mark.parametrize("key,rendered", list(_renders()), ids=lambda x: x if isinstance(x, str) else "")
def test_everything_is_labelled_and_selectors_pick_exactly_the_model_servers(key, rendered):
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY] == "llmdctl" and labels[STACK_LABEL] == rendered.stack, obj["metadata"]["name"]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == rendered.namespace
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in rendered.by_kind("Deployment")}
    for labels in pods.values():
        assert labels[MANAGED_BY] == "llmdctl" and labels[STACK_LABEL] == rendered.stack

    def selected(selector):
        return {n for n, labels in pods.items() if all(labels.get(k) == v for k, v in selector.items())}

    servers = {n for n, labels in pods.items() if labels["app.kubernetes.io/component"] == "model-server"}
    assert servers and len(servers) == len(rendered.by_kind("Deployment")) - (2 if rendered.by_kind("Gateway") else 1)
    pool = rendered.by_kind("InferencePool")[0]
    assert selected(pool["spec"]["selector"]["matchLabels"]) == servers  # not the router, not the EPP
    router = rendered.find("Deployment", f"{rendered.stack}-router")
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    router_selector = dict(t.split("=") for t in args[args.index("--selector") + 1].split(","))
    assert router_selector == pool["spec"]["selector"]["matchLabels"]
    for dep in rendered.by_kind("Deployment"):  # every Deployment selects its own pods only
        assert selected(dep["spec"]["selector"]["matchLabels"]) == {dep["metadata"]["name"]}
    for svc in rendered.by_kind("Service"):
        assert len(selected(svc["spec"]["selector"])) == 1
    for name in servers:
        assert pods[name]["llm-d.ai/inferenceServing"] == "true" and pods[name]["llm-d.ai/role"] in (
            "both",
            "prefill",
            "decode",
            "encode",  # E/P/D encoder pods (llm-d's encode-filter selects llm-d.ai/role=encode)
        )
    picker = pool["spec"]["endpointPickerRef"]
    assert any(
        s["metadata"]["name"] == picker["name"] and picker["port"]["number"] in [p["port"] for p in s["spec"]["ports"]]
        for s in rendered.by_kind("Service")
    )
    for route in rendered.by_kind("HTTPRoute"):
        ref = route["spec"]["rules"][0]["backendRefs"][0]
        assert (ref["group"], ref["kind"], ref["name"]) == (
            "inference.networking.k8s.io",
            "InferencePool",
            pool["metadata"]["name"],
        )
        assert route["spec"]["parentRefs"][0]["name"] == rendered.by_kind("Gateway")[0]["metadata"]["name"]


def test_two_stacks_in_one_namespace_do_not_select_each_other():
    a = render(built_profiles()["aggregated"], RenderOptions(stack="a"))
    b = render(built_profiles()["aggregated"], RenderOptions(stack="b"))
    pool_a = a.by_kind("InferencePool")[0]["spec"]["selector"]["matchLabels"]
    for dep in b.by_kind("Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert not all(labels.get(k) == v for k, v in pool_a.items())


def test_model_server_pods_carry_the_label_the_router_groups_speeds_by():
    """A pool's pods learn one speed together (router_lite.speeds pools the TTFT fits by this label): on a
    cluster as on a local stack, every model-server pod carries its pool's name under it."""
    from llmdctl.k8s.render import POOL_GROUP_LABEL
    from router_lite.speeds import GROUP_LABEL

    assert POOL_GROUP_LABEL == GROUP_LABEL
    rendered = render(load_profile("heterogeneous"), RenderOptions())
    pools = set()
    for dep in rendered.by_kind("Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") == "model-server":
            pools.add(labels[GROUP_LABEL])
    assert pools == {p.name for p in load_profile("heterogeneous").pools}
