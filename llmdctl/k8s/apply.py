"""Applying a rendered stack through the Kubernetes API, waiting for it, and deleting exactly it again.

A narrow `KubeClient` (apply / get / list / delete on plain dicts) sits between this logic and the API:
`DynamicKubeClient` is the real one (kubernetes' DynamicClient, server-side apply with field manager
`llmdctl`); `RecordingClient` is an in-memory API server for tests that records every call and lets
Deployments become ready over successive polls, so the order of applies and the waits are observable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmdctl.k8s.render import MANAGED_BY, MANAGER, STACK_LABEL, sort_for_apply, stack_selector

FIELD_MANAGER = "llmdctl"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "RuntimeClass", "ClusterRole", "ClusterRoleBinding"}
# What `down` lists by label in the stack's namespace, deleted in this order (reverse dependency order).
NAMESPACED_KINDS = [
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("inference.networking.k8s.io/v1", "InferencePool"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("v1", "ServiceAccount"),
]
# Foreign objects that make a namespace "someone else's too": we never delete a namespace holding any.
_NAMESPACE_CONTENT = [
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
]
_IMPLICIT = {("ConfigMap", "kube-root-ca.crt")}  # created by Kubernetes in every namespace


class K8sError(RuntimeError):
    """A step against the cluster failed; the message is one line with what to do."""


class KubeClient(Protocol):
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None: ...
    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]: ...
    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None: ...


def ref(obj: dict[str, Any]) -> str:
    ns = obj["metadata"].get("namespace")
    return f"{obj['kind']}/{obj['metadata']['name']}" + (f" -n {ns}" if ns else "")


# -- the real client -------------------------------------------------------------------------------------


class DynamicKubeClient:
    """kubernetes' DynamicClient behind the KubeClient interface; kubeconfig context as given."""

    def __init__(self, context: str | None = None, api_client: Any = None) -> None:
        from kubernetes import config
        from kubernetes.dynamic import DynamicClient

        try:
            self._api = api_client or config.new_client_from_config(context=context)
        except Exception as exc:  # ConfigException, missing file: a user mistake, not a crash
            raise K8sError(
                f"kubeconfig{f' context {context!r}' if context else ''}: {exc}; check `kubectl config get-contexts`"
            ) from None
        self._dyn = DynamicClient(self._api)

    def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self._dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise K8sError(f"the cluster does not serve {api_version} {kind}; are its CRDs installed?") from None

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        res = self._resource(obj["apiVersion"], obj["kind"])
        out = res.server_side_apply(
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        return out.to_dict()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            out = self._resource(api_version, kind).get(namespace=namespace, label_selector=label_selector)
        except NotFoundError:
            return []
        return list(out.to_dict().get("items") or [])

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace, propagation_policy="Background")
        except NotFoundError:
            pass


