"""`llmdctl up PROFILE`: start the stack and wait until every component is healthy."""

from __future__ import annotations

import json
import shlex
from typing import Any, Optional

import typer

from llmdctl.commands import fail

HELP = """Start a profile's stack: model-server pods and the router, as supervised background processes on
127.0.0.1 (the default local target), and wait until every component is healthy.

Prints the router URL, a ready-to-paste curl and how to open the TUI. Running `up` again with the same
profile is a no-op; another profile running is an error (run `llmdctl down` first). If a component fails
to start, everything started is stopped and its log tail is shown.

Examples: `llmdctl up inference-scheduling`, `llmdctl up precise-prefix-cache --replicas 2 --port 9000`,
`llmdctl up pd-disaggregation --set pools.0.replicas=1`, `llmdctl up round-robin --engine vllm --model DIR`."""

TARGETS = ("local", "kind", "kube")


class _RichProgress:
    """One line per component: a spinner while it starts, a tick and its time once healthy."""

    def __init__(self, console: Any) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn

        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}"),
            TextColumn("[dim]{task.fields[note]}"),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def planned(self, components: list) -> None:
        for c in components:
            http = sorted(int(u.rsplit(":", 1)[1].split("/", 1)[0]) for u in c.health)
            where = f"port {http[0]}" if len(http) == 1 else f"ports {http[0]}-{http[-1]}"
            what = (
                f"router, {where}"
                if c.kind == "router"
                else f"{c.kind}, {len(http)} endpoint{'s' if len(http) != 1 else ''}, {where}"
            )
            self.tasks[c.name] = self.progress.add_task(f"{c.name:<14} {what:<34}", total=1, note="waiting")

    def started(self, component: Any) -> None:
        self.progress.update(self.tasks[component.name], note=f"pid {component.pid}, starting")

    def ready(self, component: Any, seconds: float) -> None:
        self.progress.update(
            self.tasks[component.name], completed=1, note=f"pid {component.pid}, healthy after {seconds:.1f}s"
        )


def curl_example(router_url: str, model: str) -> str:
    body = json.dumps({"model": model, "prompt": "San Francisco is a", "max_tokens": 16})
    return f"curl -si {router_url}/v1/completions -H 'Content-Type: application/json' -d {shlex.quote(body)}"


