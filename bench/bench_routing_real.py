"""Real-engine routing benchmark: router_lite profiles vs vllm-router on the same 2 real vLLM pods.

    python bench/bench_routing_real.py [--model DIR] [--seeds 0,1,2] [--scenarios light,kv-pressure]
        [--routers precise-prefix-cache,inference-scheduling,predicted-latency,round-robin,
                   vr:cache_aware,vr:round_robin]
        [--out bench/results/routing_real.json] [--png docs/img/routing-real.png] [--keep-up]
    python bench/bench_routing_real.py --report A.json,B.json     # pool saved runs: tables, JSON, PNG again

What it does, in order (everything on 127.0.0.1, every run bounded in requests and seconds):
1. `llmdctl up precise-prefix-cache --engine vllm --replicas 2 --model DIR` in its own $LLMDCTL_HOME
   (default /tmp/llmdctl-bench-routing; builds the `small` tiny model there when --model is not given), with
   `--set pools.0.num_gpu_blocks=N` (KV per pod), `max_model_len`, `max_num_seqs` and
   `pools.0.env.VLLM_SERVER_DEV_MODE=1` so vLLM serves `/reset_prefix_cache`. An already running stack with
   the same options is reused (`up` is idempotent).
2. Installs vllm-router==0.1.17 into its own venv (~/.llmdctl/engines/vllm-router) when absent.
3. For each scenario and each seed, sends the SAME workload (shared-prefix groups, text prompts, Poisson
   arrivals; the seed fixes prompts and arrival times) through every router: router_lite profiles are
   switched live on the stack's router (POST /admin/profile); vllm-router is started per run on the same
   pods (`--policy cache_aware|round_robin`, its defaults otherwise) and stopped after. Before EVERY run both
   pods' prefix caches are reset (POST /reset_prefix_cache, checked) so every router starts cold. The order
   of routers rotates with the seed so warm-up drift does not always favour the same router.
4. Per run: prefix-cache hit rate (the pods' own vllm:prefix_cache_* counters), TTFT mean/p50/p90, E2E
   mean, errors, and the per-pod split of requests (the pods' vllm:request_success_total), so it is measured
   the same way whichever router sent the traffic.
5. Reports per scenario a table (median over seeds + every seed's figures), ratios vs vllm-router
   cache_aware, JSON (--out) and a PNG (--png). Stops the stack unless --keep-up.

Scenarios (KV per pod = num_gpu_blocks x 32 tokens; the default 128 blocks = 4096 tokens):
- light: 4 groups x ~515-token system prompts (half of one pod's KV), 2 QPS, 60 requests: well below capacity.
- kv-pressure: 16 groups of the same size, 5 QPS, 120 requests: the prefixes add up to ~2x one pod's KV
  (~1x both pods'), Poisson near the pods' capacity — where routing decides whether prefixes stay resident.
Each request: ~570 prompt tokens, 16 output tokens. On one core per pod a cold prefill takes ~240 ms, a hit ~45 ms.

`--quick` runs one seed of one router per scenario with few requests (a smoke test of the wiring).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmdctl.bench.load import LoadSpec, Stage  # noqa: E402
from llmdctl.bench.metrics import SLO  # noqa: E402
from llmdctl.bench.runner import BenchConfig, run_bench_async, switch_router  # noqa: E402
from llmdctl.bench.workloads import WorkloadSpec  # noqa: E402

VLLM_ROUTER_VERSION = "0.1.17"
VR_PREFIX = "vr:"  # routers named vr:POLICY are vllm-router with that policy
BASELINE = "vr:cache_aware"
DEFAULT_ROUTERS = (
    "precise-prefix-cache,inference-scheduling,predicted-latency,round-robin,vr:cache_aware,vr:round_robin"
)


@dataclass(frozen=True)
class Scenario:
    name: str
    groups: int
    prompts_per_group: int
    system_len: int  # words in text mode: the tiny model's tokenizer makes ~6.4 tokens of each (80 words = 515 tokens)
    question_len: int
    output_len: int
    rate: float  # Poisson QPS
    requests: int

    def workload(self, seed: int) -> WorkloadSpec:
        return WorkloadSpec(
            kind="shared-prefix",
            seed=seed,
            num_groups=self.groups,
            prompts_per_group=self.prompts_per_group,
            system_prompt_len=self.system_len,
            question_len=self.question_len,
            output_len=self.output_len,
        )

    def load(self, seed: int) -> LoadSpec:
        # long enough a stage for `requests` arrivals at `rate`; max_requests caps it exactly
        return LoadSpec(
            kind="poisson",
            stages=[Stage(self.rate, 3.0 * self.requests / self.rate)],
            seed=seed,
            max_requests=self.requests,
        )


SCENARIOS = {
    "light": Scenario(
        "light", groups=4, prompts_per_group=8, system_len=80, question_len=8, output_len=16, rate=2.0, requests=60
    ),
    "kv-pressure": Scenario(
        "kv-pressure",
        groups=16,
        prompts_per_group=8,
        system_len=80,
        question_len=8,
        output_len=16,
        rate=5.0,
        requests=120,
    ),
}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- pods: reset and per-pod counters ------------------------------------------------------------------------

POD_METRICS = (
    "vllm:request_success_total",
    "vllm:prefix_cache_hits_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prompt_tokens_total",
)


async def pod_snapshot(client: httpx.AsyncClient, pods: list[str]) -> dict[str, dict[str, float]]:
    """Per pod: requests finished, prefix hits/queries (tokens), prompt tokens — summed over label sets."""
    from router_lite import promtext

    out: dict[str, dict[str, float]] = {}
    for p in pods:
        r = await client.get(p + "/metrics", timeout=10.0)
        r.raise_for_status()
        vals = dict.fromkeys(POD_METRICS, 0.0)
        for s in promtext.parse(r.text, POD_METRICS):
            if s[0] in vals:
                vals[s[0]] += s[2]
        out[p] = vals
    return out


async def reset_caches(client: httpx.AsyncClient, pods: list[str], model: str) -> None:
    """POST /reset_prefix_cache on every pod; a pod that refuses (no VLLM_SERVER_DEV_MODE) is an error.

    vLLM queues the reset's AllBlocksCleared event and publishes KV events only at the end of an engine step,
    so an idle pod would announce its reset with the next run's first request: until then a KV-event index
    still sees the previous run's prefixes (the same seed's prompts) as resident and sends the first requests
    to "warm" pods that are cold. A one-token request (less than a block: it stores nothing) makes each pod
    step once, so the event goes out now."""
    for p in pods:
        r = await client.post(p + "/reset_prefix_cache", timeout=30.0)
        if r.status_code != 200:
            raise RuntimeError(
                f"{p}/reset_prefix_cache: HTTP {r.status_code} {r.text[:120]} (pods need VLLM_SERVER_DEV_MODE=1)"
            )
    for p in pods:
        r = await client.post(
            p + "/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 1}, timeout=60.0
        )
        r.raise_for_status()


async def wait_index_empty(client: httpx.AsyncClient, url: str, timeout_s: float = 10.0) -> int:
    """Until router_lite's precise index holds no block (the resets' events arrived); returns what is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = await client.get(url + "/debug/endpoints", timeout=10.0)
        blocks = (
            int(((r.json().get("indexes") or {}).get("precise") or {}).get("blocks") or 0)
            if r.status_code == 200
            else -1
        )
        if blocks == 0 or time.monotonic() > deadline:
            return blocks
        await asyncio.sleep(0.2)


