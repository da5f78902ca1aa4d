"""Running a router: uvicorn on uvloop/httptools (when installed), bound to loopback unless told otherwise."""

from __future__ import annotations

import logging

from router_lite.app_state import RouterSettings, RouterState, settings_summary

log = logging.getLogger("router_lite")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _server_class():
    import uvicorn

    class RouterServer(uvicorn.Server):
        """uvicorn's server, told the router is stopping before it waits for open responses.

        On SIGTERM uvicorn stops accepting, then waits for every open response to finish before running
        the lifespan shutdown. A `/debug/decisions` stream never finishes, so the decision streams are
        closed first; proxied streams still running after `shutdown_timeout_s` are cut.
        """

        def __init__(self, config: "uvicorn.Config", state: RouterState) -> None:
            super().__init__(config)
            self.router_state = state

        async def shutdown(self, sockets=None) -> None:  # type: ignore[override]
            self.router_state.begin_shutdown()
            await super().shutdown(sockets)

    return RouterServer


def warn_if_admin_exposed(settings: RouterSettings) -> bool:
    """Say at start that POST /admin/* is refused (non-loopback bind, no API key); True when it is."""
    from router_lite.gateway import ADMIN_LOCKED_MESSAGE, admin_locked

    if admin_locked(settings):
        log.warning("%s (bound to %s)", ADMIN_LOCKED_MESSAGE, settings.host)
        return True
    return False


def _check_port_free(host: str, port: int) -> None:
    """One line and exit 2 when the port is taken, instead of uvicorn's multi-line bind failure."""
    import socket
    import sys

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            sys.stderr.write(f"error: --port {port}: cannot listen on {host}:{port}: {exc.strerror or exc}\n")
            raise SystemExit(2) from None


def serve(settings: RouterSettings) -> None:
    """Build the router and serve until interrupted (blocking)."""
    import uvicorn

    from router_lite.gateway import build_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per scrape otherwise
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    _check_port_free(settings.host, settings.port)
    state = RouterState(settings)
    app = build_app(state=state)
    log.info(
        "router_lite on http://%s:%d: %s, profiles %s",
        settings.host,
        settings.port,
        settings_summary(settings),
        [p.name for p in state.config.profiles],
    )
    for w in state.config.warnings:
        log.warning("%s", w)
    warn_if_admin_exposed(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower() if settings.log_level.lower() != "debug" else "info",
        access_log=False,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        timeout_keep_alive=60,
        # The router cuts its own streams at shutdown_timeout_s (RouterState.begin_shutdown); uvicorn's
        # cancellation is the backstop for anything else still open.
        timeout_graceful_shutdown=max(0.0, settings.shutdown_timeout_s) + 0.5,
        lifespan="on",
    )
    server = _server_class()(config, state)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise SystemExit(3)  # uvicorn logged why (e.g. the port is in use)
