"""Fingerprints of the planner's per-request results, to show a speed change left every result as it was.

The planner is deterministic: the same tree state gives the same records. This runs it over the four policies
and three router profiles (llmd-73 x0.05, fast-forward driving), P/D splits, a multi-turn run (step driving),
wide-EP (rank-aware and not) and the E/P/D scenario's four deployments, and prints per case a sha256 prefix
over every request's (id, endpoint, first token time, finish time, status, cached tokens, output tokens), the
record count, hit rate and simulated seconds. Compare two trees:

    git worktree add /tmp/plan-base main
    PYTHONPATH=/tmp/plan-base python /tmp/plan-base/bench/plan_fingerprint.py --out /tmp/fp-base.json  # or any copy
    python bench/plan_fingerprint.py --compare /tmp/fp-base.json    # exit 1 and the differing cases if any
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmdctl.bench.load import Stage, poisson_arrivals, scale_stages  # noqa: E402
from llmdctl.bench.workloads import WorkloadSpec, generate  # noqa: E402
from llmdctl.plan.dp import WideEPConfig, simulate_wide_ep  # noqa: E402
from llmdctl.plan.epd import EPD, mm_requests  # noqa: E402
from llmdctl.plan.presets import SCENARIOS, policy_configs  # noqa: E402
from llmdctl.plan.run import SweepSpec, sweep_configs, workload_and_arrivals  # noqa: E402
from llmdctl.plan.sim import simulate  # noqa: E402


def fingerprint(res) -> list:
    """[sha256 prefix over the sorted per-request rows, records, hit rate, simulated seconds]."""
    rows = sorted(
        (
            r.request_id,
            r.endpoint,
            round(r.first_token or -1, 9),
            round(r.finished or -1, 9),
            r.status,
            r.cached_tokens,
            r.output_tokens,
        )
        for r in res.records
    )
    return [hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16], len(rows), res.hit_rate, res.sim_s]


def router_of(profile: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / f"{profile}.yaml").read_text())["router"]["config"]


def run_all() -> dict[str, list]:
    out: dict[str, list] = {}
    sc = SCENARIOS["llmd-73"]
    reqs, arr = workload_and_arrivals(sc.workload, scale_stages(sc.stages, 0.05, 1.0), 0)
    known = policy_configs(sc.pools[0].block_size)
    for pol in ("random", "load", "approximate", "precise"):
        out[pol] = fingerprint(simulate(sc.plan_config(pol, known[pol], 0), reqs, arr))
    for name in ("precise-prefix-cache", "inference-scheduling", "predicted-latency"):
        out["profile:" + name] = fingerprint(simulate(sc.plan_config("precise", router_of(name), 0), reqs, arr))
    small = SCENARIOS["small"]
    r2, a2 = workload_and_arrivals(small.workload, scale_stages(small.stages, 0.5, 1.0), 0)
    for name, cfg, _params in sweep_configs(small, SweepSpec(pd_splits=[(1, 1), (2, 2)], policies=["precise"])):
        out["pd:" + name] = fingerprint(simulate(cfg, r2, a2))
    arr3 = poisson_arrivals([Stage(20.0, 2.0)], seed=3)  # sessions: the step driver
    r3 = generate(
        WorkloadSpec(kind="multi-turn", num_sessions=6, turns=4, system_prompt_len=512, output_len=32, seed=3)
    )
    out["multiturn"] = fingerprint(
        simulate(small.plan_config("precise", policy_configs(16)["precise"], 0), r3, arr3[: len(r3)])
    )
    arr4 = poisson_arrivals([Stage(30.0, 4.0)], seed=1)
    r4 = generate(
        WorkloadSpec(
            kind="shared-prefix",
            num_groups=16,
            prompts_per_group=8,
            system_prompt_len=1024,
            question_len=64,
            output_len=32,
            num_requests=len(arr4),
            seed=1,
        )
    )
    for aware in (True, False):
        cfg = WideEPConfig(router=router_of("wide-ep"), rank_aware=aware, pods=2, dp=4, num_gpu_blocks=2048)
        out[f"wide-ep:{aware}"] = fingerprint(simulate_wide_ep(cfg, r4, arr4))
    arr5 = poisson_arrivals([Stage(24.0, 3.0)], seed=5)  # E/P/D: encode legs, embeddings, P/D hand-offs
    r5 = mm_requests(EPD.workload, len(arr5), 5)
    for dep in EPD.deployments:
        out[f"epd:{dep}"] = fingerprint(simulate(EPD.plan_config(dep, 0), r5, arr5))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the fingerprints as JSON here")
    ap.add_argument("--compare", default=None, help="JSON of an earlier run: exit 1 if any case differs")
    a = ap.parse_args()
    base = None
    if a.compare:
        try:
            base = json.loads(Path(a.compare).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--compare: cannot read {a.compare}: {exc}") from None
    out = run_all()
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    for k, v in out.items():
        print(f"{k:55s} {v[0]} {v[1]:5d} hit {v[2]:.4f} sim {v[3]:.3f}")
    if base is not None:
        bad = [k for k in base if base[k][:4] != out.get(k)]
        for k in bad:
            print(f"DIFFERS {k}: {base[k][:4]} -> {out.get(k)}")
        print(f"{len(base) - len(bad)}/{len(base)} cases identical to {a.compare}")
        if bad:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