# ---- vllm-router ---------------------------------------------------------------------------------------------


def vllm_router_bin() -> Path:
    venv = Path(os.environ.get("LLMDCTL_VLLM_ROUTER_VENV", Path.home() / ".llmdctl" / "engines" / "vllm-router"))
    exe = venv / "bin" / "vllm-router"
    if not exe.exists():
        say(f"installing vllm-router=={VLLM_ROUTER_VERSION} into {venv} (its own venv) ...")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"vllm-router=={VLLM_ROUTER_VERSION}"], check=True, timeout=900
        )
    return exe


class VllmRouter:
    """One vllm-router process on 127.0.0.1 in front of the pods, started and stopped by this script."""

    def __init__(self, exe: Path, policy: str, pods: list[str], port: int, metrics_port: int, log: Path):
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        argv = [
            str(exe),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--worker-urls",
            *pods,
            "--policy",
            policy,
            "--prometheus-host",
            "127.0.0.1",
            "--prometheus-port",
            str(metrics_port),
            "--request-timeout-secs",
            "120",
        ]
        self.fh = log.open("a")
        self.proc = subprocess.Popen(argv, stdout=self.fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, model: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(trust_env=False) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"vllm-router exited with {self.proc.returncode}; see {self.log}")
                try:
                    r = c.post(
                        self.url + "/v1/completions",
                        json={"model": model, "prompt": "ready", "max_tokens": 1},
                        timeout=10.0,
                    )
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(f"vllm-router not ready in {timeout_s:g}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.fh.close()


# ---- one run -------------------------------------------------------------------------------------------------


def _progress(label: str):
    last = [0.0]

    def cb(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 5.0:
            last[0] = now
            say(f"    {label}: {done}/{total} requests")

    return cb


async def one_run(
    router: str,
    scen: Scenario,
    seed: int,
    *,
    stack_url: str,
    model: str,
    pods: list[str],
    vr_exe: Path | None,
    vr_port: int,
    home: Path,
) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        vr = None
        try:
            if router.startswith(VR_PREFIX):
                vr = VllmRouter(
                    vr_exe, router[len(VR_PREFIX) :], pods, vr_port, vr_port + 1, home / "logs" / "vllm-router.log"
                )
                await asyncio.to_thread(vr.wait_ready, model)
                url = vr.url
            else:
                await switch_router(client, stack_url, router)
                url = stack_url
            await reset_caches(client, pods, model)  # after the readiness probe, so every router starts cold
            if vr is None:
                left = await wait_index_empty(client, stack_url)  # the resets' AllBlocksCleared reached the index
                if left:
                    say(f"    warning: router_lite's precise index still holds {left} blocks after the reset")
            await asyncio.sleep(1.0)
            before = await pod_snapshot(client, pods)
            decisions: list[dict[str, Any]] = []
            follow = asyncio.create_task(collect_decisions(stack_url, decisions)) if vr is None else None
            cfg = BenchConfig(
                url=url,
                model=model,
                workload=scen.workload(seed),
                load=scen.load(seed),
                mode="text",
                slo=SLO(ttft_s=1.0, itl_s=0.2),
                timeout_s=120.0,
                max_duration_s=300.0,
                max_in_flight=128,
                pods=pods,
                keep_records=True,
            )
            res = await run_bench_async(cfg, _progress(f"{scen.name} seed {seed} {router}"))
            after = await pod_snapshot(client, pods)
            debug = None
            if follow is not None:
                await asyncio.sleep(0.2)  # the last decisions are on their way
                follow.cancel()
                await asyncio.gather(follow, return_exceptions=True)
                r = await client.get(stack_url + "/debug/endpoints", timeout=10.0)
                debug = r.json() if r.status_code == 200 else None
        finally:
            if vr is not None:
                vr.stop()
    detail_dir = home / "runs"
    detail_dir.mkdir(parents=True, exist_ok=True)
    (detail_dir / f"{scen.name}-{seed}-{router.replace(':', '_')}.json").write_text(
        json.dumps({"records": res.get("records", []), "decisions": decisions})
    )
    s = res["summary"]
    split = {
        p.rsplit(":", 1)[-1]: after[p]["vllm:request_success_total"] - before[p]["vllm:request_success_total"]
        for p in pods
    }
    pod_hits = {}
    for p in pods:
        q = after[p]["vllm:prefix_cache_queries_total"] - before[p]["vllm:prefix_cache_queries_total"]
        h = after[p]["vllm:prefix_cache_hits_total"] - before[p]["vllm:prefix_cache_hits_total"]
        pod_hits[p.rsplit(":", 1)[-1]] = round(h / q, 4) if q else None
    return {
        "router": router,
        "scenario": scen.name,
        "seed": seed,
        "requests": s["requests"],
        "ok": s["ok"],
        "errors": s["errors"] + s["timeouts"] + s["shed"],
        "first_error": s["first_error"],
        "hit_rate": s["pod_hit_rate"],
        "ttft_mean": s["ttft_s"]["mean"],
        "ttft_p50": s["ttft_s"]["p50"],
        "ttft_p90": s["ttft_s"]["p90"],
        "e2e_mean": s["e2e_s"]["mean"],
        "duration_s": s["duration_s"],
        "per_pod_requests": split,
        "per_pod_hit_rate": pod_hits,
        "router_endpoints": debug,
        "prediction_error": prediction_error(res.get("records", []), decisions),
    }


async def collect_decisions(url: str, out: list[dict[str, Any]]) -> None:
    """Follow router_lite's decision stream into `out` until cancelled (what the scorers did, per request)."""
    from router_lite.decisions import aiter_decisions

    try:
        async for d in aiter_decisions(url):
            out.append(d)
    except httpx.HTTPError as exc:
        say(f"    decision stream ended: {type(exc).__name__}")


def _quantiles(vals: list[float]) -> dict[str, Any]:
    if not vals:
        return {"n": 0, "median": None, "p90": None}
    s = sorted(vals)
    return {
        "n": len(s),
        "median": round(statistics.median(s), 4),
        "p90": round(s[min(len(s) - 1, int(0.9 * len(s)))], 4),
    }


def prediction_error(
    records: list[dict[str, Any]], decisions: list[dict[str, Any]], warmup: int = 20
) -> dict[str, Any] | None:
    """|predicted - actual| / actual of the chosen pod's predicted TTFT and TPOT (from each decision) against
    what the client measured, skipping the first `warmup` predicted requests; None without predictions."""
    by_id = {d["request_id"]: d for d in decisions}
    pairs = []
    for r in sorted(records, key=lambda r: r["sent"]):
        d = by_id.get(r.get("router_request_id") or "")
        if d is None or r["status"] != "ok" or r["first_token"] is None:
            continue
        pred = next((c.get("predicted") for c in d["candidates"] if c["endpoint"] == d["chosen"]["decode"]), None)
        if not pred or pred.get("ttft_ms") is None:
            continue
        ttft = r["first_token"] - r["sent"]
        tpot = (r["finished"] - r["first_token"]) / (r["output_tokens"] - 1) if r["output_tokens"] > 1 else None
        pairs.append(
            (pred["ttft_ms"] / 1e3, ttft, None if pred.get("tpot_ms") is None else pred["tpot_ms"] / 1e3, tpot)
        )
    if not pairs:
        return None
    pairs = pairs[warmup:]
    return {
        "warmup_requests": warmup,
        "ttft": _quantiles([abs(p - a) / a for p, a, _, _ in pairs if a > 0]),
        "tpot": _quantiles([abs(p - a) / a for _, _, p, a in pairs if p is not None and a]),
    }


# ---- report --------------------------------------------------------------------------------------------------

METRICS = ("hit_rate", "ttft_mean", "ttft_p50", "ttft_p90", "e2e_mean")


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[dict[str, Any]], routers: list[str], scenarios: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sc in scenarios:
        rows = {}
        for rt in routers:
            mine = [r for r in runs if r["scenario"] == sc and r["router"] == rt]
            if not mine:
                continue
            row = {k: median_of(mine, k) for k in METRICS}
            pods = sorted({p for r in mine for p in r["per_pod_requests"]})
            row["per_pod_requests"] = {
                p: statistics.median(r["per_pod_requests"].get(p, 0) for r in mine) for p in pods
            }
            row["errors"] = sum(r["errors"] for r in mine)
            row["seeds"] = [r["seed"] for r in mine]
            errs = [r["prediction_error"] for r in mine if r.get("prediction_error")]
            if errs:  # per seed after the warm-up, then the median over seeds
                row["prediction_error"] = {
                    f"{m}_{q}": median_of([e[m] for e in errs], q) for m in ("ttft", "tpot") for q in ("median", "p90")
                }
            rows[rt] = row
        base = rows.get(BASELINE)
        if base:
            for row in rows.values():
                row["vs_cache_aware"] = {
                    k: (row[k] / base[k] if row.get(k) is not None and base.get(k) else None) for k in METRICS
                }
        out[sc] = rows
    return out


def label(router: str) -> str:
    return f"vllm-router {router[len(VR_PREFIX) :]}" if router.startswith(VR_PREFIX) else f"router_lite {router}"


def print_tables(summary: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(stderr=False, width=200)
    for sc, rows in summary.items():
        t = Table(title=f"{sc}: median over seeds (ratio = value / vllm-router cache_aware)")
        for col in (
            "router",
            "hit rate",
            "TTFT mean ms",
            "TTFT p50 ms",
            "TTFT p90 ms",
            "E2E mean ms",
            "per-pod requests",
            "mean ratio",
            "p90 ratio",
            "errors",
        ):
            t.add_column(col, justify="left" if col in ("router", "per-pod requests") else "right")
        for rt, row in rows.items():
            r = row.get("vs_cache_aware") or {}
            t.add_row(
                label(rt),
                _f(row["hit_rate"], 3),
                _ms(row["ttft_mean"]),
                _ms(row["ttft_p50"]),
                _ms(row["ttft_p90"]),
                _ms(row["e2e_mean"]),
                "/".join(f"{v:g}" for v in row["per_pod_requests"].values()),
                _f(r.get("ttft_mean"), 2),
                _f(r.get("ttft_p90"), 2),
                str(row["errors"]),
            )
        con.print(t)
        t = Table(title=f"{sc}: every seed")
        for col in (
            "router",
            "seed",
            "hit rate",
            "TTFT mean ms",
            "TTFT p50 ms",
            "TTFT p90 ms",
            "E2E mean ms",
            "per-pod requests",
            "errors",
        ):
            t.add_column(col, justify="left" if col in ("router", "per-pod requests") else "right")
        for r in sorted(
            (r for r in runs if r["scenario"] == sc),
            key=lambda r: (list(rows).index(r["router"]) if r["router"] in rows else 99, r["seed"]),
        ):
            t.add_row(
                label(r["router"]),
                str(r["seed"]),
                _f(r["hit_rate"], 3),
                _ms(r["ttft_mean"]),
                _ms(r["ttft_p50"]),
                _ms(r["ttft_p90"]),
                _ms(r["e2e_mean"]),
                "/".join(f"{v:g}" for v in r["per_pod_requests"].values()),
                str(r["errors"]),
            )
        con.print(t)
        for rt, row in rows.items():
            pe = row.get("prediction_error")
            if pe:
                con.print(
                    f"{sc}: {label(rt)} prediction error |pred-actual|/actual after the warm-up (median over seeds): "
                    f"TTFT median {_f(pe['ttft_median'], 3)} p90 {_f(pe['ttft_p90'], 3)}; "
                    f"TPOT median {_f(pe['tpot_median'], 3)} p90 {_f(pe['tpot_p90'], 3)}"
                )


def _f(v: float | None, d: int) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.0f}"


def plot(summary: dict[str, Any], runs: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scs = list(summary)
    fig, axes = plt.subplots(len(scs), 3, figsize=(15, 4.2 * len(scs)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, sc in enumerate(scs):
        rows = summary[sc]
        names = list(rows)
        for j, (key, what, scale) in enumerate(
            (
                ("ttft_mean", "TTFT mean (ms)", 1e3),
                ("ttft_p90", "TTFT p90 (ms)", 1e3),
                ("hit_rate", "prefix-cache hit rate", 1.0),
            )
        ):
            ax = axes[i][j]
            for k, rt in enumerate(names):
                v = rows[rt][key]
                ax.bar(k, (v or 0) * scale, color=colors[k % len(colors)], label=label(rt))
                seeds = [
                    r[key] * scale for r in runs if r["scenario"] == sc and r["router"] == rt and r[key] is not None
                ]
                ax.plot([k] * len(seeds), seeds, "k.", alpha=0.6)
            ax.set_xticks([])
            ax.set_title(f"{sc}: {what}", fontsize=11)
            ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=10, frameon=False)
    fig.suptitle(title + "\nbars: median over seeds; dots: each seed", fontsize=13)
    fig.tight_layout(rect=(0, 0.08, 1, 0.93))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_only(files: list[Path], out: Path, png: Path) -> int:
    docs = [json.loads(f.read_text()) for f in files]
    doc = {k: v for k, v in docs[0].items() if k not in ("runs", "summary", "total_seconds")}
    doc["runs"] = [r for d in docs for r in d["runs"]]
    doc["seeds"] = sorted({r["seed"] for r in doc["runs"]})
    doc["sources"] = [str(f) for f in files]
    routers = list(dict.fromkeys(r for d in docs for r in d["routers"]))
    doc["summary"] = summarize(doc["runs"], routers, list(doc["scenarios"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print_tables(doc["summary"], doc["runs"])
    title = (
        f"Routing on 2 real vLLM CPU pods ({Path(doc['model']).name}, {doc['num_gpu_blocks'] * 32} KV tokens per pod): "
        f"router_lite profiles vs vllm-router {doc['vllm_router']}\n{len(doc['seeds'])} seed-paired runs per router, "
        "prefix caches reset before each run"
    )
    plot(doc["summary"], doc["runs"], png, title)
    say(f"wrote {out} and {png}")
    return 0


# ---- main ----------------------------------------------------------------------------------------------------


def small_model(home: Path, model: str | None) -> str:
    """`model`, or the `small` tiny model built once in `home` (~32M parameters: prefill cost shows on a CPU)."""
    if model:
        return model
    path = home / "small-model"
    if not (path / "config.json").exists():
        from llmdctl.commands.model import make_tiny

        say(f"building the small tiny model in {path} ...")
        make_tiny(str(path), "small", 0)
    return str(path)


def start_real_pods(
    home: Path, model: str, port: int, num_gpu_blocks: int, max_num_seqs: int, extra_sets: tuple[str, ...] = ()
) -> tuple[Any, list[str]]:
    """`llmdctl up precise-prefix-cache --engine vllm --replicas 2` in `home` with the benches' pod settings (KV
    size, 2048 context, `/reset_prefix_cache` allowed): (the UpResult, the pods' URLs). Idempotent, as `up`."""
    from llmdctl.local import stack

    sets = [
        f"pools.0.num_gpu_blocks={num_gpu_blocks}",
        "pools.0.max_model_len=2048",
        f"pools.0.max_num_seqs={max_num_seqs}",
        "pools.0.env.VLLM_SERVER_DEV_MODE=1",
        *extra_sets,
    ]
    up = stack.up(
        "precise-prefix-cache",
        engine="vllm",
        model=model,
        replicas=2,
        sets=sets,
        router_port=port,
        pod_port=port + 10,
        events_port=port - 3000 + 10,
        timeout_s=900,
        home=home,
    )
    return up, [p.url if hasattr(p, "url") else f"http://127.0.0.1:{p.port}" for p in up.state.pods]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="local model directory (default: build the `small` tiny model in the home)")
    ap.add_argument("--home", default=os.environ.get("LLMDCTL_HOME", "/tmp/llmdctl-bench-routing"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scenarios", default="light,kv-pressure")
    ap.add_argument(
        "--routers", default=DEFAULT_ROUTERS, help="router_lite profile names and vr:POLICY for vllm-router"
    )
    ap.add_argument(
        "--num-gpu-blocks", type=int, default=128, help="KV blocks per pod (32 tokens each on the CPU build)"
    )
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument(
        "--port", type=int, default=8650, help="router_lite port; pods use --port+10.., vllm-router --port+2"
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "routing_real.json"))
    ap.add_argument("--png", default=str(REPO / "docs" / "img" / "routing-real.png"))
    ap.add_argument("--keep-up", action="store_true", help="leave the stack running afterwards")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: one seed, 12 requests, first router_lite profile and vr:cache_aware",
    )
    ap.add_argument(
        "--report",
        metavar="JSON[,JSON...]",
        help="no runs: re-report (tables, --out, --png) from saved result files, "
        "their runs pooled (e.g. seeds 0-2 and 3-5 from two invocations)",
    )
    args = ap.parse_args()
    if args.report:
        return report_only([Path(f) for f in args.report.split(",")], Path(args.out), Path(args.png))

    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["LLMDCTL_HOME"] = str(home)
    os.environ.setdefault("LLMDCTL_VLLM_VENV", str(Path.home() / ".llmdctl" / "engines" / "vllm"))
    from llmdctl.local import stack

    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"--scenarios: unknown {s!r}; expected {', '.join(SCENARIOS)}")
    scen = dict(SCENARIOS)
    if args.quick:
        seeds, routers = seeds[:1], [routers[0], BASELINE]
        scen = {k: Scenario(**{**v.__dict__, "requests": 12}) for k, v in scen.items()}
    model = small_model(home, args.model)
    vr_exe = vllm_router_bin() if any(r.startswith(VR_PREFIX) for r in routers) else None

    say(f"starting 2 real vLLM pods + router_lite in {home} (KV {args.num_gpu_blocks} blocks per pod) ...")
    t_start = time.monotonic()
    up, pods = start_real_pods(home, model, args.port, args.num_gpu_blocks, args.max_num_seqs)
    state = up.state
    stack_url, served = state.router_url, state.model
    say(f"stack up in {up.seconds:.0f}s: router {stack_url}, pods {', '.join(pods)}")
    doc: dict[str, Any] = {
        "model": model,
        "served": served,
        "pods": pods,
        "num_gpu_blocks": args.num_gpu_blocks,
        "max_num_seqs": args.max_num_seqs,
        "vllm_router": VLLM_ROUTER_VERSION,
        "seeds": seeds,
        "scenarios": {k: scen[k].__dict__ for k in scenarios},
        "routers": routers,
        "runs": [],
    }
    total = len(scenarios) * len(seeds) * len(routers)
    n = 0
    try:
        # warm both pods (first requests compile/allocate), then every run resets the caches anyway
        with httpx.Client(trust_env=False, timeout=120) as c:
            for p in pods:
                for _ in range(2):
                    c.post(
                        p + "/v1/completions", json={"model": served, "prompt": "warm up " * 400, "max_tokens": 4}
                    ).raise_for_status()
        for sc in scenarios:
            for si, seed in enumerate(seeds):
                order = routers[si % len(routers) :] + routers[: si % len(routers)]
                for rt in order:
                    n += 1
                    say(f"[{n}/{total}] {sc} seed {seed}: {label(rt)}  ({time.monotonic() - t_start:.0f}s elapsed)")
                    run = asyncio.run(
                        one_run(
                            rt,
                            scen[sc],
                            seed,
                            stack_url=stack_url,
                            model=served,
                            pods=pods,
                            vr_exe=vr_exe,
                            vr_port=args.port + 2,
                            home=home,
                        )
                    )
                    doc["runs"].append(run)
                    say(
                        f"    hit {_f(run['hit_rate'], 3)}  TTFT mean {_ms(run['ttft_mean'])} ms p90 "
                        f"{_ms(run['ttft_p90'])} ms"
                        f"  E2E {_ms(run['e2e_mean'])} ms  split {run['per_pod_requests']}  errors {run['errors']}"
                    )
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out).write_text(json.dumps(doc, indent=1))  # partial results survive an interruption
    finally:
        if not args.keep_up:
            say("stopping the stack ...")
            stack.down(home)
    doc["summary"] = summarize(doc["runs"], routers, scenarios)
    doc["total_seconds"] = round(time.monotonic() - t_start, 1)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print_tables(doc["summary"], doc["runs"])
    title = (
        f"Routing on 2 real vLLM CPU pods ({Path(model).name}, {args.num_gpu_blocks * 32} KV tokens per pod): "
        f"router_lite profiles vs vllm-router {VLLM_ROUTER_VERSION}\n{len(seeds)} seed-paired runs per router, prefix "
        "caches reset before each run"
    )
    png = plot(doc["summary"], doc["runs"], Path(args.png), title)
    say(f"wrote {args.out} and {png} in {doc['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
