"""Endpoints from the Kubernetes API: the pods matching a label selector in one namespace, followed by watch.

What llm-d's endpoint picker does with its InferencePool, reduced to what router_lite needs in a cluster:
each Ready pod with an IP becomes one endpoint per target port it declares (port + r is data-parallel rank
r), labelled with the pod's labels (so `llm-d.ai/role` gives prefill/decode/both), and with its KV-event
publisher at `tcp://POD_IP:KV_PORT + r` when the pod declares that port (the pod binds, we connect).

`KubernetesWatcher` mirrors `FileWatcher`: it calls `on_change(specs)` with the whole current list on the
event loop thread whenever it changes. The blocking list/watch runs in a daemon thread; a dropped watch is
resumed from the last resourceVersion, a 410 Gone relists. Needs only get/list/watch on pods in the
namespace (the Role llmdctl renders).

Wiring (router CLI): `--discovery kubernetes --namespace NS --selector k=v,k2=v2 --target-ports 8000[,8001]
[--kv-events-port 5557]`; the namespace defaults to the pod's own (service-account namespace file).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router_lite.datalayer.discovery import DiscoveryError, EndpointSpec, KVEventsSpec

log = logging.getLogger("router_lite.k8s_discovery")

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def parse_selector(text: str) -> str:
    """Validate an equality selector `k=v,k2=v2` (what the API's labelSelector takes); returns it normalised."""
    terms = []
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        key, sep, value = term.partition("=")
        key, value = key.strip(), value.strip().lstrip("=")
        if not sep or not key:
            raise DiscoveryError(
                f"--selector {text!r}: expected key=value[,key=value], e.g. llm-d.ai/inferenceServing=true"
            )
        terms.append(f"{key}={value}")
    if not terms:
        raise DiscoveryError("--selector: empty; expected key=value[,key=value]")
    return ",".join(terms)


def parse_ports(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise DiscoveryError(
            f"--target-ports {text!r}: expected port numbers separated by commas, e.g. 8000,8001"
        ) from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise DiscoveryError(f"--target-ports {text!r}: expected 1 to 8 ports between 1 and 65535")
    return ports


def default_namespace() -> str:
    try:
        return NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def pod_ready(pod: dict[str, Any]) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _declared_ports(pod: dict[str, Any]) -> set[int]:
    ports = set()
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("containerPort"):
                ports.add(int(p["containerPort"]))
    return ports


def specs_from_pods(
    pods: list[dict[str, Any]], target_ports: list[int], kv_events_port: int | None = None
) -> list[EndpointSpec]:
    """Endpoints for the Ready pods: pod IP x the target ports each pod declares (all, if it declares none)."""
    specs: list[EndpointSpec] = []
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        if not pod_ready(pod):
            continue
        meta = pod["metadata"]
        ip = pod["status"]["podIP"]
        declared = _declared_ports(pod)
        ports = [p for p in target_ports if not declared or p in declared]
        labels = tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items()))
        multi = len(ports) > 1
        for port in ports:
            rank = target_ports.index(port)
            kv = None
            if kv_events_port is not None and (kv_events_port + rank) in declared:
                kv = KVEventsSpec(endpoint=f"tcp://{ip}:{kv_events_port + rank}", topic="", bind=False)
            host = f"[{ip}]" if ":" in ip else ip
            specs.append(
                EndpointSpec(
                    address=f"{host}:{port}",
                    name=meta.get("name") + (f"-r{rank}" if multi else ""),
                    labels=labels,
                    kv_events=kv,
                    dp_rank=rank if multi else None,
                )
            )
    return specs