def up_command(
    profile: str = typer.Argument(
        ..., help="Profile name (see `llmdctl profiles list`) or path to a profile YAML file."
    ),
    target: str = typer.Option(
        "local",
        "--target",
        "-t",
        help="Where to run: local (processes on this machine), kind, or kube (an existing cluster).",
    ),
    engine: Optional[str] = typer.Option(
        None,
        "--engine",
        "-e",
        help=(
            "Model server engine for every pool: sim (simulated GPUs) or vllm (real vLLM; needs `llmdctl engine "
            "install vllm`)."
        ),
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Model: the served name for sim; a local model directory or Hugging Face id for vllm.",
    ),
    replicas: Optional[int] = typer.Option(
        None, "--replicas", "-r", help="Replicas of every pool (use --set pools.N.replicas=K for one pool)."
    ),
    port: Optional[int] = typer.Option(
        None, "--port", "-p", help="Router port on 127.0.0.1 (default: 8000); must be free."
    ),
    pod_port: Optional[int] = typer.Option(
        None, "--pod-port", help="First pod port; pods use consecutive ports (default: the first free block from 8100)."
    ),
    events_port: Optional[int] = typer.Option(
        None, "--events-port", help="First KV-events (ZMQ) port, one per pod (default: the first free block from 5557)."
    ),
    tokenizer: Optional[str] = typer.Option(
        None,
        "--tokenizer",
        help=(
            "The model's Hugging Face tokenizer directory: simulated pods and the router count tokens with it, so a "
            "client using the same one (vllm bench --tokenizer DIR) agrees with the server. Default: the simulated "
            "model's own (built once into the llmdctl cache; /v1/models names it as root, where vllm bench looks); "
            "builtin: the simulator's word tokenizer. Same as --set tokenizer=DIR."
        ),
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        "-s",
        help=(
            "Override a profile key, e.g. --set pools.0.replicas=2 --set router.config.plugins.0.type=queue-scorer "
            "(repeatable)."
        ),
    ),
    timeout: Optional[float] = typer.Option(
        None,
        "--timeout",
        min=0.1,
        help="Seconds to wait for all components to be healthy (default: 60 for sim, 600 for vllm).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (progress goes to stderr)."),
    namespace: Optional[str] = typer.Option(
        None, "--namespace", "-n", help="kind/kube: namespace to deploy into.", rich_help_panel="Kubernetes targets"
    ),
    context: Optional[str] = typer.Option(
        None,
        "--context",
        help="kube: kubeconfig context (default: the current one).",
        rich_help_panel="Kubernetes targets",
    ),
    cluster: Optional[str] = typer.Option(
        None, "--cluster", help="kind: cluster name.", rich_help_panel="Kubernetes targets"
    ),
    gpus: bool = typer.Option(
        False,
        "--gpus",
        help="kind: pass NVIDIA GPUs through to the nodes and run real vLLM pods.",
        rich_help_panel="Kubernetes targets",
    ),
    gateway: bool = typer.Option(
        False,
        "--gateway",
        help="kind/kube: also create a Gateway and HTTPRoute (needs a Gateway implementation).",
        rich_help_panel="Kubernetes targets",
    ),
    image: Optional[str] = typer.Option(
        None,
        "--image",
        help=(
            "kind/kube: llmdctl image (router + simulator); kube needs one the cluster can pull (default: "
            "llmdctl:VERSION, built and loaded on kind)."
        ),
        rich_help_panel="Kubernetes targets",
    ),
) -> None:
    from rich.console import Console

    from llmdctl.local import stack
    from llmdctl.profile import ProfileError

    if tokenizer is not None:
        set_ = [*set_, f"tokenizer={tokenizer}"]
    if target not in TARGETS:
        raise fail(f"--target: expected one of {', '.join(TARGETS)}, got {target!r}", 2)
    if engine is not None and engine not in ("sim", "vllm"):
        raise fail(f"--engine: expected sim or vllm, got {engine!r}", 2)
    for flag, value in (("--port", port), ("--pod-port", pod_port), ("--events-port", events_port)):
        if value is not None and not 0 < value < 65536:
            raise fail(f"{flag}: expected a port between 1 and 65535, got {value}", 2)
    if target != "local":
        k8s = {
            "namespace": namespace,
            "context": context,
            "cluster": cluster,
            "gpus": gpus or None,
            "gateway": gateway or None,
            "image": image,
        }
        _up_k8s(
            target,
            profile,
            engine=engine,
            model=model,
            replicas=replicas,
            sets=set_,
            timeout=timeout,
            as_json=as_json,
            port=port,
            **{k: v for k, v in k8s.items() if v is not None},
        )
        return
    used = [
        flag
        for flag, value in (
            ("--namespace", namespace),
            ("--context", context),
            ("--cluster", cluster),
            ("--gpus", gpus),
            ("--gateway", gateway),
            ("--image", image),
        )
        if value
    ]
    if used:
        raise fail(f"{', '.join(used)}: only for --target kind or kube", 2)

    from llmdctl.local.state import StateError

    err = Console(stderr=True)
    out = Console()
    try:
        with _RichProgress(err) as progress:
            result = stack.up(
                profile,
                engine=engine,
                model=model,
                replicas=replicas,
                sets=set_,
                router_port=port,
                pod_port=pod_port,
                events_port=events_port,
                timeout_s=timeout,
                progress=progress,
            )
    except ProfileError as exc:
        raise fail(str(exc), 2) from None
    except stack.StackError as exc:
        if exc.log_tail:
            err.print(f"[dim]--- last lines of {exc.component}'s log ---[/dim]", highlight=False)
            err.print(exc.log_tail, markup=False, highlight=False, soft_wrap=True)
            err.print("[dim]---[/dim]")
        raise fail(str(exc), exc.exit_code) from None
    except StateError as exc:  # a corrupt or foreign state.json in the run directory
        raise fail(str(exc), 1) from None
    except KeyboardInterrupt:
        raise fail("interrupted; everything started was stopped", 130) from None
    except OSError as exc:  # run directory not writable, etc.
        raise fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 1) from None

    state = result.state
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "profile": state.profile,
                    "already_running": result.already_running,
                    "router_url": state.router_url,
                    "seconds": round(result.seconds, 3),
                    "model": state.model,
                    "engine": state.engine,
                    "notes": result.notes,
                    "components": [
                        {"name": c.name, "kind": c.kind, "pid": c.pid, "ports": c.ports, "log": c.log}
                        for c in state.components
                    ],
                    "pods": [
                        {
                            "name": p.name,
                            "pool": p.pool,
                            "role": p.role,
                            "rank": p.rank,
                            "url": p.url,
                            "kv_events": p.kv_events,
                        }
                        for p in state.pods
                    ],
                },
                indent=2,
            )
        )
        return
    for note in result.notes:
        err.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    pods = len(state.pods)
    if result.already_running:
        out.print(f"[bold]{state.profile}[/bold] is already running ({pods} pod endpoints + router).", highlight=False)
    else:
        out.print(
            f"[green]✓[/green] [bold]{state.profile}[/bold] is up in {result.seconds:.1f}s ({pods} pod endpoints + "
            "router).",
            highlight=False,
        )
    out.print(
        f"  Router:  {state.router_url}   (OpenAI API: /v1/completions, /v1/chat/completions)",
        highlight=False,
        soft_wrap=True,
    )
    out.print(f"  Try:     {curl_example(state.router_url, state.model)}", highlight=False, soft_wrap=True)
    out.print("  Watch:   llmdctl tui", highlight=False)
    out.print("  Inspect: llmdctl status  ·  llmdctl logs [NAME]  ·  Stop: llmdctl down", highlight=False)


def _up_k8s(target: str, profile: str, **opts: Any) -> None:
    """Kubernetes targets live in llmdctl.k8s (imported only for them: it pulls in the Kubernetes client)."""
    from llmdctl.k8s.up import up

    up(target, profile, **opts)
