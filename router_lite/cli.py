"""`router serve`: the Typer sub-app llmdctl mounts as `llmdctl router`, also `python -m router_lite serve`.

Flag names are an interface: `llmdctl up` builds router command lines from them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="router_lite: llm-d's endpoint picker and OpenAI gateway, in Python.",
    no_args_is_help=True,
    add_completion=False,
)


DISCOVERY_MODES = ("static", "file", "kubernetes")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _objectives(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = int(value)
        except ValueError:
            _fail(f"--objective {item!r}: expected NAME=PRIORITY with an integer priority, e.g. batch=-1")
    return out


@app.callback()
def _group() -> None:
    """router_lite: llm-d's endpoint picker and OpenAI gateway, in Python."""


def _admin_key(path: Optional[Path]) -> Optional[str]:
    """The admin key from --admin-key-file, else $LLMD_ROUTER_ADMIN_KEY; a file that is unusable is an error."""
    if path is None:
        return os.environ.get("LLMD_ROUTER_ADMIN_KEY") or None
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"--admin-key-file: cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}")
    if len(key) < 16 or any(c.isspace() for c in key):
        _fail(f"--admin-key-file: {path} must hold one key of at least 16 characters, no spaces")
    return key


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    config: Optional[Path] = typer.Option(None, "--config", help="EndpointPickerConfig YAML (llm-d's shape)."),
    endpoints: Optional[str] = typer.Option(None, help="Static endpoints: host:port[@role],host:port,..."),
    endpoints_file: Optional[Path] = typer.Option(
        None, help="Endpoints file (file-discovery YAML), watched for changes."
    ),
    discovery: Optional[str] = typer.Option(
        None,
        help=(
            "Where endpoints come from besides --endpoints: static, file (--endpoints-file) or kubernetes (pods). "
            "Default: file with --endpoints-file, else static."
        ),
    ),
    namespace: Optional[str] = typer.Option(
        None, help="kubernetes discovery: the pods' namespace (default: the router pod's own)."
    ),
    selector: Optional[str] = typer.Option(
        None, help="kubernetes discovery: pod label selector key=value[,key=value]."
    ),
    target_ports: str = typer.Option(
        "8000", help="kubernetes discovery: model server port(s) per pod, one per data-parallel rank (8000[,8001...])."
    ),
    kv_events_port: Optional[int] = typer.Option(
        None, help="kubernetes discovery: the pods' KV event publisher port (rank r: port + r); none: no events."
    ),
    tokenizer: Optional[str] = typer.Option(
        None, help="Local Hugging Face tokenizer dir, 'builtin', or 'engine' (default: the engine's /tokenize)."
    ),
    block_size: Optional[int] = typer.Option(
        None, help="KV block size in tokens (default: the engine's cache_config_info, else 16)."
    ),
    hash_algo: Optional[str] = typer.Option(None, help="sha256 or sha256_cbor (default: the engine's, else sha256)."),
    hash_seed: Optional[str] = typer.Option(
        None, help="The engines' PYTHONHASHSEED (default: $PYTHONHASHSEED, else vLLM's default)."
    ),
    api_key: Optional[str] = typer.Option(
        None, envvar="LLMD_ROUTER_API_KEY", help="Require 'Authorization: Bearer KEY'."
    ),
    admin_key_file: Optional[Path] = typer.Option(
        None,
        "--admin-key-file",
        help=(
            "File holding the key POST /admin/* requires (else $LLMD_ROUTER_ADMIN_KEY, else --api-key; none: admin "
            "changes off)."
        ),
    ),
    max_body_bytes: int = typer.Option(16 * 1024 * 1024, help="Largest request body accepted."),
    scrape_interval_ms: float = typer.Option(50.0, help="How often each endpoint's /metrics is scraped."),
    max_retries: int = typer.Option(2, help="Other endpoints tried when one fails before its first byte."),
    request_timeout: float = typer.Option(
        600.0, min=0.001, help="Seconds a proxied request may wait for its first byte."
    ),
    header_timeout: float = typer.Option(
        10.0, min=0.001, help="Seconds a pod may take to send a streaming answer's headers (sent before generating)."
    ),
    idle_timeout: float = typer.Option(60.0, min=0.001, help="Seconds a streamed answer may pause between two chunks."),
    client_body_timeout: float = typer.Option(
        30.0, min=0.001, help="Seconds a client may pause while sending its request body (then 408)."
    ),
    unresponsive_after: float = typer.Option(
        10.0,
        min=0.001,
        help=(
            "Seconds without any answer to scrapes and health probes after which requests waiting on a pod give up "
            "(and are retried elsewhere when nothing was sent yet)."
        ),
    ),
    silent_after: float = typer.Option(
        0.7,
        min=0.0,
        help=(
            "Seconds without an answer to scrapes and probes after which a pod leaves rotation while other pods "
            "answer (a hung pod; 0: off)."
        ),
    ),
    objective: list[str] = typer.Option(
        [], "--objective", help="NAME=PRIORITY: priority of requests for a model/objective (repeatable)."
    ),
    queue_size: int = typer.Option(0, min=0, help="Flow-control queue capacity when saturated (0: no queue)."),
    queue_ttl: float = typer.Option(30.0, min=0.001, help="Seconds a queued request may wait."),
    shutdown_timeout: float = typer.Option(
        1.0, help="On SIGTERM, seconds in-flight responses may take before they are cut."
    ),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    pool_name: str = typer.Option(
        "default", help="The InferencePool this router serves: the `name` label of the inference_pool_* metrics."
    ),
    named_configs: Optional[Path] = typer.Option(
        None,
        "--named-configs",
        help=(
            'Directory of EndpointPickerConfig files NAME.yaml that POST /admin/profile {"profile": NAME} may switch '
            "to."
        ),
    ),
) -> None:
    """Serve the OpenAI API, routing each request to the best model server."""
    from router_lite.app_state import RouterSettings, load_scheduler_config
    from router_lite.config import ConfigError
    from router_lite.datalayer import (
        DiscoveryError,
        load_endpoints_file,
        parse_endpoint_list,
        parse_ports,
        parse_selector,
    )
    from router_lite.datalayer.k8s_discovery import check_client_config
    from router_lite.tokenization import HashSettings, TokenizationError

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        _fail(f"--log-level: expected debug, info, warning or error, got {log_level!r}")
    if not 0 < port < 65536:
        _fail(f"--port: expected 1-65535, got {port}")
    if max_body_bytes <= 0:
        _fail(f"--max-body-bytes: expected a positive integer, got {max_body_bytes}")
    if scrape_interval_ms < 0:
        _fail(f"--scrape-interval-ms: expected >= 0, got {scrape_interval_ms}")
    if max_retries < 0:
        _fail(f"--max-retries: expected >= 0, got {max_retries}")
    if shutdown_timeout < 0:
        _fail(f"--shutdown-timeout: expected >= 0, got {shutdown_timeout}")
    admin_key = _admin_key(admin_key_file)
    mode = discovery or ("file" if endpoints_file is not None else "static")
    if mode not in DISCOVERY_MODES:
        _fail(f"--discovery: expected one of {', '.join(DISCOVERY_MODES)}, got {discovery!r}")
    if mode == "file" and endpoints_file is None:
        _fail("--discovery file needs --endpoints-file FILE")
    if mode != "file" and endpoints_file is not None:
        _fail(f"--endpoints-file is for --discovery file, not {mode}")
    if mode != "kubernetes":
        for flag, value in (("--namespace", namespace), ("--selector", selector), ("--kv-events-port", kv_events_port)):
            if value is not None:
                _fail(f"{flag} is for --discovery kubernetes")
    ports: list[int] = [8000]
    try:
        HashSettings(block_size or 16, hash_algo or "sha256")
        specs = parse_endpoint_list(endpoints) if endpoints else []
        if endpoints_file is not None:
            load_endpoints_file(endpoints_file)  # validate now: a typo is an error at start, not a silent empty pool
        if mode == "kubernetes":
            if not selector:
                raise DiscoveryError(
                    "--discovery kubernetes needs --selector key=value[,key=value], e.g. llm-d.ai/inferenceServing=true"
                )
            selector = parse_selector(selector)
            ports = parse_ports(target_ports)
            if kv_events_port is not None and not 0 < kv_events_port < 65536:
                raise DiscoveryError(f"--kv-events-port: expected 1-65535, got {kv_events_port}")
            check_client_config()
        cfg = load_scheduler_config(str(config) if config else None)
    except (DiscoveryError, ConfigError, TokenizationError) as exc:
        _fail(str(exc))
    if named_configs is not None and not named_configs.is_dir():
        _fail(f"--named-configs {named_configs}: not a directory")
    if not specs and mode == "static":
        _fail(
            "no endpoints: give --endpoints host:port,..., --endpoints-file FILE, or --discovery kubernetes --selector "
            "..."
        )
    settings = RouterSettings(
        host=host,
        port=port,
        config=cfg,
        config_path=str(config) if config else None,
        endpoints=specs,
        endpoints_file=str(endpoints_file) if endpoints_file else None,
        discovery=mode,
        namespace=namespace or None,
        selector=selector,
        target_ports=ports,
        kv_events_port=kv_events_port,
        tokenizer=tokenizer,
        block_size=block_size,
        hash_algo=hash_algo,
        hash_seed=hash_seed,
        api_key=api_key or None,
        admin_key=admin_key,
        max_body_bytes=max_body_bytes,
        scrape_interval_ms=scrape_interval_ms,
        max_retries=max_retries,
        request_timeout_s=request_timeout,
        header_timeout_s=header_timeout,
        idle_timeout_s=idle_timeout,
        unresponsive_after_s=unresponsive_after,
        silent_after_s=silent_after,
        client_body_timeout_s=client_body_timeout,
        objectives=_objectives(objective),
        pool_name=pool_name,
        queue_size=queue_size,
        queue_ttl_s=queue_ttl,
        shutdown_timeout_s=shutdown_timeout,
        log_level=log_level,
        named_configs=str(named_configs) if named_configs else None,
    )
    try:
        from router_lite.server import serve as run

        run(settings)
    except TokenizationError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")


def main() -> None:
    app()
