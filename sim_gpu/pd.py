"""Prefill/decode disaggregation: `kv_transfer_params` as vLLM's NIXL connector reads and writes them.

The P/D proxy (llm-d's routing sidecar, vLLM's toy proxy) sends the request to a prefill pod with
`{"do_remote_decode": true}`; that pod computes the prompt's KV, keeps the blocks and answers with params
naming them (`do_remote_prefill: true, remote_block_ids, remote_engine_id, remote_host, remote_port, tp_size`).
The proxy forwards those params to a decode pod, which pulls the KV instead of recomputing it: here the
engine charges the transfer time of the prompt's KV bytes over the configured network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sim_gpu.engine import RemotePrefill

Role = Literal["prefill", "decode", "both", "encode"]
ROLES: tuple[str, ...] = ("prefill", "decode", "both", "encode")  # encode: E/P/D's encoder pod (multimodal.py)


@dataclass(frozen=True)
class PDPlan:
    """What a request's kv_transfer_params ask of this pod."""

    prefill_only: bool = False  # prefill side: compute, keep blocks, return params for the decode pod
    remote_prefill: RemotePrefill | None = None  # decode side: the prompt's KV comes over the network
    ignored_reason: str | None = None  # params this pod's role does not honour (served as a plain request)


def plan(params: dict[str, Any] | None, prompt_len: int, role: Role) -> PDPlan:
    """Decide how to run a request from its kv_transfer_params and this pod's role."""
    if not params:
        return PDPlan()
    if params.get("do_remote_decode"):
        if role == "decode":
            return PDPlan(ignored_reason="do_remote_decode sent to a decode-only pod")
        return PDPlan(prefill_only=True)
    if params.get("do_remote_prefill"):
        if role == "prefill":
            return PDPlan(ignored_reason="do_remote_prefill sent to a prefill-only pod")
        block_ids = params.get("remote_block_ids")
        if not isinstance(block_ids, list) or not block_ids:
            # vLLM's connector has nothing to pull without block ids: the request is prefilled locally.
            return PDPlan(ignored_reason="do_remote_prefill without remote_block_ids")
        # vLLM pulls every prompt token but the last, which the decode pod recomputes to sample from.
        tp = params.get("tp_size")
        remote_tp = tp if isinstance(tp, int) and not isinstance(tp, bool) and tp > 0 else None
        return PDPlan(
            remote_prefill=RemotePrefill(
                num_tokens=max(prompt_len - 1, 0), remote_block_hashes=block_ids, remote_tp=remote_tp
            )
        )
    return PDPlan()


def prefill_response_params(
    block_ids: list[Any] | None, *, engine_id: str, host: str, port: int, tp_size: int, request_id: str | None = None
) -> dict[str, Any]:
    """The params a prefill pod returns, naming the blocks the decode pod should pull."""
    out: dict[str, Any] = {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_block_ids": list(block_ids or []),
        "remote_engine_id": engine_id,
        "remote_host": host,
        "remote_port": port,
        "tp_size": tp_size,
    }
    if request_id:
        out["remote_request_id"] = request_id
    return out
