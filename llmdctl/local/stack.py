"""The local target's operations: bring a profile up, take it down, report what runs.

The commands in `llmdctl.commands` only parse and render; everything that decides (ports, idempotency,
rollback on a failed start, verification after stop) lives here so it is testable without a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmdctl.local import ports as portlib
from llmdctl.local import supervisor
from llmdctl.local.plan import Plan, PlanError, PortLayout, build_plan, endpoint_count
from llmdctl.local.state import (
    ComponentState,
    RunState,
    clear_state,
    ensure_admin_key,
    is_alive,
    load_state,
    run_lock,
    save_state,
)
from llmdctl.paths import home_dir
from llmdctl.profile import Profile, load_profile
from llmdctl.simtokenizer import stack_tokenizer

DEFAULT_ROUTER_PORT = 8000
DEFAULT_POD_PORT = 8100
DEFAULT_EVENTS_PORT = 5557
DEFAULT_TIMEOUT_S = {"sim": 60.0, "vllm": 600.0}


class StackError(RuntimeError):
    """A failure the user can act on: one line, an exit code, optionally a component's log tail."""

    def __init__(self, message: str, exit_code: int = 1, log_tail: str = "", component: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log_tail = log_tail
        self.component = component


class Progress(Protocol):
    """What `up` reports while it works; the CLI renders it with rich, tests may ignore it."""

    def planned(self, components: list[ComponentState]) -> None: ...
    def started(self, component: ComponentState) -> None: ...
    def ready(self, component: ComponentState, seconds: float) -> None: ...


class _Quiet:
    def planned(self, components: list[ComponentState]) -> None:
        pass

    def started(self, component: ComponentState) -> None:
        pass

    def ready(self, component: ComponentState, seconds: float) -> None:
        pass


@dataclass
class UpResult:
    state: RunState
    already_running: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _engine_overrides(engine: str | None, model: str | None, replicas: int | None, profile_doc_pools: int) -> list[str]:
    out: list[str] = []
    if engine:
        out.append(f"engine={engine}")
    if model:
        out.append(f"model={model}")
    if replicas is not None:
        out += [f"pools.{i}.replicas={replicas}" for i in range(profile_doc_pools)]
    return out


def resolve_profile(
    name: str,
    engine: str | None = None,
    model: str | None = None,
    replicas: int | None = None,
    sets: list[str] | None = None,
) -> tuple[Profile, list[str]]:
    """Load `name` with the CLI's shorthands turned into `--set` overrides (validated like the file)."""
    sets = list(sets or [])
    pools = len(load_profile(name).pools) if replicas is not None else 0
    if replicas is not None and replicas < 0:
        raise StackError(f"--replicas: expected >= 0, got {replicas}", exit_code=2)
    overrides = _engine_overrides(engine, model, replicas, pools)
    if engine:  # a pool that names its own engine follows --engine too
        base = load_profile(name)
        overrides += [f"pools.{i}.engine={engine}" for i, p in enumerate(base.pools) if p.engine is not None]
    overrides += sets
    return load_profile(name, overrides), overrides


def _check_port(port: int, flag: str) -> None:
    if not portlib.is_free(port):
        holder = portlib.holder_of(port)
        raise StackError(f"{flag}: {holder.describe()}; stop it or choose another port with {flag}", exit_code=1)


def choose_ports(
    profile: Profile, router_port: int | None, pod_port: int | None, events_port: int | None
) -> tuple[PortLayout, list[str]]:
    """Router port as asked (default 8000, must be free); pod and event blocks as asked or the next free ones."""
    notes: list[str] = []
    n = endpoint_count(profile)
    router = router_port or DEFAULT_ROUTER_PORT
    _check_port(router, "--port")
    avoid = {router}

    def block(explicit: int | None, default: int, flag: str, what: str, avoid: set[int]) -> int:
        if explicit is not None:
            for p in range(explicit, explicit + n):
                if p in avoid:
                    raise StackError(
                        f"{flag} {explicit}: {what} ports {explicit}-{explicit + n - 1} overlap port {p} used by "
                        "another component",
                        exit_code=2,
                    )
                _check_port(p, flag)
            return explicit
        try:
            base = portlib.find_free_block(default, n, avoid=avoid)
        except OSError as exc:
            raise StackError(f"{flag}: {exc}") from None
        if base != default:
            notes.append(f"{what} ports {default}-{default + n - 1} are busy; using {base}-{base + n - 1}")
        return base

    pods = block(pod_port, DEFAULT_POD_PORT, "--pod-port", "pod", avoid)
    avoid |= set(range(pods, pods + n))
    events = block(events_port, DEFAULT_EVENTS_PORT, "--events-port", "KV-event", avoid)
    return PortLayout(router, pods, events), notes


def _alive(comp: ComponentState) -> bool:
    return is_alive(comp.pid, comp.start_time)


def up(
    name: str,
    *,
    engine: str | None = None,
    model: str | None = None,
    replicas: int | None = None,
    sets: list[str] | None = None,
    router_port: int | None = None,
    pod_port: int | None = None,
    events_port: int | None = None,
    timeout_s: float | None = None,
    home: Path | None = None,
    progress: Progress | None = None,
) -> UpResult:
    """Start every component of the profile, wait until all are healthy; on any failure stop what started."""
    t0 = time.monotonic()
    home = home or home_dir()
    progress = progress or _Quiet()
    profile, overrides = resolve_profile(name, engine, model, replicas, sets)
    with run_lock(home):
        existing = load_state(home)
        if existing is not None:
            alive = [c for c in existing.components if _alive(c)]
            if alive:
                if existing.profile != profile.name:
                    raise StackError(
                        f"profile {existing.profile!r} is running (router {existing.router_url}); run `llmdctl down` "
                        f"first, then `llmdctl up {name}`"
                    )
                dead = [c.name for c in existing.components if not _alive(c)]
                if dead:
                    raise StackError(
                        f"profile {existing.profile!r} is running but degraded ({', '.join(dead)} exited); run "
                        f"`llmdctl down` then `llmdctl up {name}`"
                    )
                notes = (
                    []
                    if existing.overrides == overrides
                    else ["the running stack was started with other options; run `llmdctl down` first to apply these"]
                )
                return UpResult(existing, already_running=True, seconds=time.monotonic() - t0, notes=notes)
            supervisor.stop_front_to_back(
                existing.components
            )  # stale state: nothing alive, but sweep the groups anyway
            supervisor.stop_tagged(home)
            clear_state(home)
        profile.tokenizer = stack_tokenizer(profile, home)  # pods, router and clients count alike
        layout, notes = choose_ports(profile, router_port, pod_port, events_port)
        try:
            plan = build_plan(profile, layout, home)
        except PlanError as exc:
            raise StackError(str(exc), exit_code=2) from None
        notes += plan.notes
        _write_files(plan, home)
        state = RunState(
            profile=profile.name,
            profile_path=name,
            engine=profile.engine,
            model=plan.model,
            router_url=plan.router_url,
            started_at=time.time(),
            overrides=overrides,
            components=plan.components,
            pods=plan.pods,
        )
        timeout = timeout_s or max(DEFAULT_TIMEOUT_S.get(c.kind, 60.0) for c in plan.components if c.kind != "router")
        _start_and_wait(state, home, timeout, progress)
        state.status = "running"
        save_state(state, home)
        return UpResult(state, seconds=time.monotonic() - t0, notes=notes)


def _write_files(plan: Plan, home: Path) -> None:
    (home / "logs").mkdir(parents=True, exist_ok=True)
    ensure_admin_key(home)  # the router's admin API is never open: the CLI and TUI read this file
    for path, content in plan.files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)