# -- the recording client (tests, dry runs) --------------------------------------------------------------


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@dataclass
class RecordingClient:
    """An in-memory API server: records calls; Deployments/DaemonSets gain one ready replica per `get`.

    `never_ready` names workloads that never become ready; `gpus` is what nodes advertise as nvidia.com/gpu.
    """

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    never_ready: set[str] = field(default_factory=set)
    gpus: int = 0

    @staticmethod
    def _key(kind: str, name: str, namespace: str | None) -> tuple[str, str, str]:
        return (kind, namespace or "", name)

    def seed(self, obj: dict[str, Any]) -> None:
        """Put an object there without recording a call (what other people created)."""
        self.objects[self._key(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"))] = obj

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        import copy

        self.calls.append(("apply", ref(obj)))
        key = self._key(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"))
        stored = copy.deepcopy(obj)
        if obj["kind"] in ("Deployment", "DaemonSet"):
            stored["status"] = {
                "observedGeneration": 1,
                "readyReplicas": 0,
                "updatedReplicas": 0,
                "availableReplicas": 0,
            }
            stored["metadata"]["generation"] = 1
        if obj["kind"] == "CustomResourceDefinition":
            stored["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
        self.objects[key] = stored
        return stored

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.calls.append(("get", f"{kind}/{name}" + (f" -n {namespace}" if namespace else "")))
        obj = self.objects.get(self._key(kind, name, namespace))
        if obj is not None and kind in ("Deployment", "DaemonSet") and name not in self.never_ready:
            status = obj["status"]
            want = obj["spec"].get("replicas", 1) if kind == "Deployment" else 1
            n = min(want, status.get("readyReplicas", 0) + 1)
            status.update(readyReplicas=n, updatedReplicas=n, availableReplicas=n)
            if kind == "DaemonSet":
                status.update(desiredNumberScheduled=1, numberReady=n, updatedNumberScheduled=n, numberAvailable=n)
        return obj

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        self.calls.append(
            (
                "list",
                f"{kind}"
                + (f" -n {namespace}" if namespace else "")
                + (f" -l {label_selector}" if label_selector else ""),
            )
        )
        if kind == "Node":
            return [
                {
                    "metadata": {"name": "node"},
                    "status": {"allocatable": {"nvidia.com/gpu": str(self.gpus)} if self.gpus else {}},
                }
            ]
        return [
            o
            for (k, ns, _), o in self.objects.items()
            if k == kind
            and (namespace is None or ns == namespace)
            and _matches(o["metadata"].get("labels") or {}, label_selector)
        ]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        self.calls.append(("delete", f"{kind}/{name}" + (f" -n {namespace}" if namespace else "")))
        self.objects.pop(self._key(kind, name, namespace), None)


# -- apply -----------------------------------------------------------------------------------------------


def apply_objects(
    client: KubeClient, objects: list[dict[str, Any]], on_applied: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Server-side apply in dependency order (APPLY_ORDER); a Namespace that exists and is not ours is left alone."""
    applied = []
    for obj in sort_for_apply(objects):
        if obj["kind"] == "Namespace":
            existing = client.get("v1", "Namespace", obj["metadata"]["name"])
            if existing is not None and (existing["metadata"].get("labels") or {}).get(MANAGED_BY) != MANAGER:
                continue  # someone else's namespace: use it, never take it over (nor delete it at down)
        if (
            obj["kind"] == "Secret"
            and client.get("v1", "Secret", obj["metadata"]["name"], obj["metadata"].get("namespace")) is not None
        ):
            continue  # keep the existing key (a rendered Secret carries a fresh random one)
        try:
            client.apply(obj)
        except K8sError:
            raise
        except Exception as exc:
            raise K8sError(f"apply {ref(obj)}: {_api_message(exc)}") from None
        applied.append(obj)
        if on_applied:
            on_applied(obj)
    return applied


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            import json

            return json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            return str(body)[:300]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def install_crds(client: KubeClient, crds: list[dict[str, Any]], timeout_s: float = 60, poll_s: float = 1.0) -> None:
    """Apply CRDs (labelled managed-by llmdctl, no stack label: they are shared) and wait until established."""
    for crd in crds:
        crd = {
            **crd,
            "metadata": {**crd["metadata"], "labels": {**(crd["metadata"].get("labels") or {}), MANAGED_BY: MANAGER}},
        }
        client.apply(crd)
    deadline = time.monotonic() + timeout_s
    pending = [c["metadata"]["name"] for c in crds]
    while pending:
        pending = [
            n for n in pending if not _established(client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", n))
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise K8sError(f"CRDs not established after {timeout_s:.0f}s: {', '.join(pending)}")
        time.sleep(poll_s)


def _established(crd: dict[str, Any] | None) -> bool:
    conds = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)


def missing_crds(client: KubeClient, crds: list[dict[str, Any]]) -> list[str]:
    return [
        c["metadata"]["name"]
        for c in crds
        if client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", c["metadata"]["name"]) is None
    ]


# -- waits -----------------------------------------------------------------------------------------------


@dataclass
class RolloutState:
    name: str
    kind: str
    ready: int
    desired: int

    @property
    def done(self) -> bool:
        return self.ready >= self.desired


def rollout_state(obj: dict[str, Any] | None, kind: str, name: str) -> RolloutState:
    if obj is None:
        return RolloutState(name, kind, 0, 1)
    status = obj.get("status") or {}
    if kind == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        ready = min(int(status.get("numberReady") or 0), int(status.get("updatedNumberScheduled") or 0))
        return RolloutState(name, kind, ready, max(desired, 1))
    desired = int((obj.get("spec") or {}).get("replicas", 1))
    generation = (obj.get("metadata") or {}).get("generation")
    if generation is not None and (status.get("observedGeneration") or 0) < generation:
        return RolloutState(name, kind, 0, desired)
    ready = min(
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        int(status.get("readyReplicas") or 0),
    )
    return RolloutState(name, kind, ready, desired)


def wait_rollouts(
    client: KubeClient,
    objects: list[dict[str, Any]],
    timeout_s: float = 600,
    poll_s: float = 2.0,
    progress: Callable[[RolloutState], None] | None = None,
) -> list[RolloutState]:
    """Poll every Deployment/DaemonSet until all replicas are updated, available and ready, or time out.

    On timeout the error names each workload still waiting and why its pods are not ready (image pull,
    crash loop, unschedulable...), which is what a user would otherwise dig out with kubectl describe.
    """
    workloads = [
        (o["apiVersion"], o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
        for o in objects
        if o["kind"] in ("Deployment", "DaemonSet")
    ]
    deadline = time.monotonic() + timeout_s
    states: dict[str, RolloutState] = {}
    while True:
        for api, kind, name, ns in workloads:
            if name in states and states[name].done:
                continue
            st = rollout_state(client.get(api, kind, name, ns), kind, name)
            states[name] = st
            if progress:
                progress(st)
        waiting = [states[w[2]] for w in workloads if not states[w[2]].done]
        if not waiting:
            return [states[w[2]] for w in workloads]
        if time.monotonic() > deadline:
            why = []
            for st in waiting:
                obj = next(o for o in objects if o["metadata"]["name"] == st.name and o["kind"] == st.kind)
                reason = pod_problems(client, obj)
                why.append(f"{st.kind}/{st.name} {st.ready}/{st.desired} ready" + (f" ({reason})" if reason else ""))
            ns = objects[0]["metadata"].get("namespace", "")
            raise K8sError(f"not ready after {timeout_s:.0f}s: {'; '.join(why)}; see `kubectl -n {ns} describe pods`")
        time.sleep(poll_s)


def pod_problems(client: KubeClient, workload: dict[str, Any]) -> str:
    """The first reason the workload's pods are not ready, from their container and scheduling status."""
    labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    try:
        pods = client.list("v1", "Pod", workload["metadata"].get("namespace"), selector)
    except Exception:
        return ""
    for pod in pods:
        status = pod.get("status") or {}
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                return f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")[:200]
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}"[:200]
    return ""


def wait_gpus(client: KubeClient, timeout_s: float = 300, poll_s: float = 5.0) -> int:
    """Wait until some node advertises allocatable nvidia.com/gpu; returns the total."""
    deadline = time.monotonic() + timeout_s
    while True:
        total = sum(
            int(((n.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", 0) or 0)
            for n in client.list("v1", "Node")
        )
        if total:
            return total
        if time.monotonic() > deadline:
            raise K8sError(
                f"no node advertises nvidia.com/gpu after {timeout_s:.0f}s; check `kubectl -n kube-system logs "
                "ds/nvidia-device-plugin` and the host set-up in `llmdctl doctor`"
            )
        time.sleep(poll_s)


# -- delete ----------------------------------------------------------------------------------------------


def delete_stack(client: KubeClient, namespace: str, stack: str, delete_namespace: bool = True) -> list[str]:
    """Delete every object labelled as this stack's in `namespace` (and nothing else); returns what went.

    The namespace itself goes only if llmdctl created it for this stack and nothing unlabelled lives in it.
    """
    selector = stack_selector(stack)
    deleted = []
    for api, kind in NAMESPACED_KINDS:
        for obj in client.list(api, kind, namespace, selector):
            labels = obj["metadata"].get("labels") or {}
            if labels.get(MANAGED_BY) != MANAGER or labels.get(STACK_LABEL) != stack:  # belt and braces
                continue
            client.delete(api, kind, obj["metadata"]["name"], namespace)
            deleted.append(f"{kind}/{obj['metadata']['name']}")
    if delete_namespace:
        ns = client.get("v1", "Namespace", namespace)
        labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
        if (
            ns is not None
            and labels.get(MANAGED_BY) == MANAGER
            and labels.get(STACK_LABEL) == stack
            and not foreign_objects(client, namespace, stack)
        ):
            client.delete("v1", "Namespace", namespace)
            deleted.append(f"Namespace/{namespace}")
    return deleted


def foreign_objects(client: KubeClient, namespace: str, stack: str) -> list[str]:
    """Objects in the namespace that are not this stack's (pods of our Deployments carry our labels too)."""
    out = []
    for api, kind in _NAMESPACE_CONTENT:
        for obj in client.list(api, kind, namespace):
            meta = obj.get("metadata") or {}
            labels = meta.get("labels") or {}
            if (kind, meta.get("name")) in _IMPLICIT or (
                kind == "Secret" and (obj.get("type") or "").startswith("kubernetes.io/service-account")
            ):
                continue
            if labels.get(STACK_LABEL) != stack:
                out.append(f"{kind}/{meta.get('name')}")
    return out
