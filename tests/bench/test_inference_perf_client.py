"""inference-perf's client as the planner models it: stage sizes and send times, prompt order, stages that drain
before the next opens, a worker cap that holds, and published figures only beside comparable runs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from llmdctl.bench import report
from llmdctl.bench.inference_perf import (
    STAGE_INTERVAL_S,
    STAGE_LEAD_S,
    ClientModel,
    stage_request_counts,
    stage_send_offsets,
    staged_arrivals,
    staged_requests,
)
from llmdctl.bench.load import Stage
from llmdctl.bench.workloads import WorkloadSpec
from llmdctl.plan.presets import LLMD_73, Scenario, comparability
from llmdctl.plan.run import run_policies, workload_and_arrivals
from llmdctl.plan.sim import PoolPlan, simulate

ROOT = Path(__file__).resolve().parents[2]

# Three short stages on three small pods: enough load that stages take longer than their send window.
STAGED = Scenario(
    name="staged",
    description="staged",
    pools=[PoolPlan(replicas=3, model="Llama-3.1-8B", block_size=16, num_gpu_blocks=600, max_num_seqs=16)],
    workload=WorkloadSpec(
        kind="shared-prefix", num_groups=6, prompts_per_group=3, system_prompt_len=512, question_len=64, output_len=24
    ),
    stages=[Stage(12.0, 2.0), Stage(4.0, 2.0), Stage(20.0, 1.5)],
    published={"precise": {"ttft_p90_s": 0.1, "ttft_mean_s": 0.05, "output_tok_s": 100.0}},
    client=ClientModel("inference-perf"),
    warmup_stages=1,
)


def test_stage_sizes_are_rate_times_duration_truncated() -> None:
    stages = [Stage(15, 50), Stage(3, 20), Stage(2.5, 3), Stage(0.4, 2)]
    assert stage_request_counts(stages) == [750, 60, 7, 0]
    assert (
        stage_request_counts(LLMD_73.stages)[:3] == [750, 60, 200]
        and sum(stage_request_counts(LLMD_73.stages)) == 17084
    )


def test_send_offsets_follow_the_per_second_poisson_timer() -> None:
    offs = stage_send_offsets(Stage(20.0, 30.0), np.random.default_rng(7))
    assert len(offs) == 600
    assert offs == sorted(offs) and offs[0] > STAGE_LEAD_S
    # Each second's requests are spread over that second and its last one lands on the second's end.
    whole = [o for o in offs if abs(o - round(o)) < 1e-9]
    assert len(whole) >= 25
    per_second = np.bincount([int(o - 1e-9 - STAGE_LEAD_S) for o in offs])
    assert 15 <= per_second[:-1].mean() <= 25  # Poisson(20) counts, not a fixed 20
    assert per_second[:-1].std() > 1.0
    # Deterministic for a seed; a different seed gives other times.
    assert staged_arrivals([Stage(5.0, 4.0)], seed=3) == staged_arrivals([Stage(5.0, 4.0)], seed=3)
    assert staged_arrivals([Stage(5.0, 4.0)], seed=3) != staged_arrivals([Stage(5.0, 4.0)], seed=4)


def test_every_stage_walks_the_same_shuffled_prompt_set_from_its_start() -> None:
    spec = dataclasses.replace(STAGED.workload, seed=1)
    reqs = staged_requests(spec, [30, 5, 20])
    n = 18  # 6 groups x 3 prompts
    s0, s1, s2 = reqs[:30], reqs[30:35], reqs[35:]
    assert [r.prompt for r in s1] == [r.prompt for r in s0[:5]]
    assert [r.prompt for r in s2] == [r.prompt for r in s0[:20]]
    assert [r.prompt for r in s0[n:]] == [r.prompt for r in s0[: 30 - n]]  # wraps around the set
    assert len({tuple(r.prompt) for r in s0[:n]}) == n  # one full set before any repeat
    assert len({r.request_id for r in reqs}) == len(reqs)
    with pytest.raises(ValueError, match="shared_prefix"):
        staged_requests(dataclasses.replace(spec, kind="random"), [3])


@pytest.mark.parametrize("drive", ["fast", "step"])
def test_a_stage_opens_only_after_the_previous_one_has_drained(drive: str) -> None:
    client = ClientModel("inference-perf")
    reqs, arr = workload_and_arrivals(STAGED.workload, STAGED.stages, seed=2, client=client)
    res = simulate(STAGED.plan_config("precise"), reqs, arr, stage_barrier_s=client.stage_barrier_s, drive=drive)
    assert len(res.records) == len(arr) == 24 + 8 + 30 and all(r.status == "ok" for r in res.records)
    by_stage: dict[int, list] = {}
    for r in res.records:
        by_stage.setdefault(r.stage, []).append(r)
    offsets = {q.request_id: t for q, (t, _) in zip(reqs, arr)}
    opened = 0.0
    for k in sorted(by_stage):
        recs = by_stage[k]
        for r in recs:  # sent at its offset from the stage's opening, not before
            assert r.sent == pytest.approx(opened + offsets[r.request_id], abs=1e-9)
        last_end = max(r.finished for r in recs)
        assert last_end > max(r.sent for r in recs)
        opened = last_end + STAGE_INTERVAL_S
        if k + 1 in by_stage:
            assert min(r.sent for r in by_stage[k + 1]) > last_end + STAGE_INTERVAL_S


def test_fast_and_step_drivers_agree_under_stage_barriers() -> None:
    client = ClientModel("inference-perf")
    reqs, arr = workload_and_arrivals(STAGED.workload, STAGED.stages, seed=4, client=client)
    cfg = STAGED.plan_config("approximate", seed=4)
    a = simulate(cfg, reqs, arr, stage_barrier_s=1.0, drive="fast")
    b = simulate(STAGED.plan_config("approximate", seed=4), reqs, arr, stage_barrier_s=1.0, drive="step")
    key = lambda res: sorted((r.request_id, r.endpoint, r.sent, r.first_token, r.finished) for r in res.records)  # noqa: E731
    assert key(a) == key(b)


def test_a_worker_cap_of_n_never_has_more_than_n_open() -> None:
    client = ClientModel("inference-perf", max_in_flight=4)
    reqs, arr = workload_and_arrivals(STAGED.workload, STAGED.stages, seed=2, client=client)
    res = simulate(STAGED.plan_config("precise"), reqs, arr, stage_barrier_s=client.stage_barrier_s, max_in_flight=4)
    assert all(r.status == "ok" for r in res.records) and len(res.records) == len(arr)
    events = sorted([(r.sent, 1) for r in res.records] + [(r.finished, -1) for r in res.records])
    open_now = peak = 0
    for _, d in events:
        open_now += d
        peak = max(peak, open_now)
    assert peak == 4  # the cap binds on this load, and holds


def test_published_figures_only_beside_comparable_runs() -> None:
    assert comparability(LLMD_73) is None
    assert "x0.1" in (comparability(LLMD_73, time_scale=0.1) or "")
    assert "rates x0.5" in (comparability(LLMD_73, rate_scale=0.5) or "")
    assert "open loop" in (comparability(LLMD_73, client=ClientModel("open-loop")) or "")
    assert "at most 224 open" in (comparability(LLMD_73, client=ClientModel("inference-perf", 224)) or "")
    assert "router" in (comparability(LLMD_73, custom_routers=True) or "")

    full = run_policies(STAGED, ["precise"], seed=1)
    assert full["not_comparable"] is None and full["published"] == STAGED.published
    short = run_policies(STAGED, ["precise"], seed=1, time_scale=0.5)
    assert short["published"] == {} and "x0.5" in short["not_comparable"]
    open_loop = run_policies(STAGED, ["precise"], seed=1, client="open-loop")
    assert open_loop["published"] == {} and "open loop" in open_loop["not_comparable"]
    custom = run_policies(STAGED, ["precise"], seed=1, routers={"precise": STAGED.plan_config("load").router})
    assert custom["published"] == {}

    # The table shows llm-d's columns for the comparable run only, and says why for the other.
    def text(doc: dict) -> str:
        con = Console(width=200, record=True)
        con.print(report.plan_table(doc))
        return con.export_text()

    assert "llm-d" in text(full)
    assert "llm-d" not in text(short).split("not comparable")[1] and "x0.5" in text(short)


def test_bench_plan_leaves_published_figures_out_of_a_non_comparable_table(tmp_path: Path) -> None:
    doc = run_policies(STAGED, ["precise"], seed=1, time_scale=0.5)
    doc["description"], doc["total_wall_s"] = "staged", 1.0
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc, default=str))
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_plan.py"), "--from-json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "(llm-d)" not in out.stdout and "llm-d: 57x" not in out.stdout
    assert "left out: this run is not comparable (ladder x0.5" in out.stdout


def test_the_published_form_is_the_main_stages_and_the_mean_of_stage_throughputs() -> None:
    doc = run_policies(STAGED, ["precise"], seed=1)
    row, summ = doc["runs"]["precise"], doc["summaries"]["precise"]
    main = [s for s in summ["stages"] if s["stage"] >= 1]
    assert row["as_published"]["output_tok_s"] == pytest.approx(sum(s["output_tok_s"] for s in main) / len(main))
    assert row["as_published"]["output_tok_s"] != pytest.approx(row["output_tok_s"])  # not the whole-run rate
    assert row["as_published"]["ttft_mean_s"] == pytest.approx(
        sum(s["ttft_mean_s"] * s["ok"] for s in main) / sum(s["ok"] for s in main)
    )


def test_plan_cli_names_a_bad_client_in_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llmdctl", "plan", "small", "--client", "closed"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "--client" in err[0] and "inference-perf" in err[0] and "Traceback" not in out.stderr