def _start_and_wait(state: RunState, home: Path, timeout_s: float, progress: Progress) -> None:
    procs: dict[str, Any] = {}
    progress.planned(state.components)
    try:
        for comp in state.components:
            procs[comp.name] = supervisor.start(comp, run_dir=home)
            save_state(state, home)  # `down` can always find what was started, even if we die now
            progress.started(comp)
        waiter = supervisor.HealthWaiter(state.components, procs)
        waiter.wait(timeout_s, on_ready=progress.ready)
    except supervisor.StartError as exc:
        supervisor.stop_front_to_back(state.components, procs=procs)
        clear_state(home)
        raise StackError(
            f"{exc.component.name} failed to start: {exc.reason}; everything started was stopped",
            log_tail=exc.log_tail,
            component=exc.component.name,
        ) from None
    except BaseException:
        supervisor.stop_front_to_back(state.components, procs=procs)
        clear_state(home)
        raise


@dataclass
class DownResult:
    profile: str | None
    seconds: float
    stopped: list[str]
    killed: list[str]  # components that ignored SIGTERM for the grace period and needed SIGKILL
    remaining_pids: list[int]
    listening: list[str]  # "port N is in use by ..." for ports of ours still listening
    leftovers: list[int] = field(
        default_factory=list
    )  # processes of this run the state did not name (e.g. `up` killed), stopped


