"""Prometheus Operator scrape objects (PodMonitor for the model servers, ServiceMonitor for the pickers), as
llm-d's guides ship them, and the schema they are checked against.

Their CRDs belong to the Prometheus Operator, which the cluster must run: llmdctl neither ships nor installs
them, so `validate` checks these objects against the subset of the CRD schema written here (the fields used,
unknown ones rejected).
"""

from __future__ import annotations

from typing import Any

API_VERSION = "monitoring.coreos.com/v1"
KINDS = ("PodMonitor", "ServiceMonitor")

_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
        "scheme": {"enum": ["http", "https"]},
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "spec"],
    "properties": {
        "apiVersion": {"const": API_VERSION},
        "kind": {"enum": list(KINDS)},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
                "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
            },
        },
    },
}


def pod_monitor(name: str, namespace: str, match_labels: dict[str, str], port: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "PodMonitor",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": match_labels},
            "podMetricsEndpoints": [{"port": port, "path": "/metrics", "interval": "15s"}],
        },
    }


def service_monitor(name: str, namespace: str, match_labels: dict[str, str], port: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": match_labels},
            "endpoints": [{"port": port, "path": "/metrics", "interval": "15s"}],
        },
    }
