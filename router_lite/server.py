"""Running a router: uvicorn on uvloop/httptools (when installed), bound to loopback unless told otherwise."""

from __future__ import annotations

import logging

from router_lite.app_state import RouterSettings, RouterState, settings_summary

log = logging.getLogger("router_lite")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def serve(settings: RouterSettings) -> None:
    """Build the router and serve until interrupted (blocking)."""
    import uvicorn

    from router_lite.gateway import build_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per scrape otherwise
    logging.getLogger("httpcore").setLevel(logging.WARNING)
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
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower() if settings.log_level.lower() != "debug" else "info",
        access_log=False,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        timeout_keep_alive=60,
        lifespan="on",
    )
