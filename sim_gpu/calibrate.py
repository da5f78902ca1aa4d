"""`sim calibrate`: record traces from a real vLLM server, fit the simulator to some, judge it on the others.

Against one real vLLM pod, record the single-pod workload shapes of `sim_gpu.traces` (long shared prefixes,
many short requests, KV pressure, mixed output lengths, bursts, preemption, waves of long decodes; token-id
prompts, exact output lengths), fit the hardware profile's efficiency terms and serving costs on the fit shapes
by replaying them through the simulated engine (`sim_gpu.trace_fit`), and report the error on the held-out
shapes only: the fit shapes' error is in-sample and printed as such, never as accuracy. Optionally the held-out
shapes are recorded twice and the server's distance from itself is reported beside the simulator's: a
per-request error under it is noise. Writes the fitted hardware profile, the model profile (from the server's
config.json), the recorded traces and calibration.json.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

Say = Callable[[str], None]


class CalibrationError(RuntimeError):
    """The server cannot be measured (unreachable, unknown model shape); one line."""


@dataclass
class CalibrationResult:
    url: str
    model: str
    hardware: str
    values: dict[str, float]  # the fitted knobs (hardware fields and coefficients)
    fit: list[dict[str, Any]]  # per fit shape: in-sample errors
    heldout: list[dict[str, Any]]  # per held-out shape: the accuracy
    before: list[dict[str, Any]] = field(default_factory=list)  # held-out shapes with the profile before the fit
    fit_objective: dict[str, float] = field(default_factory=dict)  # mean |log sim/real| on the fit shapes
    skipped: list[str] = field(default_factory=list)  # shapes the server cannot take (prompt over max_model_len)
    # per held-out shape recorded twice (--repeat-heldout): the server against itself, and the fitted profile
    # against the second recording (held out in time as well)
    run_to_run: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the model's shape -----------------------------------------------------------------------------------


def model_profile_from_hf(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A sim_gpu model profile (YAML mapping) from a Hugging Face Llama-style config.json."""
    h = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    hd = int(config.get("head_dim") or h // heads)
    layers = int(config["num_hidden_layers"])
    inter = int(config["intermediate_size"])
    vocab = int(config["vocab_size"])
    per_layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * inter
    embed = vocab * h * (1 if config.get("tie_word_embeddings") else 2)
    params_b = (layers * per_layer + embed) / 1e9
    dtype_bytes = 4 if str(config.get("dtype") or config.get("torch_dtype")) == "float32" else 2
    return {
        "name": name,
        "num_layers": layers,
        "hidden_size": h,
        "num_attention_heads": heads,
        "num_kv_heads": kv,
        "head_dim": hd,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "params_b": round(params_b, 6),
        "active_params_b": round(params_b, 6),
        "dtype_bytes": dtype_bytes,
        "kv_dtype_bytes": dtype_bytes,
        "max_model_len": int(config.get("max_position_embeddings") or 4096),
    }


# ---- what the server is ----------------------------------------------------------------------------------


def server_model(client: httpx.Client, url: str) -> tuple[str, str | None, int | None]:
    """(served model name, local model directory when the server says, max_model_len when it says)."""
    try:
        data = client.get(url + "/v1/models").json()["data"][0]
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        raise CalibrationError(f"{url}/v1/models: cannot read the served model ({exc})") from None
    max_len = data.get("max_model_len")
    return data["id"], data.get("root"), int(max_len) if isinstance(max_len, int) else None


def server_cache_config(client: httpx.Client, url: str) -> dict[str, str]:
    """The labels of vLLM's `vllm:cache_config_info` gauge (block_size, num_gpu_blocks, ...)."""
    try:
        text = client.get(url + "/metrics").text
    except httpx.HTTPError as exc:
        raise CalibrationError(f"{url}/metrics: cannot read the server's metrics ({exc})") from None
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info{"):
            body = line[line.index("{") + 1 : line.rindex("}")]
            labels: dict[str, str] = {}
            for part in body.split('",'):
                if "=" in part:
                    k, v = part.split("=", 1)
                    labels[k.strip()] = v.strip().strip('"')
            return labels
    raise CalibrationError(f"{url}/metrics: no vllm:cache_config_info (is this a vLLM server?)")


def server_flags(cache: dict[str, str], max_len: int | None, max_num_seqs: int) -> dict[str, str]:
    """The engine settings a replay needs, in the trace format's flag names."""
    flags = {"block-size": cache.get("block_size", "16"), "max-num-seqs": str(max_num_seqs)}
    if cache.get("num_gpu_blocks") not in (None, "", "None"):
        flags["num-gpu-blocks"] = cache["num_gpu_blocks"]
    if max_len:
        flags["max-model-len"] = str(max_len)
    return flags


# ---- calibration -----------------------------------------------------------------------------------------


def calibrate(
    url: str,
    out_dir: Path,
    hardware: str = "cpu",
    model_dir: str | None = None,
    seed: int = 0,
    max_num_seqs: int = 256,
    max_evaluations: int = 600,
    say: Say = lambda s: None,
    repeat_heldout: bool = False,
) -> CalibrationResult:
    """Record the shapes against `url`, fit `hardware` on the fit shapes, score the held-out shapes.

    `repeat_heldout`: record each held-out shape a second time, to report how far the server is from itself
    request by request (the floor under any simulator's per-request error on this machine)."""
    from sim_gpu.hw_profiles import ModelProfile, ProfileError, load_hardware
    from sim_gpu.latency import LatencyModel
    from sim_gpu.replay import as_prediction, replay_score, score
    from sim_gpu.trace_fit import FIT_SHAPES, current_values, fit, objective, profile_doc
    from sim_gpu.traces import Trace, build_shapes, record_shape

    url = url.rstrip("/")
    out_dir.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=60.0, trust_env=False) as client:
        model, root, max_len = server_model(client, url)
        cache = server_cache_config(client, url)
        version = _get_json(client, url + "/version").get("version", "")
    source = model_dir or root
    try:
        config = json.loads((Path(source) / "config.json").read_text()) if source else None
    except (OSError, ValueError):
        config = None
    if config is None:
        raise CalibrationError(
            f"calibrate: cannot read the model's config.json (server root {root!r}); pass --model-dir DIR"
        )
    try:
        hw = load_hardware(hardware)
    except ProfileError as exc:
        raise CalibrationError(str(exc)) from None
    mp = model_profile_from_hf(config, f"{Path(source).name}-calibrated")
    server = {"vllm_version": version, "model_config": config, "flags": server_flags(cache, max_len, max_num_seqs)}
    shapes = {k: s for k, s in build_shapes(int(config["vocab_size"]), seed).items() if not s.via_router}
    limit = max_len or 10**9
    skipped = [k for k, s in shapes.items() if max(s.prompt_len(p) + p.max_tokens for p in s.requests) > limit]

    def record(name: str, file: str) -> Trace:
        _reset_prefix_cache(url)
        shape = shapes[name]
        say(f"recording {file} ({len(shape.requests)} requests, {shape.description})")
        trace = asyncio.run(record_shape(shape, url, model, [url], server))
        failed = [r for r in trace.requests if not r.ok]
        if failed:
            raise CalibrationError(f"{name}: {len(failed)} requests failed, first: {failed[0].error}")
        trace.save(out_dir / "traces" / f"{file}.json")
        return trace

    traces = {}
    for name in shapes:
        if name in skipped:
            say(f"skipping {name}: its prompts exceed the server's max_model_len {max_len}")
            continue
        traces[name] = record(name, name)
    repeats = {k: record(k, f"{k}-repeat") for k in traces if repeat_heldout and k not in FIT_SHAPES}
    fit_on = [t for k, t in traces.items() if k in FIT_SHAPES]
    held = [t for k, t in traces.items() if k not in FIT_SHAPES]
    if not fit_on or not held:
        raise CalibrationError("calibrate: need at least one fit and one held-out shape the server can take")
    latency = LatencyModel(hardware=hw, model=ModelProfile(**mp))
    before = [replay_score(t, latency).row() for t in held]
    say(f"fitting on {', '.join(t.shape for t in fit_on)} ({max_evaluations} replays at most)")
    # refine the profile as it stands (its fitted terms are a better start than generic guesses)
    result = fit(fit_on, latency, held, start=current_values(latency), max_evaluations=max_evaluations)
    hw_doc = profile_doc(
        hw,
        result.values,
        name=f"{hw.name}-fitted",
        aliases=[],
        description=f"{hw.name} fitted by `sim calibrate` on traces recorded from {url} ({model})",
    )
    hw_path, model_path = out_dir / f"{hw.name}-fitted.yaml", out_dir / f"{mp['name']}.yaml"
    hw_path.write_text(yaml.safe_dump(hw_doc, sort_keys=False))
    model_path.write_text(yaml.safe_dump(mp, sort_keys=False))
    written = LatencyModel.from_names(str(hw_path), str(model_path))
    out = CalibrationResult(
        url=url,
        model=model,
        hardware=hw.name,
        values=result.values,
        fit=[s.row() for s in result.fit],
        heldout=[s.row() for s in result.heldout],
        before=before,
        fit_objective={"before": objective(fit_on, latency), "after": objective(fit_on, written)},
        skipped=skipped,
        files={"hardware": str(hw_path), "model": str(model_path), "traces": str(out_dir / "traces")},
        run_to_run=[
            {
                "shape": k,
                "real_vs_real": score(traces[k], as_prediction(t)).row(),
                "sim_vs_repeat": replay_score(t, written).row(),
            }
            for k, t in repeats.items()
        ],
    )
    (out_dir / "calibration.json").write_text(json.dumps(out.to_dict(), indent=2))
    return out


def _get_json(client: httpx.Client, url: str) -> dict[str, Any]:
    try:
        doc = client.get(url).json()
        return doc if isinstance(doc, dict) else {}
    except (httpx.HTTPError, ValueError):
        return {}


def _reset_prefix_cache(url: str) -> None:
    """Empty the server's prefix cache when it allows it (vLLM needs VLLM_SERVER_DEV_MODE=1); shapes never share
    tokens, so a server that refuses only keeps blocks nobody will hit."""
    try:
        httpx.post(url + "/reset_prefix_cache", timeout=30.0, trust_env=False)
    except httpx.HTTPError:
        pass


def report_lines(result: CalibrationResult) -> list[str]:
    """What `sim calibrate` prints: held-out accuracy first, in-sample fit second, then the profiles to use."""
    lines = [f"fitted {result.hardware}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.values.items())]
    before = {r["shape"]: r for r in result.before}
    for r in result.heldout:
        b = before.get(r["shape"])
        was = f" (before the fit: {b['ttft_median']:.0%} / {b['e2e_median']:.0%})" if b else ""
        lines.append(
            f"held-out {r['shape']} ({r['n']} requests): TTFT error median {r['ttft_median']:.1%} "
            f"p90 {r['ttft_p90']:.1%}; end-to-end median {r['e2e_median']:.1%} p90 {r['e2e_p90']:.1%}{was}"
        )
    for r in result.run_to_run:
        real, sim = r["real_vs_real"], r["sim_vs_repeat"]
        lines.append(
            f"held-out {r['shape']} recorded again: the server against itself TTFT median {real['ttft_median']:.1%}, "
            f"end-to-end median {real['e2e_median']:.1%}; the fitted profile against the second recording "
            f"{sim['ttft_median']:.1%} / {sim['e2e_median']:.1%}"
        )
    for r in result.fit:
        lines.append(
            f"fitted on {r['shape']} (in-sample, not accuracy): TTFT median {r['ttft_median']:.1%}, "
            f"end-to-end median {r['e2e_median']:.1%}"
        )
    for s in result.skipped:
        lines.append(f"skipped {s}: its prompts exceed the server's max_model_len")
    files = result.files
    lines.append(f"profiles: {files['hardware']} {files['model']} (traces in {files['traces']})")
    lines.append(f"use them: llmdctl sim serve --hardware {files['hardware']} --model-profile {files['model']}")
    return lines
