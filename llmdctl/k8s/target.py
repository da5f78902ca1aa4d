"""`llmdctl up/down --target kind|kube`: the shell around render, validate, kind and apply.

`up(profile, target, options, console) -> int` and `down(state=None, console=None) -> int` are what the CLI
calls. Host commands go through a `Runner` and API calls through a `KubeClient`, both injectable through
`K8sOptions` so tests drive the whole sequence with recorders; by default they are subprocesses and the
Kubernetes Python client. State (what was applied where, the port-forward's pid) is one JSON file,
`$LLMDCTL_HOME/k8s.json`, so `down` knows exactly what to remove.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
from rich.console import Console

from llmdctl.k8s import kind as kindmod
from llmdctl.k8s.apply import (
    DynamicKubeClient,
    K8sError,
    KubeClient,
    RolloutState,
    apply_objects,
    delete_stack,
    install_crds,
    missing_crds,
    wait_gpus,
    wait_rollouts,
)
from llmdctl.k8s.render import (
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    Rendered,
    RenderError,
    RenderOptions,
    dns_label,
    ensure_api_key_secret,
    render,
    router_api_key_secret_name,
)
from llmdctl.k8s.validate import DEFAULT_K8S_VERSION, load_crds, validate_objects
from llmdctl.paths import home_dir
from llmdctl.profile import Profile

STATE_FILE = "k8s.json"


class Runner(Protocol):
    def run(self, argv: list[str], title: str) -> str: ...
    def spawn(self, argv: list[str], log: Path) -> int: ...


class SubprocessRunner:
    """Runs host commands; output goes to a log file so a failure can show its tail."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)

    def run(self, argv: list[str], title: str) -> str:
        log = self.log_dir / "commands.log"
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=3600)
        except FileNotFoundError:
            raise K8sError(f"{argv[0]}: command not found; run `llmdctl doctor` for how to install it") from None
        except subprocess.TimeoutExpired:
            raise K8sError(f"{title}: timed out after an hour: {' '.join(argv[:4])}") from None
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n[exit {proc.returncode}]\n")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise K8sError(f"{title} failed (exit {proc.returncode}): {tail[0][:300]} — full output in {log}")
        return proc.stdout

    def spawn(self, argv: list[str], log: Path) -> int:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return proc.pid


@dataclass
class RecordingRunner:
    """Records host commands instead of running them (tests, `--dry-run`); `outputs` answers by argv prefix."""

    commands: list[list[str]] = field(default_factory=list)
    spawned: list[list[str]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def run(self, argv: list[str], title: str) -> str:
        self.commands.append(list(argv))
        return self.outputs.get(" ".join(argv), "")

    def spawn(self, argv: list[str], log: Path) -> int:
        self.spawned.append(list(argv))
        return 0


@dataclass
class K8sOptions:
    """Everything `up --target kind|kube` takes besides the profile. `runner`/`client` are for tests."""

    namespace: str = DEFAULT_NAMESPACE
    context: str | None = None  # kube: kubeconfig context (default: the current one)
    cluster: str = kindmod.DEFAULT_CLUSTER  # kind: cluster name
    gpus: bool = False  # kind: NVIDIA passthrough and real vLLM pods
    gateway: bool = False
    gateway_class: str = "istio"
    image: str = DEFAULT_IMAGE
    engine: str | None = None
    node_image: str | None = None
    local_port: int = 8000
    k8s_version: str = DEFAULT_K8S_VERSION
    timeout_s: float = 900
    install_crds: bool = False  # kube: install missing CRDs (cluster-wide); kind always installs them
    build: bool = True  # kind: build the image and load it into the nodes
    port_forward: bool = True
    runner: Any = None
    client: Any = None

    @classmethod
    def from_any(cls, options: "K8sOptions | dict[str, Any] | None") -> "K8sOptions":
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown Kubernetes option(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in options.items() if v is not None})


# -- state -----------------------------------------------------------------------------------------------


def state_path() -> Path:
    return home_dir() / STATE_FILE


