"""Time bf16 forward passes of a Llama-3.1-8B-shaped decoder on a real GPU, to fit the simulator's GPU profile.

Why: sim_gpu's H100/H200 profiles were datasheet peaks times generic efficiencies. This script measures what
one engine step's forward pass costs on the card in hand, for the shapes vLLM runs: a prefill of 128-8192
tokens (alone, and as a chunk after cached context), decode of batch 1-256 over 1k-32k tokens of context, and
mixed prefill+decode steps. `llmdctl sim fit-gpu` (sim_gpu/gpu_fit.py) then fits the profile's efficiency
terms (MFU prefill/decode, HBM efficiency) on some shapes and reports error on the held-out rest.

The model is built from the same config numbers as sim_gpu/data/models/llama-3.1-8b.yaml: 32 layers, hidden
4096, 32 query heads and 8 KV heads of dim 128 (GQA), SwiGLU MLP 14336, vocab 128256, RMSNorm, rotary
embeddings, attention through torch's scaled_dot_product_attention. Weights are random (no hub here): timing
does not depend on their values. Every layer reads one shared KV buffer, so the bytes each layer reads are
real while memory stays bounded; every step is captured as a CUDA graph and replayed (vLLM runs its steps
from graphs), so kernel-launch gaps do not pose as GPU time; the eager time is kept beside it. Engine CPU
overhead (scheduling, sampling, detokenizing) is not in these figures: the profile keeps it as `step_overhead_ms`.

Usage (on the GPU machine, one call, ~3-5 min on an H200):
    python3 bench/gpu_layer_timing.py --out gpu_timing.json
Smoke test anywhere torch runs (tiny model, CPU):
    python3 bench/gpu_layer_timing.py --device cpu --quick --out /tmp/t.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelShape:
    num_layers: int = 32
    hidden: int = 4096
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    intermediate: int = 14336
    vocab: int = 128256


def shape_from_profile(name: str) -> ModelShape:
    """A decoder shaped like a shipped model profile (sim_gpu/data/models/NAME.yaml), e.g. qwen3-32b."""
    import pathlib

    import yaml

    path = pathlib.Path(__file__).resolve().parents[1] / "sim_gpu" / "data" / "models" / f"{name.lower()}.yaml"
    m = yaml.safe_load(path.read_text())
    return ModelShape(
        num_layers=m["num_layers"],
        hidden=m["hidden_size"],
        heads=m["num_attention_heads"],
        kv_heads=m["num_kv_heads"],
        head_dim=m["head_dim"],
        intermediate=m["intermediate_size"],
        vocab=m["vocab_size"],
    )


QUICK_SHAPE = ModelShape(num_layers=2, hidden=256, heads=4, kv_heads=2, head_dim=64, intermediate=512, vocab=1000)


@dataclass
class Case:
    """One step to time: a prefill chunk (`prefill` new tokens after `context` cached) and/or `batch` decodes
    over `decode_context` tokens each."""

    name: str
    prefill: int = 0
    context: int = 0
    batch: int = 0
    decode_context: int = 0


def default_cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("prefill-64", prefill=64),
            Case("decode-b4-c256", batch=4, decode_context=256),
            Case("chunk-32-after-128", prefill=32, context=128),
            Case("mixed-p32-b4-c256", prefill=32, batch=4, decode_context=256),
        ]
    cases = [
        Case(f"prefill-{t}", prefill=t) for t in (128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
    ]
    cases += [
        Case(f"chunk-{t}-after-{c}", prefill=t, context=c)
        for t, c in (
            (256, 2048),
            (512, 4096),
            (1024, 2048),
            (256, 8192),
            (2048, 8192),
            (512, 16384),
            (1024, 16384),
            (2048, 30720),
        )
    ]
    for b in (1, 8, 32, 64, 128, 256):
        for c in (1024, 4096, 8192, 16384, 32768):
            if b * c <= 1 << 20:  # about what an H200's KV cache holds for this model (~130 KiB per token)
                cases.append(Case(f"decode-b{b}-c{c}", batch=b, decode_context=c))
    cases += [
        Case("mixed-p512-b32-c4096", prefill=512, batch=32, decode_context=4096),
        Case("mixed-p2048-b64-c2048", prefill=2048, batch=64, decode_context=2048),
        Case("mixed-p256-b128-c8192", prefill=256, batch=128, decode_context=8192),
        Case("mixed-p1024-b16-c16384", prefill=1024, batch=16, decode_context=16384),
        Case("mixed-p128-b64-c4096", prefill=128, batch=64, decode_context=4096),
        Case("mixed-p4096-b8-c8192", prefill=4096, batch=8, decode_context=8192),
    ]
    return cases


def attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, log-sum-exp per query row) for (B, H, L, D) tensors: flash attention on a GPU, the same
    arithmetic spelled out elsewhere (the smoke test checks the merge against a plain causal pass)."""
    if q.is_cuda:
        out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal)
        return out[0], out[1]
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    lse = scores.logsumexp(-1)
    return ((scores - lse.unsqueeze(-1)).exp() @ v.float()).to(q.dtype), lse


