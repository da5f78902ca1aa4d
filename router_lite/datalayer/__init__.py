"""The data layer: which endpoints exist (static list, watched file, or Kubernetes pods), their metrics and health."""

from router_lite.datalayer.discovery import (
    DiscoveryError,
    EndpointSpec,
    FileWatcher,
    KVEventsSpec,
    load_endpoints_file,
    parse_endpoint_list,
    parse_endpoints_doc,
    write_endpoints_file,
)
from router_lite.datalayer.k8s_discovery import KubernetesWatcher, parse_ports, parse_selector
from router_lite.datalayer.scrape import CacheInfo, parse_vllm_metrics
from router_lite.datalayer.store import DataLayer, EndpointState

__all__ = [
    "CacheInfo",
    "DataLayer",
    "DiscoveryError",
    "EndpointSpec",
    "EndpointState",
    "FileWatcher",
    "KVEventsSpec",
    "KubernetesWatcher",
    "load_endpoints_file",
    "parse_endpoint_list",
    "parse_endpoints_doc",
    "parse_ports",
    "parse_selector",
    "parse_vllm_metrics",
    "write_endpoints_file",
]
