"""Fit the simulator's latency coefficients to a real server, then check the fit on a held-out workload.

Measure (against one real vLLM server, token-id prompts so tokenization cannot blur the numbers):
TTFT versus prompt length with no cache hit, TTFT with a prefix hit, and decode step time (inter-token
latency) versus batch size. Each measurement is one engine step shape (`sim_gpu.latency.BatchShape`), so
the simulator's roofline terms for it are known; fitting `step = overhead + per_token*n + per_seq*seqs +
max(compute*t_compute, memory*t_memory)` to the measured seconds (relative least squares, non-negative,
alternating on which roofline branch binds) gives the `Coefficients` for the hardware profile.
Then a held-out workload (other lengths, shared prefixes, several output lengths) is replayed against the
real server and against a simulator started with the fitted profile; per-request TTFT and end-to-end errors
are reported as median and p90 (BLIS reports a 6.7% median end-to-end error against real GPUs).
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from sim_gpu.procs import StartError, free_port, spawn, stop, wait_http

Say = Callable[[str], None]


class CalibrationError(RuntimeError):
    """The server cannot be measured (unreachable, unknown model shape); one line."""


@dataclass
class Sample:
    """One measured step: `kind` prefill (TTFT) or decode (one inter-token gap)."""

    kind: str
    new_tokens: int
    cached_tokens: int = 0
    batch: int = 1
    context_tokens: int = 0  # decode: total context of the batch
    seconds: float = 0.0


@dataclass
class RequestTiming:
    ttft: float
    e2e: float
    output_tokens: int


@dataclass
class CalibrationResult:
    url: str
    model: str
    hardware: str
    coefficients: dict[str, float]
    samples: list[Sample]
    fit_error_median: float
    unfitted_error_median: float = float("nan")  # the same samples with the profile's previous coefficients
    fit_rms_error: float = float("nan")  # the fit's objective, after and before
    unfitted_rms_error: float = float("nan")
    heldout: dict[str, float] = field(default_factory=dict)
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


# ---- the fit (pure) --------------------------------------------------------------------------------------


def _shape(sample: Sample) -> Any:
    from sim_gpu.latency import BatchShape

    shape = BatchShape()
    if sample.kind == "prefill":
        shape.add_prefill(sample.new_tokens, sample.cached_tokens)
    else:
        shape.add_decode(sample.context_tokens, sample.batch)
    return shape


def _terms(latency: Any, shape: Any) -> tuple[float, float]:
    """The roofline's compute and memory seconds for a shape, coefficients aside."""
    from sim_gpu.latency import Coefficients

    saved = latency.coefficients
    try:
        latency.coefficients = Coefficients(compute=1.0, memory=0.0, comm=0.0, overhead_s=0.0)
        latency._precompute()
        tc = latency.step_time(shape)
        latency.coefficients = Coefficients(compute=0.0, memory=1.0, comm=0.0, overhead_s=0.0)
        latency._precompute()
        tm = latency.step_time(shape)
    finally:
        latency.coefficients = saved
        latency._precompute()
    return tc, tm


def _nnls(a: Any, b: Any) -> Any:
    """Non-negative least squares by active set on a few columns (numpy only)."""
    import numpy as np

    free = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    for _ in range(a.shape[1] + 1):
        sol, *_ = np.linalg.lstsq(a[:, free], b, rcond=None)
        if (sol >= 0).all():
            x[:] = 0
            x[free] = sol
            return x
        free = [c for c, v in zip(free, sol) if v > 0]
        if not free:
            break
    x[:] = 0
    return x


def rms_relative_error(predicted: list[float], measured: list[float]) -> float:
    """sqrt(mean(((p - m) / m)^2)): the objective the fit minimizes."""
    errs = [((p - m) / m) ** 2 for p, m in zip(predicted, measured) if m > 0]
    return (sum(errs) / len(errs)) ** 0.5 if errs else float("nan")