class Decoder:
    """A Llama-style decoder: per layer RMSNorm -> QKV -> rotary -> SDPA (GQA) -> O -> RMSNorm -> SwiGLU MLP."""

    def __init__(self, shape: ModelShape, device: torch.device, dtype: torch.dtype, max_kv_tokens: int) -> None:
        s = shape
        self.s, self.device, self.dtype = s, device, dtype
        gen = torch.Generator(device=device).manual_seed(0)

        def w(rows: int, cols: int) -> torch.Tensor:
            return (torch.randn(rows, cols, generator=gen, device=device, dtype=torch.float32) / math.sqrt(cols)).to(
                dtype
            )

        qkv_out = (s.heads + 2 * s.kv_heads) * s.head_dim
        self.layers = [
            dict(
                qkv=w(qkv_out, s.hidden),
                o=w(s.hidden, s.heads * s.head_dim),
                gate_up=w(2 * s.intermediate, s.hidden),
                down=w(s.hidden, s.intermediate),
                n1=torch.ones(s.hidden, device=device, dtype=dtype),
                n2=torch.ones(s.hidden, device=device, dtype=dtype),
            )
            for _ in range(s.num_layers)
        ]
        self.embed = w(s.vocab, s.hidden)
        self.lm_head = w(s.vocab, s.hidden)
        self.norm = torch.ones(s.hidden, device=device, dtype=dtype)
        # One KV buffer every layer reads: each layer's reads are real bytes, memory stays bounded.
        self.kv = torch.randn(
            2, max_kv_tokens, s.kv_heads, s.head_dim, generator=gen, device=device, dtype=torch.float32
        ).to(dtype)
        inv = 1.0 / (10000.0 ** (torch.arange(0, s.head_dim, 2, device=device, dtype=torch.float32) / s.head_dim))
        self.inv_freq = inv

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        ang = pos.float()[:, None] * self.inv_freq[None, :]
        cos, sin = ang.cos().to(x.dtype)[:, None, :], ang.sin().to(x.dtype)[:, None, :]
        x1, x2 = x[..., ::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

    def _attn_prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: int) -> torch.Tensor:
        """One sequence: `q` new tokens attend causally to `context` cached tokens plus themselves."""
        s, t = self.s, q.shape[0]
        qh, kh, vh = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        if not context:
            o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, enable_gqa=True)
            return o.squeeze(0).transpose(0, 1).reshape(t, s.heads * s.head_dim)
        # As FlashAttention's chunked prefill does it: attention over the cached context (no mask) and causal
        # attention within the chunk, merged by their log-sum-exps. The context part folds each KV head's
        # query group into rows, so the cache is read once per KV head and never copied.
        rep = s.heads // s.kv_heads
        q_fold = qh.reshape(1, s.kv_heads, rep * t, s.head_dim)
        k_ctx = self.kv[0, :context].transpose(0, 1).unsqueeze(0)
        v_ctx = self.kv[1, :context].transpose(0, 1).unsqueeze(0)
        o1, l1 = attention_with_lse(q_fold, k_ctx, v_ctx, causal=False)
        o1, l1 = o1.reshape(1, s.heads, t, s.head_dim), l1.reshape(1, s.heads, t)
        o2, l2 = attention_with_lse(qh, kh.repeat_interleave(rep, 1), vh.repeat_interleave(rep, 1), causal=True)
        lse = torch.logaddexp(l1, l2)
        o = o1 * (l1 - lse).exp().unsqueeze(-1).to(o1.dtype) + o2 * (l2 - lse).exp().unsqueeze(-1).to(o2.dtype)
        return o.squeeze(0).transpose(0, 1).reshape(t, s.heads * s.head_dim)

    def _attn_decode(self, q: torch.Tensor, batch: int, ctx: int) -> torch.Tensor:
        """`batch` sequences of one new token each, over `ctx` cached tokens (disjoint slices of the buffer)."""
        s = self.s
        kv = self.kv[:, : batch * ctx].view(2, batch, ctx, s.kv_heads, s.head_dim).transpose(2, 3)
        qh = q.view(batch, s.heads, 1, s.head_dim)
        o = F.scaled_dot_product_attention(qh, kv[0], kv[1], enable_gqa=True)
        return o.reshape(batch, s.heads * s.head_dim)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor, case: Case) -> torch.Tensor:
        """Logits for `rows` (where vLLM samples: each prefill's last token and every decode token)."""
        s = self.s
        np_ = case.prefill
        x = self.embed[ids]
        for L in self.layers:
            h = F.rms_norm(x, (s.hidden,), L["n1"])
            qkv = h @ L["qkv"].T
            q, k, v = qkv.split((s.heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim), -1)
            q = self._rope(q.view(-1, s.heads, s.head_dim), pos)
            k = self._rope(k.view(-1, s.kv_heads, s.head_dim), pos)
            v = v.view(-1, s.kv_heads, s.head_dim)
            parts = []
            if np_:
                parts.append(self._attn_prefill(q[:np_], k[:np_], v[:np_], case.context))
            if case.batch:
                parts.append(self._attn_decode(q[np_:], case.batch, case.decode_context))
            a = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
            x = x + a @ L["o"].T
            h = F.rms_norm(x, (s.hidden,), L["n2"])
            g, u = (h @ L["gate_up"].T).chunk(2, -1)
            x = x + (F.silu(g) * u) @ L["down"].T
        last = F.rms_norm(x[rows], (s.hidden,), self.norm)
        return last @ self.lm_head.T


