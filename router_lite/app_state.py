"""Wiring: everything one router instance owns, built from settings, started and stopped with the app.

The scheduler is the only part that changes at run time (`swap_config`): the prefix indexes, the data
layer and the event subscriber stay, so a live switch from one profile to another keeps what the router
has learnt about where blocks live.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvtiers.hashing import HASH_ALGOS
from router_lite.admission import Admission
from router_lite.config import ConfigError, SchedulerConfig, load_config, load_config_file
from router_lite.datalayer import DataLayer, EndpointSpec, FileWatcher, KubernetesWatcher, KVEventsSpec
from router_lite.decisions import DecisionHub
from router_lite.director import Director
from router_lite.inflight import InFlightTracker
from router_lite.kv_subscriber import KVEventSubscriber
from router_lite.metrics import RouterMetrics
from router_lite.prefix import PrefixIndexes
from router_lite.proxy import BackendPool, Timeouts
from router_lite.scheduler import Scheduler
from router_lite.tokenization import HashSettings, RequestTokenizer, make_tokenizer, resolve_hash_settings

log = logging.getLogger("router_lite")

DEFAULT_CONFIG: dict[str, Any] = {
    "apiVersion": "llm-d.ai/v1alpha1",
    "kind": "EndpointPickerConfig",
    "plugins": [
        {"type": "queue-scorer"},
        {"type": "kv-cache-utilization-scorer"},
        {"type": "prefix-cache-scorer"},
    ],
    "schedulingProfiles": [
        {
            "name": "default",
            "plugins": [
                {"pluginRef": "queue-scorer", "weight": 2},
                {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
                {"pluginRef": "prefix-cache-scorer", "weight": 3},
            ],
        }
    ],
}


@dataclass
class RouterSettings:
    """What `router serve` is given; every field has a flag of the same name (snake -> kebab)."""

    host: str = "127.0.0.1"
    port: int = 8000
    config: SchedulerConfig | None = None  # None: DEFAULT_CONFIG (llm-d's inference-scheduling shape)
    config_path: str | None = None
    endpoints: list[EndpointSpec] = field(default_factory=list)
    endpoints_file: str | None = None
    # Where endpoints come from besides `endpoints`: "static" (only those), "file" (endpoints_file, watched)
    # or "kubernetes" (Ready pods matching `selector` in `namespace`); "" = "file" when endpoints_file is set.
    discovery: str = ""
    namespace: str | None = None  # None: the pod's own namespace (service-account file), else "default"
    selector: str | None = None
    target_ports: list[int] = field(default_factory=lambda: [8000])
    kv_events_port: int | None = None
    kube_api_client: Any = field(default=None, repr=False, compare=False)  # tests: a client for a fake API
    tokenizer: str | None = None  # local HF dir, "builtin", or None/"engine" for the engine's /tokenize
    block_size: int | None = None
    hash_algo: str | None = None
    hash_seed: str | None = None
    api_key: str | None = None
    admin_key: str | None = None  # required by POST /admin/*; None falls back to api_key; neither: admin off
    max_body_bytes: int = 16 * 1024 * 1024
    scrape_interval_ms: float = 50.0
    stale_after_s: float = 2.0
    client_body_timeout_s: float = 30.0  # a pause while a client sends its request body (slowloris)
    silent_after_s: float = 0.7  # no answer this long while other pods answer: out of rotation (a hung pod)
    unresponsive_after_s: float = 10.0  # no scrape or probe answered this long: requests waiting on the pod give up
    request_timeout_s: float = 600.0
    header_timeout_s: float = 10.0  # a streaming request's response headers (pods send them before generating)
    idle_timeout_s: float = 60.0  # between two chunks of a streamed answer
    max_retries: int = 2
    objectives: dict[str, int] = field(default_factory=dict)  # model/objective name -> priority
    pool_name: str = "default"  # the InferencePool served: `name` label of the inference_pool_* metrics
    queue_size: int = 0  # flow-control queue capacity; 0 = no queue (shed or pass)
    queue_ttl_s: float = 30.0
    shutdown_timeout_s: float = 1.0  # after SIGTERM, how long in-flight responses may take before being cut
    log_level: str = "info"
    named_configs: str | None = None  # directory of NAME.yaml configs POST /admin/profile may switch to

    @property
    def discovery_mode(self) -> str:
        return self.discovery or ("file" if self.endpoints_file else "static")


def load_scheduler_config(path: str | None) -> SchedulerConfig:
    return load_config_file(path) if path else load_config(DEFAULT_CONFIG, origin="built-in default config")


class RouterState:
    """One router: data layer, indexes, scheduler, subscriber, proxy pool, decision hub, metrics."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.metrics = RouterMetrics()
        self.hub = DecisionHub(on_drop=self.metrics.decision_drops.inc)
        self.indexes = PrefixIndexes()
        self.inflight = InFlightTracker(clock=time.monotonic)  # shared by every scheduler a config swap builds
        self.metrics.watch_inflight(self.inflight)
        self.indexes.precise.on_gap = self._on_gap
        self.config = settings.config or load_scheduler_config(settings.config_path)
        self.scheduler = Scheduler(self.config, self.indexes, inflight=self.inflight)
        self.config_version = 1
        specs = list(settings.endpoints)
        if settings.discovery_mode == "file" and settings.endpoints_file:
            from router_lite.datalayer import load_endpoints_file

            known = {s.key for s in specs}
            specs += [s for s in load_endpoints_file(settings.endpoints_file) if s.key not in known]
        self.datalayer = DataLayer(
            specs,
            scrape_interval_s=settings.scrape_interval_ms / 1000.0,
            stale_after_s=settings.stale_after_s,
            unresponsive_after_s=settings.unresponsive_after_s,
            silent_after_s=settings.silent_after_s,
            metrics=self.metrics,
        )
        self.subscriber = KVEventSubscriber(self.indexes.precise.apply, metrics=self.metrics)
        self.datalayer.add_listener(self._on_membership)
        self.watcher: FileWatcher | KubernetesWatcher | None = self._make_watcher()
        self.pool = BackendPool(
            request_timeout_s=settings.request_timeout_s,
            timeouts=Timeouts(
                headers_s=min(settings.header_timeout_s, settings.request_timeout_s),
                first_byte_s=settings.request_timeout_s,
                idle_s=min(settings.idle_timeout_s, settings.request_timeout_s),
            ),
            on_outcome=self.datalayer.record_outcome,  # a pod failing requests while it answers scrapes is ejected
            alive=self.datalayer.responsive,  # a request waiting on a pod that went silent gives up at once
        )
        self.open_upstreams: set[Any] = set()  # proxied streams in flight (cut at shutdown after the grace period)
        self.stopping = False
        self._tokenizer = make_tokenizer(settings.tokenizer, self._tokenize_urls, alive=self.datalayer.responsive)
        self.request_tokenizer = RequestTokenizer(self._tokenizer, self.hash_settings, on_error=self._on_tokenize_error)
        self.admission = self._admission(self.config, self.scheduler)
        # The request flow, over whichever scheduler is current when a request starts.
        self.director = Director(
            lambda: self.scheduler,
            max_retries=settings.max_retries,
            report_failure=self.datalayer.report_failure,
            metrics=self.metrics,
        )
        self._hash_cache: tuple[Any, HashSettings] | None = None

    def _make_watcher(self) -> FileWatcher | KubernetesWatcher | None:
        """The discovery watcher: its callback sets the data layer's endpoints to static + discovered."""
        s = self.settings
        static = list(s.endpoints)
        keys = {spec.key for spec in static}

        def reload(found: list[EndpointSpec]) -> None:
            self.datalayer.set_specs(static + [spec for spec in found if spec.key not in keys])

        mode = s.discovery_mode
        if mode == "file" and s.endpoints_file:
            return FileWatcher(s.endpoints_file, reload)
        if mode == "kubernetes":
            if not s.selector:
                raise ConfigError("--discovery kubernetes needs --selector key=value[,key=value]")
            return KubernetesWatcher(
                s.namespace, s.selector, reload, s.target_ports, s.kv_events_port, api_client=s.kube_api_client
            )
        return None

    def _admission(self, config: SchedulerConfig, scheduler: Scheduler) -> Admission:
        admitters = [p for p in scheduler.plugins.values() if p.kind == "admitter"]
        try:
            return Admission.from_config(
                config,
                self.settings.queue_size,
                self.settings.queue_ttl_s,
                self.metrics,
                admitters,
                priorities=list(self.settings.objectives.values()),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    # -- hashing settings ----------------------------------------------------------------------------
    def hash_settings(self) -> HashSettings:
        """Flags first, then the precise scorer's explicit parameters, then the engines' cache_config_info."""
        info = self.datalayer.cache_info()
        stamp = (id(self.config), info.block_size, info.hash_algo)
        if self._hash_cache is not None and self._hash_cache[0] == stamp:
            return self._hash_cache[1]
        s = self.settings
        settings = resolve_hash_settings(
            self.scheduler.needs,
            (s.block_size, s.hash_algo, s.hash_seed),
            (info.block_size, info.hash_algo if info.hash_algo in HASH_ALGOS else None, None),
        )
        self._hash_cache = (stamp, settings)
        return settings

    def needs_tokens(self) -> bool:
        """Tokenize only when something uses tokens: a precise scorer, a P/D decider, or an explicit tokenizer."""
        if self.settings.tokenizer:
            return True
        return self.scheduler.needs.tokens

    def _tokenize_urls(self) -> list[str]:
        return [e.key for e in self.datalayer.candidates()]

    def _on_tokenize_error(self, message: str) -> None:
        self.metrics.errors.labels("tokenize").inc()
        log.debug("%s", message)

    def _on_gap(self, endpoint: str, expected: int, got: int) -> None:
        self.metrics.kv_event_errors.labels(endpoint).inc()
        log.warning(
            "KV events from %s: gap, expected seq %d, got %d (%d messages lost)",
            endpoint,
            expected,
            got,
            got - expected,
        )

    # -- membership ----------------------------------------------------------------------------------
    def kv_spec(self, spec: EndpointSpec) -> EndpointSpec:
        """The endpoint's KV event source: its own `kvEvents`, else the precise scorer's kvEventsConfig."""
        if spec.kv_events is not None:
            return spec
        kec = self.scheduler.needs.kv_events
        if kec is None:
            return spec
        if kec.zmq_endpoint:
            kv = KVEventsSpec(kec.zmq_endpoint, topic=kec.topic_filter or "", bind=True)
        elif kec.discover_pods:
            port = kec.socket_port
            host = spec.address.rpartition(":")[0]
            kv = KVEventsSpec(f"tcp://{host}:{port}", topic=kec.topic_filter or "", bind=False)
        else:
            return spec
        from dataclasses import replace

        return replace(spec, kv_events=kv)

    def _on_membership(self, added: list[EndpointSpec], removed: list[EndpointSpec]) -> None:
        self.subscriber.on_membership([self.kv_spec(s) for s in added], [self.kv_spec(s) for s in removed])
        for spec in removed:
            self.indexes.remove_endpoint(spec.key)

    # -- config hot swap -----------------------------------------------------------------------------
    def swap_config(self, config: SchedulerConfig) -> None:
        """Switch the scheduling config live; in-flight requests finish with the scheduler they started on."""
        old_kv = {s.key: self.kv_spec(s) for s in (st.spec for st in self.datalayer.states.values())}
        scheduler = Scheduler(config, self.indexes, inflight=self.inflight)
        self.admission = self._admission(config, scheduler)
        old, self.scheduler = self.scheduler, scheduler
        old.close()
        self.config = config
        self.config_version += 1
        self._hash_cache = None
        self.metrics.config_swaps.inc()
        new_kv = {k: self.kv_spec(st.spec) for k, st in self.datalayer.states.items()}
        changed = [k for k in new_kv if new_kv[k] != old_kv.get(k)]
        if changed:
            self.subscriber.on_membership([new_kv[k] for k in changed], [old_kv[k] for k in changed if k in old_kv])
        log.info(
            "scheduling config switched (version %d): profiles %s",
            self.config_version,
            [p.name for p in config.profiles],
        )

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.hub.reopen()
        self.stopping = False
        await self.datalayer.start()
        await self.subscriber.start([self.kv_spec(st.spec) for st in self.datalayer.states.values()])
        if self.watcher is not None:
            self.watcher.start()

    def begin_shutdown(self) -> None:
        """The server is stopping: end the decision streams now (they never end on their own, and the HTTP
        server waits for open responses before it runs the lifespan shutdown); proxied streams get
        `shutdown_timeout_s` to finish, then their pod connections are cut."""
        self.hub.close()
        if self.open_upstreams:
            grace = max(0.0, self.settings.shutdown_timeout_s)
            asyncio.get_running_loop().call_later(grace, self.cut_open_streams)

    def cut_open_streams(self) -> None:
        self.stopping = True
        for up in list(self.open_upstreams):
            up.abort()

    async def stop(self, step_timeout_s: float = 1.0) -> None:
        """Stop everything, each step bounded, none able to block the others (SIGTERM must exit promptly)."""
        self.hub.close()
        steps: list[tuple[str, Any]] = []
        if self.watcher is not None:
            steps.append(("discovery", self.watcher.stop))
        steps += [
            ("kv events", self.subscriber.stop),
            ("scraping", self.datalayer.stop),
            ("backend pool", self.pool.aclose),
        ]
        close = getattr(self._tokenizer, "aclose", None)
        if close is not None:
            steps.append(("tokenizer", close))
        for what, step in steps:
            try:
                async with asyncio.timeout(step_timeout_s + 0.5):
                    await step()
            except TimeoutError:
                log.warning("shutdown: stopping %s took over %.1fs; skipped", what, step_timeout_s + 0.5)
            except Exception as exc:
                log.warning("shutdown: stopping %s failed: %s: %s", what, type(exc).__name__, exc)

    def _discovery_state(self) -> dict[str, Any]:
        s = self.settings
        if isinstance(self.watcher, KubernetesWatcher):
            return self.watcher.describe()
        out: dict[str, Any] = {"mode": s.discovery_mode, "static": len(s.endpoints)}
        if isinstance(self.watcher, FileWatcher):
            out.update(file=s.endpoints_file, errors=self.watcher.errors)
        return out

    def describe(self) -> dict[str, Any]:
        """`/debug/endpoints`: the data layer, the index sizes, the subscriber and the active config."""
        hs = self.hash_settings()
        inflight = self.inflight.snapshot()  # once, not per endpoint
        return {
            "endpoints": [
                {**e, "inflight": inflight.get(e["endpoint"], {"requests": 0, "tokens": 0, "decoding": 0})}
                for e in self.datalayer.snapshot()
            ],
            "indexes": self.indexes.stats(),
            "kv_events": self.subscriber.snapshot(),
            "hashing": {"block_size": hs.block_size, "algo": hs.algo, "seed": "(default)" if not hs.seed else "(set)"},
            "config": {
                "version": self.config_version,
                "profiles": [p.name for p in self.config.profiles],
                "path": self.settings.config_path,
            },
            "discovery": self._discovery_state(),
            "decisions": {
                "published": self.hub.published,
                "subscribers": self.hub.subscribers,
                "dropped": self.hub.dropped,
            },
            "predictors": {name: p.stats() for name, p in self.scheduler.plugins.items() if hasattr(p, "stats")},
        }


def config_from_text(text: str, origin: str) -> SchedulerConfig:
    """An EndpointPickerConfig posted as JSON or YAML text (never read as a file path)."""
    import yaml

    from router_lite.config import ConfigError

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML or JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: expected an EndpointPickerConfig mapping, got {type(doc).__name__}")
    return load_config(doc, origin=origin)


_CONFIG_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def named_config(directory: str | None, name: Any) -> tuple[SchedulerConfig, str]:
    """The EndpointPickerConfig `NAME.yaml` of the `--named-configs` directory, by name only: a request must
    never name a file (`/etc/shadow` once had its first line echoed back in the error). The router takes
    configs; which profile names exist is the caller's business (`llmdctl up` writes the shipped ones)."""
    if not isinstance(name, str) or not _CONFIG_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"profile: expected a config name (a-z, 0-9, '-', '.', '_'), got {str(name)[:80]!r}")
    if not directory:
        raise ConfigError('profile: this router was started without --named-configs; send {"config": {...}} instead')
    path = Path(directory) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in Path(directory).glob("*.yaml"))) or "none"
        raise ConfigError(f"profile: no config named {name!r}; known: {known}")
    return load_config_file(path), name


def settings_summary(settings: RouterSettings) -> str:
    out = f"{len(settings.endpoints)} static endpoint(s)"
    mode = settings.discovery_mode
    if mode == "file" and settings.endpoints_file:
        out += f" + {Path(settings.endpoints_file).name}"
    elif mode == "kubernetes":
        ns = settings.namespace or "(own namespace)"
        out += f" + pods in {ns} matching {settings.selector} on port(s) {','.join(map(str, settings.target_ports))}"
    return out