def down(home: Path | None = None, grace_s: float = 5.0) -> DownResult:
    """Stop every component of the run (crashed ones included), verify no process or port remains, clear state."""
    t0 = time.monotonic()
    home = home or home_dir()
    with run_lock(home):
        state = load_state(home)
        if state is None:  # nothing recorded; an `up` killed before it wrote its state may still have started some
            leftovers = supervisor.stop_tagged(home, grace_s)
            return DownResult(None, time.monotonic() - t0, [], [], [p for p in leftovers if is_alive(p)], [], leftovers)
        stopped = [c.name for c in state.components if _alive(c)]
        report = supervisor.stop_front_to_back(state.components, grace_s=grace_s)
        leftovers = supervisor.stop_tagged(home, grace_s)  # anything of this run the state does not name
        remaining = sorted(set(report.remaining) | {p for p in leftovers if is_alive(p)})
        ports = sorted({p for c in state.components for p in c.ports})
        listening = [portlib.holder_of(p).describe() for p in portlib.listening_ports(ports)]
        if not remaining:
            clear_state(home)
        killed = [c.name for c in state.components if c.pid in report.killed_groups]
        return DownResult(state.profile, time.monotonic() - t0, stopped, killed, remaining, listening, leftovers)


# ---- status ------------------------------------------------------------------------------------------


def pod_status_metrics(text: str) -> dict[str, float]:
    """`status`'s figures of a pod page: waiting, running, kv_usage, prefix_{queries,hits,hit_rate} and
    `tier_<medium>_<hits|usage|blocks>` for the simulator's KV tiers; keys only for metrics the page has."""
    from router_lite import promtext  # prometheus_client loads only when a page is read

    f = promtext.pod_figures(promtext.parse(text, promtext.POD_PREFIXES))
    out = {
        k: v
        for k, v in (
            ("waiting", f.waiting),
            ("running", f.running),
            ("kv_usage", f.kv_cache_usage),
            ("prefix_queries", f.prefix_queries),
            ("prefix_hits", f.prefix_hits),
        )
        if v is not None
    }
    for kind, per_medium in (("hits", f.tier_hits), ("usage", f.tier_usage), ("blocks", f.tier_blocks)):
        for medium, v in per_medium.items():
            out[f"tier_{medium.lower()}_{kind}"] = v
    if f.prefix_queries:
        out["prefix_hit_rate"] = f.prefix_hit_rate or 0.0
    return out


@dataclass
class ComponentStatus:
    name: str
    kind: str
    pid: int | None
    alive: bool
    healthy: bool
    ports: list[int]
    log: str
    orphans_stopped: list[int] = field(default_factory=list)  # leftovers of its process tree, killed now
    detail: str = ""  # the router: how many endpoints it sees healthy


@dataclass
class PodStatus:
    name: str
    pool: str
    role: str
    rank: int
    url: str
    process: str
    healthy: bool
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class StatusReport:
    running: bool
    profile: str | None = None
    router_url: str | None = None
    started_at: float | None = None
    components: list[ComponentStatus] = field(default_factory=list)
    pods: list[PodStatus] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return (
            self.running and all(c.alive and c.healthy for c in self.components) and all(p.healthy for p in self.pods)
        )