def step_counts(shape: ModelShape, case: Case, dtype_bytes: int = 2) -> dict[str, float]:
    """FLOPs and the fewest HBM bytes of one step, counted as sim_gpu/latency.py counts them."""
    s = shape
    per_token_linear = (
        2
        * s.num_layers
        * (
            s.hidden * (s.heads + 2 * s.kv_heads) * s.head_dim
            + s.heads * s.head_dim * s.hidden
            + 3 * s.hidden * s.intermediate
        )
    )
    attn_per_ctx = 4 * s.num_layers * s.heads * s.head_dim
    n, c = case.prefill, case.context
    prefill_attn = n * c + n * (n + 1) / 2
    decode_attn = case.batch * (case.decode_context + 1)
    flops = per_token_linear * (n + case.batch) + attn_per_ctx * (prefill_attn + decode_attn)
    flops += 2 * s.hidden * s.vocab * ((1 if n else 0) + case.batch)
    weights = dtype_bytes * (per_token_linear / 2 + 2 * s.vocab * s.hidden)
    kv_per_token = 2 * s.num_layers * s.kv_heads * s.head_dim * dtype_bytes
    kv = kv_per_token * (c + n + case.batch * (case.decode_context + 1))
    return {"flops": flops, "bytes": weights + kv}


def time_it(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int) -> list[float]:
    """Milliseconds of each of `reps` calls after `warmup` ones (CUDA events on a GPU, wall clock elsewhere)."""
    for _ in range(warmup):
        fn()
    out = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def run_case(model: Decoder, case: Case, device: torch.device, reps: int, graphs: bool) -> dict[str, Any]:
    n_tok = case.prefill + case.batch
    ids = torch.randint(0, model.s.vocab, (n_tok,), device=device)
    pos = torch.cat(
        (
            torch.arange(case.context, case.context + case.prefill, device=device),
            torch.full((case.batch,), case.decode_context, device=device),
        )
    )
    rows = torch.tensor(([case.prefill - 1] if case.prefill else []) + list(range(case.prefill, n_tok)), device=device)
    graph_error = ""
    eager_ms: list[float] = []
    with torch.inference_mode():
        fn: Callable[[], Any] = lambda: model.forward(ids, pos, rows, case)  # noqa: E731
        used_graph = False
        if graphs and device.type == "cuda":
            eager_ms = time_it(fn, device, max(3, reps // 3), warmup=2)
            try:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):
                        fn()
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model.forward(ids, pos, rows, case)
                fn, used_graph = graph.replay, True
            except Exception as e:  # a kernel that refuses capture: time it eagerly and say so
                torch.cuda.synchronize()
                graph_error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        ms = time_it(fn, device, reps, warmup=3)
    ms.sort()
    return {
        **asdict(case),
        "median_ms": statistics.median(ms),
        "p10_ms": ms[len(ms) // 10],
        "p90_ms": ms[min(len(ms) - 1, (9 * len(ms)) // 10)],
        "reps": len(ms),
        "cuda_graph": used_graph,
        "eager_median_ms": statistics.median(eager_ms) if eager_ms else None,
        "graph_error": graph_error,
        **step_counts(model.s, case),
    }


def ceilings(device: torch.device, quick: bool) -> dict[str, float]:
    """The card's own ceilings, measured: a large bf16 matmul (TFLOP/s) and a device copy (TB/s, read+write)."""
    if device.type != "cuda":
        return {}
    n = 8192
    a, b = (
        torch.randn(n, n, device=device, dtype=torch.bfloat16),
        torch.randn(n, n, device=device, dtype=torch.bfloat16),
    )
    mm = statistics.median(time_it(lambda: a @ b, device, 10, 3))
    src = torch.randn(1 << 30, device=device, dtype=torch.bfloat16)  # 2 GiB
    dst = torch.empty_like(src)
    cp = statistics.median(time_it(lambda: dst.copy_(src), device, 10, 3))
    return {"matmul_tflops": 2 * n**3 / (mm * 1e-3) / 1e12, "copy_tbps": 2 * src.numel() * 2 / (cp * 1e-3) / 1e12}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON file for the measured table")
    ap.add_argument("--device", default="cuda", help="torch device (default cuda)")
    ap.add_argument("--quick", action="store_true", help="tiny model and shapes: a smoke test, not a measurement")
    ap.add_argument("--reps", type=int, default=15, help="timed repetitions per shape (median reported)")
    ap.add_argument("--no-graphs", action="store_true", help="time steps eagerly only, not as CUDA graphs")
    ap.add_argument("--only", default="", help="comma-separated case names to run (default: all)")
    ap.add_argument(
        "--model-profile",
        default="llama-3.1-8b",
        help="shape the decoder like this sim_gpu model profile (default llama-3.1-8b)",
    )
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_layer_timing: --device cuda but torch sees no GPU; pass --device cpu --quick for a smoke test",
            file=sys.stderr,
        )
        return 2
    shape = QUICK_SHAPE if args.quick else shape_from_profile(args.model_profile)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    cases = default_cases(args.quick)
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c.name in wanted]
    max_kv = max([c.batch * c.decode_context for c in cases] + [c.context for c in cases] + [1])
    t0 = time.time()
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "dtype": str(dtype),
        "model_shape": asdict(shape),
        "model_profile": None if args.quick else args.model_profile,
        "quick": args.quick,
        "sdpa": "torch.nn.functional.scaled_dot_product_attention",
        "chunk_attention": "flash over cached context + causal flash over the chunk, merged by log-sum-exp",
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["sm_count"] = torch.cuda.get_device_properties(device).multi_processor_count
    info.update(ceilings(device, args.quick))
    model = Decoder(shape, device, dtype, max_kv)
    rows = []
    for i, case in enumerate(cases, 1):
        try:
            row = run_case(model, case, device, args.reps, graphs=not args.no_graphs)
        except Exception as e:  # one shape failing (memory, a kernel refusing it) is reported, not fatal
            row = {**asdict(case), "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        ms = row.get("median_ms")
        print(
            f"[{i}/{len(cases)}] {case.name:28s} "
            + (
                f"{ms:9.3f} ms  {row['flops'] / (ms * 1e-3) / 1e12:7.1f} TFLOP/s"
                f"  {row['bytes'] / (ms * 1e-3) / 1e12:5.2f} TB/s"
                if ms
                else row["error"]
            ),
            flush=True,
        )
    info["elapsed_s"] = round(time.time() - t0, 1)
    with open(args.out, "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1)
    print(json.dumps({k: v for k, v in info.items() if k != "model_shape"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
