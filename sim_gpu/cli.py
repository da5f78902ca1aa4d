"""`llmdctl sim serve` / `python -m sim_gpu serve`: run simulated vLLM pods in one process.

The flag names are vLLM's where vLLM has the flag (`--block-size`, `--max-num-seqs`, `--data-parallel-size`,
`--prefix-caching-hash-algo` ...) and llm-d-inference-sim's for failure injection; `llmdctl up` builds
command lines from them, so renaming one is a breaking change.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import typer

app = typer.Typer(
    name="sim", help="Simulated vLLM model servers (sim_gpu).", no_args_is_help=True, add_completion=False
)


@app.callback()
def _sim() -> None:
    """Simulated vLLM model servers (sim_gpu)."""


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="HTTP port of pod 0 rank 0; pod i rank r listens on port + i*dp + r."),
    pods: int = typer.Option(1, help="Pods hosted by this process (consecutive ports)."),
    model: str = typer.Option("sim-model", help="Served model name (what clients put in 'model')."),
    hardware: str = typer.Option("H100", help="Hardware profile name or YAML path."),
    model_profile: str = typer.Option("Llama-3.1-8B", help="Model profile name or YAML path."),
    tp: int = typer.Option(1, help="Tensor-parallel GPUs per rank."),
    data_parallel_size: int = typer.Option(1, help="Data-parallel ranks per pod, one HTTP port each."),
    block_size: int = typer.Option(16, help="KV block size in tokens."),
    num_gpu_blocks: Optional[int] = typer.Option(None, help="KV capacity in blocks (default: from GPU memory)."),
    gpu_memory_utilization: float = typer.Option(0.9, help="Fraction of GPU memory for weights + KV cache."),
    max_num_seqs: int = typer.Option(256, help="Most sequences in one batch."),
    max_num_batched_tokens: int = typer.Option(8192, help="Most tokens in one step (chunked prefill)."),
    max_model_len: Optional[int] = typer.Option(None, help="Context length (default: the model profile's)."),
    scheduling_policy: str = typer.Option(
        "fcfs", help="vLLM's: fcfs (arrival order) or priority (request field 'priority', lower first)."
    ),
    role: str = typer.Option(
        "both", help="P/D role: prefill, decode or both; encode: an E/P/D encoder pod (multimodal items only)."
    ),
    kv_events_endpoint: str = typer.Option(
        "",
        help="ZMQ endpoint for KV events of pod 0 (tcp://*:5557 binds, tcp://host:port connects); "
        "pod i rank r uses port + i*dp + r. Empty: no events.",
    ),
    kv_events_topic: Optional[str] = typer.Option(
        None, help="Topic ({host} {port} {model} {rank} {pod} expand); default kv@<host>:<port>@<model>."
    ),
    kv_events_form: str = typer.Option("map", help="Event encoding: map (current vLLM) or positional (older vLLM)."),
    kv_events_int_hashes: bool = typer.Option(True, help="Block hashes as uint64 (vLLM default) or full digests."),
    prefix_caching_hash_algo: str = typer.Option("sha256", help="Block hash: sha256 or sha256_cbor."),
    hash_seed: Optional[str] = typer.Option(
        None, help="NONE_HASH seed (default: $PYTHONHASHSEED, else vllm-none-hash)."
    ),
    tokenizer: Optional[str] = typer.Option(None, help="Local Hugging Face tokenizer dir (default: built-in)."),
    output_mode: str = typer.Option("random", help="Generated tokens: random or echo."),
    time_scale: float = typer.Option(1.0, help="Simulated seconds per wall second (0: instant steps)."),
    seed: int = typer.Option(0, help="Random seed (outputs, jitter, failure injection)."),
    jitter: float = typer.Option(0.0, help="Relative std-dev of step times."),
    network: Optional[str] = typer.Option(None, help="Network profile for P/D KV transfers (e.g. rdma-200g)."),
    enable_expert_parallel: bool = typer.Option(False, help="MoE experts shard over all ranks (ep = tp x dp)."),
    failure_injection_rate: float = typer.Option(0.0, help="Percent of requests that fail (0-100)."),
    failure_types: Optional[list[str]] = typer.Option(
        None,
        help="Failure types (repeat or comma-separate): rate_limit, invalid_api_key, context_length, "
        "server_error, invalid_request, model_not_found. Default: all.",
    ),
    startup_delay: float = typer.Option(0.0, help="Seconds after the server listens before /health reports ready."),
    crash_after: int = typer.Option(0, help="Exit abruptly when request N+1 arrives (0: never)."),
    log_requests: bool = typer.Option(False, help="One stderr line per finished request."),
    enable_prompt_tokens_details: bool = typer.Option(
        False,
        "--enable-prompt-tokens-details",
        help="Report usage.prompt_tokens_details.cached_tokens (as vLLM's flag; default: null, as vLLM).",
    ),
    enable_scale_out: bool = typer.Option(
        False,
        "--enable-scale-out",
        help="Serve vLLM's Renderer API (/v1/completions/render, /v1/chat/completions/render), as vLLM's flag; "
        "without it those routes answer 403, as vLLM does.",
    ),
    tool_call_parser: Optional[str] = typer.Option(
        None,
        "--tool-call-parser",
        help="Emulate vLLM's tool-call parser of this name (hermes): tool_choice required / a named function "
        "answer with tool_calls; without it they are refused, as vLLM refuses them.",
    ),
    enable_auto_tool_choice: bool = typer.Option(
        False,
        "--enable-auto-tool-choice",
        help="As vLLM's flag: tool_choice auto (the default with tools) may call a tool; needs --tool-call-parser.",
    ),
    enable_lora: bool = typer.Option(False, "--enable-lora", help="Serve LoRA adapters (vLLM's flag)."),
    max_loras: int = typer.Option(1, "--max-loras", help="Most distinct adapters in one batch (vLLM's flag)."),
    max_lora_rank: int = typer.Option(16, "--max-lora-rank", help="Largest adapter rank accepted (vLLM's flag)."),
    max_cpu_loras: Optional[int] = typer.Option(
        None, "--max-cpu-loras", help="Adapters kept in host memory (default: --max-loras, as vLLM)."
    ),
    lora_modules: Optional[list[str]] = typer.Option(
        None,
        "--lora-modules",
        help="Adapters served from the start: name=path or JSON {name, path, base_model_name} (repeat). "
        "Runtime load/unload endpoints need VLLM_ALLOW_RUNTIME_LORA_UPDATING=true, as in vLLM.",
    ),
    kv_tiers: Optional[str] = typer.Option(
        None,
        "--kv-tiers",
        metavar="JSON|FILE",
        help="KV tiers below the GPU (a profile's kv_tiers section: cpu_blocks, pcie_gbps, filesystem {path, "
        "capacity_mb, bandwidth_gbps}, policies), inline JSON or a JSON/YAML file. Every pod pointed at the same "
        "filesystem path shares that tier. Default: GPU only.",
    ),
) -> None:
    """Serve simulated vLLM pods (OpenAI API, /metrics, KV events) until interrupted."""
    from sim_gpu.faults import parse_failure_types
    from sim_gpu.hw_profiles import ProfileError
    from sim_gpu.server import ServeConfig, run

    try:
        cfg = ServeConfig(
            host=host,
            port=port,
            pods=pods,
            model=model,
            hardware=hardware,
            model_profile=model_profile,
            tp=tp,
            data_parallel_size=data_parallel_size,
            block_size=block_size,
            num_gpu_blocks=num_gpu_blocks,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,
            scheduling_policy=scheduling_policy,
            role=role,
            kv_events_endpoint=kv_events_endpoint,
            kv_events_topic=kv_events_topic,
            kv_events_form=kv_events_form,
            kv_events_int_hashes=kv_events_int_hashes,
            prefix_caching_hash_algo=prefix_caching_hash_algo,
            hash_seed=hash_seed,
            tokenizer=tokenizer,
            output_mode=output_mode,
            time_scale=time_scale,
            seed=seed,
            jitter=jitter,
            network=network,
            enable_expert_parallel=enable_expert_parallel,
            failure_injection_rate=failure_injection_rate,
            failure_types=parse_failure_types(failure_types),
            startup_delay=startup_delay,
            crash_after=crash_after,
            log_requests=log_requests,
            kv_tiers=kv_tiers,
            enable_prompt_tokens_details=enable_prompt_tokens_details,
            enable_scale_out=enable_scale_out,
            tool_call_parser=tool_call_parser,
            enable_auto_tool_choice=enable_auto_tool_choice,
            enable_lora=enable_lora,
            max_loras=max_loras,
            max_lora_rank=max_lora_rank,
            max_cpu_loras=max_cpu_loras,
            lora_modules=list(lora_modules or []),
        )
        run(cfg)
    except (ValueError, ProfileError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


@app.command("fit-gpu")
def fit_gpu(
    table: str = typer.Argument(..., help="Timing table written by bench/gpu_layer_timing.py on the GPU."),
    hardware: str = typer.Option("H200", help="Hardware profile to fit (name or .yaml path)."),
    model: str = typer.Option("Llama-3.1-8B", help="Model profile the table was timed with (name or .yaml path)."),
    write_profile: Optional[str] = typer.Option(
        None, "--write-profile", help="Write the fitted hardware profile here."
    ),
    other_table: Optional[str] = typer.Option(
        None,
        "--check-table",
        help="A table timed with another model: report the "
        "fitted profile's error on all of it (a model never fitted on).",
    ),
    other_model: Optional[str] = typer.Option(
        None, "--check-model", help="The model profile --check-table was timed with."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Fit a GPU profile's efficiency terms to measured forward passes; report error on held-out shapes."""
    import json
    from pathlib import Path

    from sim_gpu.gpu_fit import GpuTableError, fit_report, load_table, transfer_report, with_terms
    from sim_gpu.hw_profiles import ProfileError, load_hardware, load_model

    try:
        info, steps = load_table(Path(table))
        hw, mp = load_hardware(hardware), load_model(model)
    except (GpuTableError, ProfileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if bool(other_table) != bool(other_model):
        typer.echo("error: --check-table and --check-model go together", err=True)
        raise typer.Exit(2)
    try:
        other = (load_model(other_model), load_table(Path(other_table))[1]) if other_table and other_model else None
    except (GpuTableError, ProfileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    report = fit_report(hw, mp, steps, info)
    if other is not None:
        report["other_model"] = transfer_report(with_terms(hw, report["terms"]), *other)
    if write_profile:
        _write_profile(Path(write_profile), with_terms(hw, report["terms"]), table)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    before, after = report["heldout_before"], report["heldout_after"]
    typer.echo(
        f"{hw.name} x {mp.name}: fitted on {report['fit_rows']} shapes, scored on {report['heldout_rows']} held out"
    )
    typer.echo("terms: " + ", ".join(f"{k}={v:g}" for k, v in report["terms"].items()))
    typer.echo(f"{'held-out error':16s} {'median':>8s} {'p90':>8s} {'max':>8s}   (profile as given -> fitted)")
    for family, errs in [("all", {"heldout_before": before, "heldout_after": after}), *report["per_family"].items()]:
        b, a = errs["heldout_before"], errs["heldout_after"]
        typer.echo(f"{family:16s} " + " ".join(f"{b[k]:7.1%}->{a[k]:.1%}" for k in ("median", "p90", "max")))
    if other is not None:
        o = report["other_model"]
        typer.echo(
            f"{o['model']} (never fitted on), every shape: "
            + ", ".join(
                f"{fam} {e['median']:.1%}/{e['p90']:.1%}" for fam, e in [("all", o["all"]), *o["per_family"].items()]
            )
            + "  (median/p90)"
        )


def _write_profile(path: Any, hw: Any, table: str) -> None:
    """The fitted profile as YAML, every field of the hardware profile spelled out."""
    from dataclasses import asdict

    import yaml

    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(hw).items() if v not in (None, {}, (), "")}
    header = f"# Efficiency terms fitted by `llmdctl sim fit-gpu {table}` (held-out error: see its report).\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))


@app.command("calibrate")
def calibrate(
    url: str = typer.Option(
        ..., "--url", help="Base URL of a real vLLM server (one pod, not the router), e.g. http://127.0.0.1:8100."
    ),
    hardware: str = typer.Option(
        "cpu", "--hardware", help="Hardware profile whose coefficients are fitted (name or YAML path)."
    ),
    model_dir: Optional[str] = typer.Option(
        None, "--model-dir", help="Model directory (config.json) when the server does not report one."
    ),
    out: Optional[str] = typer.Option(
        None, "--out", help="Folder for the fitted profiles and calibration.json (default $LLMDCTL_HOME/calibration)."
    ),
    max_num_seqs: int = typer.Option(
        256, "--max-num-seqs", help="The server's --max-num-seqs (vLLM does not export it; 256 is its default)."
    ),
    max_evaluations: int = typer.Option(600, "--max-evaluations", help="Replays the fit may run (more: closer fit)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the recorded workloads."),
    repeat_heldout: bool = typer.Option(
        False,
        "--repeat-heldout",
        help="Record each held-out shape twice and report the server's own run-to-run error beside the simulator's "
        "(~1.5 minutes more).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Record traces from a real vLLM server (--url; ~3 minutes), fit a hardware profile to some of them, and report
    sim-vs-real TTFT and end-to-end errors on the held-out ones (the fit's own traces are in-sample, not accuracy)."""
    import json
    from pathlib import Path

    import httpx

    from sim_gpu.calibrate import CalibrationError, report_lines
    from sim_gpu.calibrate import calibrate as run_calibration

    home = Path(os.environ.get("LLMDCTL_HOME") or Path.home() / ".llmdctl").expanduser()  # llmdctl's run directory
    target = Path(out).expanduser() if out else home / "calibration"
    say = (lambda s: None) if as_json else (lambda s: typer.echo(s, err=True))
    try:
        result = run_calibration(
            url,
            target,
            hardware=hardware,
            model_dir=model_dir,
            seed=seed,
            max_num_seqs=max_num_seqs,
            max_evaluations=max_evaluations,
            say=say,
            repeat_heldout=repeat_heldout,
        )
    except (CalibrationError, httpx.HTTPError) as exc:
        typer.echo(f"error: {exc}".splitlines()[0], err=True)
        raise typer.Exit(1) from None
    for line in [json.dumps(result.to_dict(), indent=2)] if as_json else report_lines(result):
        typer.echo(line)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