async def _probe(client: Any, url: str) -> tuple[bool, str | None]:
    try:
        r = await client.get(url)
        return r.status_code == 200, r.text
    except Exception as exc:  # a dead or hung endpoint is a row, not a crash
        return False, f"{type(exc).__name__}"


def liveness_urls(comp: ComponentState) -> list[str]:
    """The URLs that say whether `comp` itself is up. A router's start-up check also waits for every pod
    (`/health?min_healthy=N`); asked in `status`, that marked the router down whenever one pod was."""
    if comp.kind == "router":
        return sorted({u.split("?", 1)[0] for u in comp.health})
    return list(comp.health)


def _router_detail(text: str | None) -> str:
    """'2/3 endpoints healthy' from the router's /health body ('' when unreadable)."""
    import json

    try:
        doc = json.loads(text or "")
        return f"{int(doc['healthy_endpoints'])}/{int(doc['endpoints'])} endpoints healthy"
    except (ValueError, KeyError, TypeError):
        return ""


async def _gather_status(
    state: RunState,
) -> tuple[dict[str, tuple[bool, str | None]], dict[str, tuple[bool, str | None, str | None]]]:
    import httpx

    async with httpx.AsyncClient(timeout=httpx.Timeout(1.5, connect=0.5), trust_env=False) as client:
        health_urls = sorted({u for c in state.components for u in liveness_urls(c)})
        pods = state.pods
        results = await asyncio.gather(
            *(_probe(client, u) for u in health_urls),
            *(_probe(client, f"{p.url}/metrics") for p in pods),
        )
    health = dict(zip(health_urls, results[: len(health_urls)]))
    pod_metrics = {
        p.name: (ok, text if ok else None, None if ok else text)
        for p, (ok, text) in zip(pods, results[len(health_urls) :])
    }
    return health, pod_metrics


def status(home: Path | None = None) -> StatusReport:
    """Each component (pid alive, health) and each pod (health, scraped load and cache figures)."""
    state = load_state(home or home_dir())
    if state is None:
        return StatusReport(running=False)
    health, pod_metrics = asyncio.run(_gather_status(state))
    report = StatusReport(running=True, profile=state.profile, router_url=state.router_url, started_at=state.started_at)
    orphans = supervisor.stop_orphaned_groups(
        state.components, home or home_dir()
    )  # a dead component's tree goes as a tree
    for c in state.components:
        alive = _alive(c)
        urls = liveness_urls(c)
        healthy = alive and all(health.get(u, (False, None))[0] for u in urls)
        detail = (
            _router_detail(health.get(urls[0], (False, None))[1]) if c.kind == "router" and healthy and urls else ""
        )
        report.components.append(
            ComponentStatus(c.name, c.kind, c.pid, alive, healthy, c.ports, c.log, orphans.get(c.name, []), detail)
        )
    for p in state.pods:
        ok, text, err = pod_metrics[p.name]
        metrics: dict[str, float] = {}
        if ok and text is not None:
            with contextlib.suppress(Exception):
                metrics = pod_status_metrics(text)
        report.pods.append(
            PodStatus(
                p.name,
                p.pool,
                p.role,
                p.rank,
                p.url,
                p.process,
                health.get(f"{p.url}/health", (ok, None))[0],
                metrics,
                err,
            )
        )
    return report


def log_path_of(state: RunState | None, name: str, home: Path | None = None) -> Path | None:
    """The log of a component, or of the process serving a pod; also works after `down` (logs are kept)."""
    logs = (home or home_dir()) / "logs"
    if state is not None:
        comp = state.component(name)
        if comp is None:
            pod = next((p for p in state.pods if p.name == name), None)
            comp = state.component(pod.process) if pod else None
        if comp is not None:
            return Path(comp.log)
    path = logs / f"{name}.log"
    return path if path.is_file() else None