def fit_coefficients(samples: list[Sample], latency: Any, iterations: int = 12) -> dict[str, float]:
    """Relative least-squares fit of overhead, per-token, per-sequence, compute and memory factors.

    Alternates between choosing which roofline branch binds for each sample and a non-negative linear solve;
    every iterate (and the model's current coefficients) is scored on the real max() model and the best wins,
    so the result never fits worse than what the profile had.
    """
    import numpy as np

    from sim_gpu.latency import Coefficients

    if len(samples) < 5:
        raise CalibrationError(f"calibration: need at least 5 measurements, got {len(samples)}")
    shapes = [_shape(s) for s in samples]
    terms = np.array([_terms(latency, sh) for sh in shapes])
    n_tok = np.array([sh.num_tokens for sh in shapes], dtype=float)
    n_seq = np.array([sh.num_seqs for sh in shapes], dtype=float)
    y = np.array([s.seconds for s in samples])
    w = 1.0 / np.maximum(y, 1e-4)  # relative error: short decode steps count as much as long prefills

    def score(c: dict[str, float]) -> float:
        pred = (
            c["overhead_s"]
            + c["per_token_s"] * n_tok
            + c["per_seq_s"] * n_seq
            + np.maximum(c["compute"] * terms[:, 0], c["memory"] * terms[:, 1])
        )
        return float(np.sqrt(np.mean(((pred - y) * w) ** 2)))

    now = latency.coefficients
    start = {
        "compute": now.compute,
        "memory": now.memory,
        "comm": now.comm,
        "per_token_s": now.per_token_s,
        "per_seq_s": now.per_seq_s,
        "overhead_s": now.overhead_s if now.overhead_s is not None else latency.hardware.step_overhead_ms / 1000.0,
    }
    best, best_score = start, score(start)
    compute, memory = 1.0, 1.0
    for _ in range(iterations):
        use_c = compute * terms[:, 0] >= memory * terms[:, 1]
        cols = np.stack(
            [np.ones_like(y), n_tok, n_seq, np.where(use_c, terms[:, 0], 0.0), np.where(use_c, 0.0, terms[:, 1])],
            axis=1,
        )
        x = _nnls(cols * w[:, None], y * w)
        new_c = max(float(x[3]), 1e-9) if use_c.any() else compute
        new_m = max(float(x[4]), 1e-9) if (~use_c).any() else memory
        cand = {
            "compute": new_c,
            "memory": new_m,
            "comm": 1.0,
            "overhead_s": float(x[0]),
            "per_token_s": float(x[1]),
            "per_seq_s": float(x[2]),
        }
        if (sc := score(cand)) < best_score:
            best, best_score = cand, sc
        if abs(new_c - compute) < 1e-9 and abs(new_m - memory) < 1e-9:
            break
        compute, memory = new_c, new_m
    Coefficients.from_dict(best)  # validates the keys
    return {k: float(v) for k, v in best.items()}


def predict(samples: list[Sample], latency: Any) -> list[float]:
    return [latency.step_time(_shape(s)) for s in samples]


def error_stats(predicted: list[float], measured: list[float]) -> tuple[float, float]:
    """Median and p90 of |predicted - measured| / measured."""
    errs = sorted(abs(p - m) / m for p, m in zip(predicted, measured) if m > 0)
    if not errs:
        return float("nan"), float("nan")
    p90 = errs[min(len(errs) - 1, int(round(0.9 * (len(errs) - 1))))]
    return statistics.median(errs), p90


# ---- measuring a server (shell) --------------------------------------------------------------------------


