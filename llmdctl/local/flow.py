"""The router config `llmdctl up` writes: the profile's, with llm-d's flow control added when it has none.

Why: with only a queue and objectives, the router judged saturation from scraped queue depth (stale by up to
a scrape) and let requests through until every pod held several waiting — where priority no longer applied,
so a critical request waited behind a pod's queue at 5x load. Added here, as llm-d configures it:
`concurrency-detector` (the router's own in-flight count; `maxConcurrency` = the pools' `max_num_seqs`, so
pods hold no waiting queue and the wait happens in the router's priority bands), also first in each
scheduling profile as the filter that keeps a full pod out while another has a free seat; and
`priority-holdback-policy` (`router.holdback_min_ceiling`), which stops lower bands short of full so a
critical request finds a seat free. A profile that configures any saturation detector or flowControl itself
is left as written, and so is one without a queue (`router.queue_size: 0`).
"""

from __future__ import annotations

import copy
from typing import Any

from llmdctl.profile import Profile

DETECTOR = "concurrency-detector"
HOLDBACK = "priority-holdback-policy"
_FLOW_TYPES = (DETECTOR, HOLDBACK, "utilization-detector", "static-usage-limit-policy")


def router_config(profile: Profile) -> dict[str, Any]:
    config = profile.router.config
    plugins = config.get("plugins") or []
    own = (
        "saturationDetector" in config or "flowControl" in config or any(p.get("type") in _FLOW_TYPES for p in plugins)
    )
    seats = [p.max_num_seqs for p in profile.pools if p.replicas]
    if own or profile.router.queue_size <= 0 or not seats:
        return config
    out = copy.deepcopy(config)
    out["plugins"] = [*plugins, {"type": DETECTOR, "parameters": {"maxConcurrency": min(seats)}}]
    flow: dict[str, Any] = {"saturationDetector": {"pluginRef": DETECTOR}}
    if profile.router.holdback_min_ceiling < 1.0:
        out["plugins"].append({"type": HOLDBACK, "parameters": {"minCeiling": profile.router.holdback_min_ceiling}})
        flow["usageLimitPolicyPluginRef"] = HOLDBACK
    out["flowControl"] = flow
    for prof in out.get("schedulingProfiles") or []:
        prof["plugins"] = [{"pluginRef": DETECTOR}, *(prof.get("plugins") or [])]
    return out