def _to_dict(api_client: Any, obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else api_client.sanitize_for_serialization(obj)


class KubernetesWatcher:
    """Follows the pods matching `selector` in `namespace` and reports endpoint lists to `on_change`."""

    def __init__(
        self,
        namespace: str | None,
        selector: str,
        on_change: Callable[[list[EndpointSpec]], None],
        target_ports: list[int],
        kv_events_port: int | None = None,
        api_client: Any = None,
        watch_timeout_s: int = 30,
    ) -> None:
        self.namespace = namespace or default_namespace()
        self.selector = parse_selector(selector)
        self.on_change = on_change
        self.target_ports = list(target_ports)
        self.kv_events_port = kv_events_port
        self.watch_timeout_s = watch_timeout_s
        self._api_client = api_client
        self._pods: dict[str, dict[str, Any]] = {}
        self._last: list[EndpointSpec] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: Any = None
        self._rv: str | None = None
        self.errors = 0
        self.relists = 0

    # -- the API ---------------------------------------------------------------------------------------
    def _core(self) -> Any:
        from kubernetes import client, config

        if self._api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api_client = client.ApiClient()
        return client.CoreV1Api(self._api_client)

    def snapshot(self) -> list[EndpointSpec]:
        """List once (blocking) and return the endpoints; also what the watch thread starts from."""
        core = self._core()
        resp = core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        doc = _to_dict(self._api_client, resp)
        self._pods = {p["metadata"]["name"]: p for p in doc.get("items") or []}
        self._rv = (doc.get("metadata") or {}).get("resourceVersion")
        return specs_from_pods(list(self._pods.values()), self.target_ports, self.kv_events_port)

    def _deliver(self) -> None:
        if self._stop.is_set():  # stopped: the router may be tearing down its data layer
            return
        specs = specs_from_pods(list(self._pods.values()), self.target_ports, self.kv_events_port)
        if specs == self._last:
            return
        self._last = specs
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_change, specs)
        else:
            self.on_change(specs)

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        backoff = 0.5
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self.snapshot()
                    self.relists += 1
                    self._deliver()
                    need_list = False
                core = self._core()
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=self._rv,
                    timeout_seconds=self.watch_timeout_s,
                    allow_watch_bookmarks=True,
                ):
                    if self._stop.is_set():
                        break
                    kind = event.get("type")
                    obj = _to_dict(self._api_client, event.get("object") or event.get("raw_object"))
                    if kind == "ERROR":
                        if (obj or {}).get("code") == 410:
                            need_list = True
                            break
                        raise RuntimeError(f"watch error: {obj}")
                    meta = obj.get("metadata") or {}
                    self._rv = meta.get("resourceVersion") or self._rv
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        self._pods.pop(meta.get("name"), None)
                    else:
                        self._pods[meta.get("name")] = obj
                    self._deliver()
                backoff = 0.5
            except ApiException as exc:
                if self._stop.is_set():
                    break
                self.errors += 1
                need_list = need_list or exc.status == 410
                log.warning(
                    "pod watch in %s: %s %s; retrying in %.1fs", self.namespace, exc.status, exc.reason, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:  # never let discovery die: keep the last endpoints and retry
                if self._stop.is_set():
                    break
                self.errors += 1
                need_list = True
                log.warning("pod watch in %s: %s; retrying in %.1fs", self.namespace, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    # -- lifecycle (same shape as FileWatcher) ---------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="k8s-pod-discovery", daemon=True)
        self._thread.start()

    async def stop(self, timeout_s: float = 0.5) -> None:
        """Stop following pods without blocking the event loop: the watch thread is told to stop (its
        socket is shut down) and given `timeout_s`; a daemon thread still in a request is left behind."""
        self._signal_stop()
        thread, self._thread = self._thread, None
        deadline = time.monotonic() + timeout_s
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def stop_sync(self, timeout_s: float = 2.0) -> None:
        self._signal_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _signal_stop(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            try:
                watch.stop()
            except Exception:  # a half-open watch: the flag alone ends the thread
                pass

    def describe(self) -> dict[str, Any]:
        """For `/debug/endpoints`: what is watched and how the watch is doing."""
        return {
            "mode": "kubernetes",
            "namespace": self.namespace,
            "selector": self.selector,
            "target_ports": self.target_ports,
            "kv_events_port": self.kv_events_port,
            "pods": len(self._pods),
            "endpoints": len(self._last or []),
            "errors": self.errors,
            "relists": self.relists,
        }


def check_client_config() -> None:
    """Raise DiscoveryError unless an in-cluster service account or a kubeconfig can be loaded."""
    from kubernetes import config

    try:
        config.load_incluster_config()
        return
    except config.ConfigException:
        pass
    try:
        config.load_kube_config()
    except Exception as exc:  # ConfigException, or a malformed kubeconfig
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DiscoveryError(
            f"--discovery kubernetes: no in-cluster service account and no usable kubeconfig ({first}); "
            "run inside a pod, or set KUBECONFIG"
        ) from None