def _stream(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, list[float], int]:
    """POST a streaming completion: (TTFT, arrival time of each token chunk after the first, output tokens)."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = None
    arrivals: list[float] = []
    tokens = 0
    with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise CalibrationError(f"{url}/v1/completions: HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens", tokens)
            if (
                chunk.get("choices")
                and (chunk["choices"][0].get("text") or chunk["choices"][0].get("finish_reason")) is not None
            ):
                now = time.perf_counter() - t0
                if first is None:
                    first = now
                else:
                    arrivals.append(now)
    if first is None:
        raise CalibrationError(f"{url}: a streamed completion returned no token")
    return first, arrivals, tokens


class Workload:
    """Random token-id prompts that never collide with each other unless shared on purpose."""

    def __init__(self, vocab: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.vocab = vocab

    def ids(self, n: int) -> list[int]:
        return [self.rng.randrange(16, self.vocab) for _ in range(n)]


def server_model(client: httpx.Client, url: str) -> tuple[str, str | None]:
    """(served model name, local model directory when the server says where it loaded from)."""
    try:
        data = client.get(url + "/v1/models").json()["data"][0]
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        raise CalibrationError(f"{url}/v1/models: cannot read the served model ({exc})") from None
    return data["id"], data.get("root")


def server_max_model_len(client: httpx.Client, url: str) -> int | None:
    """The server's context limit (vLLM reports max_model_len in /v1/models); None when it does not say."""
    try:
        return int(client.get(url + "/v1/models").json()["data"][0]["max_model_len"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return None


MEASURE_LENGTHS = (32, 128, 384, 768, 1536, 3072)


def server_block_size(client: httpx.Client, url: str) -> int:
    text = client.get(url + "/metrics").text
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info{") and 'block_size="' in line:
            return int(line.split('block_size="', 1)[1].split('"', 1)[0])
    return 16


def measure(
    client: httpx.Client,
    url: str,
    model: str,
    vocab: int,
    block_size: int,
    seed: int,
    say: Say,
    lengths: tuple[int, ...] = MEASURE_LENGTHS,
    batches: tuple[int, ...] = (1, 2, 4, 8),
    repeats: int = 2,
) -> list[Sample]:
    """The calibration workload: cold prefills, prefix-hit prefills, decode steps at several batch sizes."""
    from concurrent.futures import ThreadPoolExecutor

    work = Workload(vocab, seed)
    samples: list[Sample] = []
    base = {"model": model, "max_tokens": 1, "temperature": 0}
    _stream(client, url, {**base, "prompt": work.ids(64)})  # warm-up, not recorded
    for length in lengths:
        for _ in range(repeats):
            ids = work.ids(length)
            ttft, _, _ = _stream(client, url, {**base, "prompt": ids})
            samples.append(Sample("prefill", new_tokens=length, seconds=ttft))
            tail = work.ids(block_size)
            ttft, _, _ = _stream(client, url, {**base, "prompt": ids + tail})  # prefix hit on ids' full blocks
            cached = (length // block_size) * block_size
            samples.append(
                Sample("prefill", new_tokens=length + len(tail) - cached, cached_tokens=cached, seconds=ttft)
            )
        say(f"prefill {length} tokens: cold {samples[-2].seconds * 1e3:.0f} ms, hit {samples[-1].seconds * 1e3:.0f} ms")
    # Decode: B concurrent requests with a short and a long output; the step time is the difference of their
    # end-to-end times over the extra tokens (robust to the server merging tokens into one streamed chunk).
    prompt_len, short, long = 32, 8, 40
    for batch in batches:
        ends = {}
        for out_len in (short, long):
            bodies = [
                {**base, "prompt": work.ids(prompt_len), "max_tokens": out_len, "ignore_eos": True}
                for _ in range(batch)
            ]
            with ThreadPoolExecutor(batch) as pool:
                ends[out_len] = statistics.median(r.e2e for r in pool.map(lambda b: _timed(client, url, b), bodies))
        step = max(1e-5, (ends[long] - ends[short]) / (long - short))
        samples.append(
            Sample(
                "decode",
                new_tokens=0,
                batch=batch,
                context_tokens=batch * (prompt_len + (short + long) // 2),
                seconds=step,
            )
        )
        say(f"decode batch {batch}: {step * 1e3:.1f} ms per step")
    return samples


def heldout_workload(vocab: int, seed: int, count: int = 16, block_size: int = 32) -> list[dict[str, Any]]:
    """Requests unlike the calibration set: mixed lengths, half reuse an earlier prompt's prefix, 8-48 outputs."""
    work = Workload(vocab, seed + 1000)
    reqs: list[dict[str, Any]] = []
    for i in range(count):
        n = work.rng.randint(48, 1400)
        if reqs and work.rng.random() < 0.5:
            parent = work.rng.choice(reqs)["prompt"]
            keep = min(len(parent), work.rng.randint(block_size, max(block_size, len(parent))))
            ids = parent[:keep] + work.ids(max(8, n - keep))
        else:
            ids = work.ids(n)
        reqs.append(
            {"prompt": ids, "max_tokens": work.rng.choice([8, 16, 32, 48]), "ignore_eos": True, "temperature": 0}
        )
    return reqs


def _timed(client: httpx.Client, url: str, body: dict[str, Any]) -> RequestTiming:
    t0 = time.perf_counter()
    ttft, _, tokens = _stream(client, url, body)
    return RequestTiming(ttft=ttft, e2e=time.perf_counter() - t0, output_tokens=tokens)


def replay(client: httpx.Client, url: str, model: str, requests: list[dict[str, Any]]) -> list[RequestTiming]:
    """Send the requests one after the other; TTFT and end-to-end seconds of each."""
    return [_timed(client, url, {**body, "model": model}) for body in requests]


def start_sim(
    hardware_yaml: Path, model_yaml: Path, model: str, block_size: int, num_blocks: int, log: Path
) -> tuple[subprocess.Popen, str]:
    """A simulator pod with the fitted profile, on a free loopback port, in real time."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "sim_gpu",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        model,
        "--hardware",
        str(hardware_yaml),
        "--model-profile",
        str(model_yaml),
        "--block-size",
        str(block_size),
        "--num-gpu-blocks",
        str(num_blocks),
        "--max-num-batched-tokens",
        "4096",
        "--max-model-len",
        "4096",
    ]
    proc = spawn(argv, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, 60.0, log=log, interval_s=0.2)
    except StartError as exc:
        stop(proc)
        raise CalibrationError(f"simulator did not start ({str(exc).splitlines()[0]}): see {log}") from None
    return proc, url


def calibrate(
    url: str,
    out_dir: Path,
    hardware: str = "cpu",
    model_dir: str | None = None,
    seed: int = 0,
    heldout: int = 16,
    compare: bool = True,
    say: Say = lambda s: None,
) -> CalibrationResult:
    """Measure `url`, fit `hardware`'s coefficients, write the fitted profiles, compare sim and real on a held-out
    set."""
    from sim_gpu.hw_profiles import ModelProfile, ProfileError, load_hardware
    from sim_gpu.latency import Coefficients, LatencyModel

    url = url.rstrip("/")
    out_dir.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=120.0) as client:
        model, root = server_model(client, url)
        source = model_dir or root
        try:
            config = json.loads((Path(source) / "config.json").read_text()) if source else None
        except (OSError, ValueError):
            config = None
        if config is None:
            raise CalibrationError(
                f"calibrate: cannot read the model's config.json (server root {root!r}); pass --model-dir DIR"
            )
        block_size = server_block_size(client, url)
        try:
            hw = load_hardware(hardware)
        except ProfileError as exc:
            raise CalibrationError(str(exc)) from None
        mp = model_profile_from_hf(config, f"{Path(source).name}-calibrated")
        latency = LatencyModel(hardware=hw, model=ModelProfile(**mp), coefficients=Coefficients())
        say(f"measuring {url} ({model}, block size {block_size})")
        max_len = server_max_model_len(client, url)  # a prompt plus its one-block tail must fit the context
        lengths = tuple(n for n in MEASURE_LENGTHS if max_len is None or n + block_size < max_len)
        samples = measure(client, url, model, int(config["vocab_size"]), block_size, seed, say, lengths=lengths)
        measured = [s.seconds for s in samples]
        unfitted_med, _ = error_stats(predict(samples, latency), measured)
        unfitted_rms = rms_relative_error(predict(samples, latency), measured)
        coef = fit_coefficients(samples, latency)
        latency.coefficients = Coefficients.from_dict(coef)
        latency._precompute()
        fit_med, _ = error_stats(predict(samples, latency), measured)
        fit_rms = rms_relative_error(predict(samples, latency), measured)
        hw_doc = {k: v for k, v in asdict(hw).items() if k != "aliases"}
        hw_doc.update(
            {
                "name": f"{hw.name}-fitted",
                "description": f"{hw.name} fitted by `sim calibrate` against {url} ({model})",
                "coefficients": {k: round(v, 9) for k, v in coef.items()},
            }
        )
        hw_path, model_path = out_dir / f"{hw.name}-fitted.yaml", out_dir / f"{mp['name']}.yaml"
        hw_path.write_text(yaml.safe_dump(hw_doc, sort_keys=False))
        model_path.write_text(yaml.safe_dump(mp, sort_keys=False))
        result = CalibrationResult(
            url=url,
            model=model,
            hardware=hw.name,
            coefficients=coef,
            samples=samples,
            fit_error_median=fit_med,
            unfitted_error_median=unfitted_med,
            fit_rms_error=fit_rms,
            unfitted_rms_error=unfitted_rms,
            files={"hardware": str(hw_path), "model": str(model_path)},
        )
        if compare and heldout > 0:
            requests = heldout_workload(int(config["vocab_size"]), seed, heldout, block_size)
            say(f"held-out: {len(requests)} requests against the real server")
            real = replay(client, url, model, requests)
            proc, sim_url = start_sim(hw_path, model_path, model, block_size, 4096, out_dir / "sim-calibrate.log")
            try:
                say("held-out: the same requests against the simulator with the fitted profile")
                sim_model, _ = server_model(client, sim_url)
                simulated = replay(client, sim_url, sim_model, requests)
            finally:
                stop(proc)
            if [r.output_tokens for r in real] != [r.output_tokens for r in simulated]:
                say(
                    "warning: the simulator generated other output lengths than the real server (ignore_eos/max_tokens)"
                )
            ttft_med, ttft_p90 = error_stats([s.ttft for s in simulated], [r.ttft for r in real])
            e2e_med, e2e_p90 = error_stats([s.e2e for s in simulated], [r.e2e for r in real])
            result.heldout = {
                "requests": len(requests),
                "ttft_median_error": ttft_med,
                "ttft_p90_error": ttft_p90,
                "e2e_median_error": e2e_med,
                "e2e_p90_error": e2e_p90,
                "real_ttft_median_s": statistics.median(r.ttft for r in real),
                "sim_ttft_median_s": statistics.median(s.ttft for s in simulated),
                "real_e2e_median_s": statistics.median(r.e2e for r in real),
                "sim_e2e_median_s": statistics.median(s.e2e for s in simulated),
            }
    (out_dir / "calibration.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def report_lines(result: CalibrationResult) -> list[str]:
    """What `sim calibrate` prints: the fitted terms, the held-out errors, the profiles and how to use them."""
    c, files = result.coefficients, result.files
    lines = [
        f"fitted {result.hardware}: compute x{c['compute']:.3g}, memory x{c['memory']:.3g}, "
        f"overhead {c['overhead_s'] * 1e3:.2f} ms, {c['per_token_s'] * 1e6:.1f} us/token, "
        f"{c['per_seq_s'] * 1e3:.2f} ms/seq (fit median error {result.fit_error_median:.1%}, "
        f"{result.unfitted_error_median:.1%} before)"
    ]
    if result.heldout:
        h = result.heldout
        lines.append(
            f"held-out ({h['requests']} requests): TTFT error median {h['ttft_median_error']:.1%} "
            f"p90 {h['ttft_p90_error']:.1%}; end-to-end error median {h['e2e_median_error']:.1%} "
            f"p90 {h['e2e_p90_error']:.1%}"
        )
    lines.append(f"profiles: {files['hardware']} {files['model']}")
    lines.append(f"use them: llmdctl sim serve --hardware {files['hardware']} --model-profile {files['model']}")
    return lines
