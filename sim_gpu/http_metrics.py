"""The http_* families a vLLM pod exports (its API server is instrumented with prometheus-fastapi-instrumentator's
defaults), as an ASGI middleware over one pod's routes.

Same names, types, labels and buckets: `http_requests_total{handler,method,status}` with statuses grouped
("2xx"), request/response size summaries per handler, a fine latency histogram without labels and a coarse one
per handler and method. Like vLLM, /metrics, /health, /ping, /version ... are not counted; paths no route
matches are counted under handler "none".
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary

HIGHR_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60)
LOWR_BUCKETS = (0.1, 0.5, 1)
EXCLUDED = frozenset({"/metrics", "/health", "/load", "/ping", "/version", "/server_info"})


class HTTPMetrics:
    """ASGI middleware: counts every request to `app` whose path is one of `handlers`."""

    def __init__(self, app: Any, registry: CollectorRegistry, handlers: set[str]) -> None:
        self.app = app
        self.handlers = handlers
        self.requests = Counter(
            "http_requests",
            "Total number of requests by method, status and handler.",
            ("method", "status", "handler"),
            registry=registry,
        )
        self.req_size = Summary(
            "http_request_size_bytes",
            "Content length of incoming requests by handler. Only "
            "value of header is respected. Otherwise ignored. No percentile calculated. ",
            ("handler",),
            registry=registry,
        )
        self.resp_size = Summary(
            "http_response_size_bytes",
            "Content length of outgoing responses by handler. Only "
            "value of header is respected. Otherwise ignored. No percentile calculated. ",
            ("handler",),
            registry=registry,
        )
        self.highr = Histogram(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. Made for more accurate percentile calculations. ",
            buckets=HIGHR_BUCKETS,
            registry=registry,
        )
        self.lowr = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important. ",
            ("method", "handler"),
            buckets=LOWR_BUCKETS,
            registry=registry,
        )
        self._series: dict[tuple[str, int, str], tuple[Any, Any, Any, Any]] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in EXCLUDED:
            await self.app(scope, receive, send)
            return
        handler = path if path in self.handlers else "none"
        start = time.perf_counter()
        status, sent = [500], [0]

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            took = time.perf_counter() - start
            method = scope.get("method", "GET")
            length = next((v for k, v in scope.get("headers") or () if k == b"content-length"), b"0")
            key = (method, status[0] // 100, handler)
            series = self._series.get(key)
            if series is None:  # label lookups once per (method, status class, handler), not per request
                series = self._series[key] = (
                    self.requests.labels(method, f"{key[1]}xx", handler),
                    self.req_size.labels(handler),
                    self.resp_size.labels(handler),
                    self.lowr.labels(method, handler),
                )
            count, req_size, resp_size, lowr = series
            count.inc()
            req_size.observe(int(length) if length.isdigit() else 0)
            resp_size.observe(sent[0])
            self.highr.observe(took)
            lowr.observe(took)