def load_state() -> dict[str, Any] | None:
    """The recorded Kubernetes stack, or None when `up --target kind|kube` has not run (or `down` did)."""
    try:
        return json.loads(state_path().read_text())
    except (OSError, ValueError):
        return None


def save_state(state: dict[str, Any]) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def clear_state() -> None:
    state_path().unlink(missing_ok=True)


# -- prerequisites ---------------------------------------------------------------------------------------


def missing_tools(target: str) -> list[str]:
    """One line per missing prerequisite with its fix (from doctor's checks)."""
    from llmdctl.k8s.doctor import check_docker, check_tool

    findings = [check_tool("kubectl")]
    if target == "kind":
        findings = [check_docker(), check_tool("kind"), *findings]
    return [f"{f.name}: {f.detail} — fix: {f.fix}" for f in findings if f.status == "fail"]


# -- port-forward ----------------------------------------------------------------------------------------


def port_forward_argv(context: str | None, namespace: str, service: str, local_port: int) -> list[str]:
    argv = (
        ["kubectl"]
        + (["--context", context] if context else [])
        + ["-n", namespace, "port-forward", f"svc/{service}", f"{local_port}:8000"]
    )
    return argv


def wait_port(port: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def stop_port_forward(pid: int | None) -> bool:
    """Stop the kubectl port-forward we started (checked by its command line, never another process)."""
    if not pid:
        return False
    try:
        cmdline = [part.encode() for part in psutil.Process(pid).cmdline()]  # psutil: Linux and macOS
    except (psutil.Error, ValueError):
        cmdline = None
    if cmdline is not None and b"port-forward" not in cmdline:
        return False  # the pid was reused by something else
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# -- up --------------------------------------------------------------------------------------------------


def _render(profile: Profile, target: str, opts: K8sOptions) -> Rendered:
    rendered = render(
        profile,
        RenderOptions(
            target=target,
            namespace=opts.namespace,
            image=opts.image,
            gateway=opts.gateway,  # type: ignore[arg-type]
            gateway_class=opts.gateway_class,
            gpus=opts.gpus,
            engine=opts.engine,
        ),
    )
    return ensure_api_key_secret(rendered)  # create-once: apply keeps a Secret the cluster already has


def up(
    profile: Profile, target: str, options: K8sOptions | dict[str, Any] | None = None, console: Console | None = None
) -> int:
    """Bring `profile` up on a kind cluster or an existing cluster; 0 on success, non-zero with one line on failure."""
    console = console or Console()
    try:
        opts = K8sOptions.from_any(options)
        return _up(profile, target, opts, console)
    except (K8sError, RenderError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1


def _up(profile: Profile, target: str, opts: K8sOptions, console: Console) -> int:
    if target not in ("kind", "kube"):
        raise ValueError(f"--target {target!r}: expected local, kind or kube")
    if opts.gpus and target != "kind":
        raise ValueError("--gpus is for --target kind; on an existing cluster the GPU nodes are already set up")
    rendered = _render(profile, target, opts)
    extra = kindmod.gpu_addons() if opts.gpus else []
    problems = validate_objects(rendered.objects + extra, opts.k8s_version)
    if problems:
        raise K8sError(
            f"rendered objects fail validation (a bug; please report): {problems[0]}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    for note in rendered.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if opts.runner is None:
        missing = missing_tools(target)
        if missing:
            for line in missing:
                console.print(f"[red]missing:[/red] {line}")
            return 2
    prior = load_state()
    if prior:
        same = (
            prior.get("target") == target
            and prior.get("stack") == rendered.stack
            and (prior.get("cluster") == opts.cluster if target == "kind" else prior.get("context") == opts.context)
        )
        if not same:
            raise K8sError(
                f"a Kubernetes stack is already recorded ({prior.get('profile')} on {prior.get('target')}, "
                f"{prior.get('cluster') or prior.get('context') or 'current context'}); run `llmdctl down` first"
            )
        stop_port_forward(prior.get("port_forward_pid"))  # ours; `up` again re-applies and forwards anew
        time.sleep(0.2)
    work = home_dir() / "k8s" / (opts.cluster if target == "kind" else rendered.stack)
    runner = opts.runner or SubprocessRunner(work)
    router_service = dns_label(f"{rendered.stack}-router", 55)
    if opts.port_forward and opts.runner is None and not port_free(opts.local_port):
        raise K8sError(f"port {opts.local_port} on 127.0.0.1 is taken; pass --port with a free one")
    context = opts.context
    if target == "kind":
        context = f"kind-{opts.cluster}"
        kopts = kindmod.KindOptions(
            cluster=opts.cluster,
            gpus=opts.gpus,
            node_image=opts.node_image,
            image=opts.image,
            build_dir=work / "image",
            config_path=work / "kind-cluster.yaml",
            local_port=opts.local_port,
        )
        steps = kindmod.kind_plan(kopts, rendered.namespace, router_service)
    else:
        steps = [
            kindmod.Step("install or check the CRDs", api="crds"),
            kindmod.Step("server-side apply the stack", api="apply"),
            kindmod.Step("wait for every Deployment to roll out", api="wait"),
            kindmod.Step(
                "port-forward the router",
                port_forward_argv(context, rendered.namespace, router_service, opts.local_port),
                api="port-forward",
                background=True,
            ),
        ]
    state: dict[str, Any] = {
        "target": target,
        "profile": profile.name,
        "stack": rendered.stack,
        "namespace": rendered.namespace,
        "context": context,
        "cluster": opts.cluster if target == "kind" else None,
        "local_port": opts.local_port,
        "router_url": f"http://127.0.0.1:{opts.local_port}",
        "port_forward_pid": None,
        "applied": [],
        "created_at": time.time(),
    }
    client: KubeClient | None = opts.client
    t0 = time.monotonic()
    for i, step in enumerate(steps, 1):
        console.print(f"[bold]{i}/{len(steps)}[/bold] {step.title}")
        if step.argv and not step.background:
            if step.argv[:3] == ["kind", "create", "cluster"]:
                work.mkdir(parents=True, exist_ok=True)
                import yaml

                kopts.config_path.write_text(
                    yaml.safe_dump(kindmod.kind_config(opts.cluster, opts.gpus, opts.node_image), sort_keys=False)
                )
                clusters = runner.run(["kind", "get", "clusters"], "list kind clusters").split()
                if opts.cluster in clusters:
                    console.print(f"    kind cluster {opts.cluster!r} exists: reusing it")
                    save_state(state)
                    continue
            if step.argv[:2] == ["docker", "build"]:
                if not opts.build:
                    continue
                kindmod.build_context(kopts.build_dir)
            if step.argv[:3] == ["kind", "load", "docker-image"] and not opts.build:
                continue
            runner.run(step.argv, step.title)
            if step.argv[:3] == ["kind", "create", "cluster"]:
                save_state(state)  # from here on `down` must delete the cluster even if a later step fails
            continue
        if client is None:
            client = DynamicKubeClient(context)
        if step.api == "crds":
            crds = [c for c in load_crds() if opts.gateway or c["spec"]["group"] == "inference.networking.k8s.io"]
            if target == "kind" or opts.install_crds:
                install_crds(client, crds)
            else:
                missing = missing_crds(client, crds)
                if missing:
                    from llmdctl.k8s.validate import crds_dir

                    raise K8sError(
                        f"CRDs missing on the cluster: {', '.join(missing)}; install them once (cluster-wide): "
                        f"kubectl apply --server-side -f {crds_dir()}/"
                    )
        elif step.api == "gpu-addons":
            addons = kindmod.gpu_addons()
            apply_objects(client, addons)
            wait_rollouts(client, addons, timeout_s=opts.timeout_s, progress=_progress(console))
        elif step.api == "wait-gpus":
            n = wait_gpus(client, timeout_s=opts.timeout_s)
            console.print(f"    {n} GPU(s) allocatable")
        elif step.api == "apply":

            def applied(obj: dict[str, Any]) -> None:
                state["applied"].append(
                    {
                        "apiVersion": obj["apiVersion"],
                        "kind": obj["kind"],
                        "name": obj["metadata"]["name"],
                        "namespace": obj["metadata"].get("namespace"),
                    }
                )
                console.print(f"    applied {obj['kind']}/{obj['metadata']['name']}")

            save_state(state)
            apply_objects(client, rendered.objects, on_applied=applied)
            save_state(state)
        elif step.api == "wait":
            wait_rollouts(client, rendered.objects, timeout_s=opts.timeout_s, progress=_progress(console))
        elif step.api == "port-forward":
            if not opts.port_forward:
                continue
            log = work / "port-forward.log"
            work.mkdir(parents=True, exist_ok=True)
            pid = runner.spawn(step.argv or [], log)
            state["port_forward_pid"] = pid or None
            save_state(state)
            if opts.runner is None and not wait_port(opts.local_port):
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
                raise K8sError(
                    f"port-forward to svc/{router_service} did not open 127.0.0.1:{opts.local_port}: "
                    f"{tail[0] if tail else 'no output'}"
                )
    save_state(state)
    console.print(
        f"[green]ready[/green] in {time.monotonic() - t0:.0f}s: {profile.name} on {target} "
        f"({context or 'current context'}), namespace {rendered.namespace}"
    )
    console.print(f"router: {state['router_url']}")
    console.print(
        f"key:    export LLMD_ROUTER_API_KEY=$(kubectl -n {rendered.namespace} get secret "
        f"{router_api_key_secret_name(rendered.stack)} -o jsonpath='{{.data.api-key}}' | base64 -d)"
    )
    console.print(
        f'try:    curl -s {state["router_url"]}/v1/completions -H "Authorization: Bearer $LLMD_ROUTER_API_KEY" -H '
        "'content-type: application/json' "
        f'-d \'{{"model": "{profile.model}", "prompt": "Hello", "max_tokens": 8}}\''
    )
    console.print("down:   llmdctl down")
    return 0


def _progress(console: Console):
    last: dict[str, tuple[int, int]] = {}

    def report(st: RolloutState) -> None:
        if last.get(st.name) != (st.ready, st.desired):
            last[st.name] = (st.ready, st.desired)
            mark = "[green]✓[/green]" if st.done else "…"
            console.print(f"    {mark} {st.kind}/{st.name} {st.ready}/{st.desired} ready")

    return report


# -- down ------------------------------------------------------------------------------------------------


def down(
    state: dict[str, Any] | None = None,
    console: Console | None = None,
    runner: Runner | None = None,
    client: KubeClient | None = None,
) -> int:
    """Remove what `up` created: kind deletes the cluster; kube deletes the stack's labelled objects only."""
    console = console or Console()
    state = state if state is not None else load_state()
    if not state:
        console.print("no Kubernetes stack is recorded; nothing to do")
        return 0
    if stop_port_forward(state.get("port_forward_pid")):
        console.print(f"stopped the port-forward (pid {state['port_forward_pid']})")
    try:
        if state["target"] == "kind":
            work = home_dir() / "k8s" / state["cluster"]
            (runner or SubprocessRunner(work)).run(kindmod.delete_command(state["cluster"]), "delete the kind cluster")
            console.print(f"deleted kind cluster {state['cluster']!r}")
            shutil.rmtree(work, ignore_errors=True)
        else:
            deleted = delete_stack(
                client or DynamicKubeClient(state.get("context")), state["namespace"], state["stack"]
            )
            console.print(
                f"deleted {len(deleted)} object(s) labelled llmd.ai/stack={state['stack']} in namespace "
                f"{state['namespace']}"
            )
    except K8sError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    clear_state()
    return 0


up_stack = up  # the names llmdctl.k8s exports (its submodule `up` is the CLI hook)
down_stack = down
