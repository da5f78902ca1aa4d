"""How close the simulator's timing is to recorded real vLLM traces, always judged on traces the fit did not see.

    python bench/sim_accuracy.py                       # replay every fixture with the shipped `cpu` profile
    python bench/sim_accuracy.py --hardware OLD.yaml   # ... with another profile (e.g. the one before a refit)
    python bench/sim_accuracy.py --fit [--write-profile sim_gpu/data/hardware/cpu.yaml]
                                                       # fit on the fit shapes from scratch, score the held-out ones
    python bench/sim_accuracy.py --fit --fit-repeats   # ... on both recordings of the fit shapes (--repeats)
    python bench/sim_accuracy.py --leave-one-out       # fit on all shapes but one, score that one; every shape
    [--traces tests/fixtures/vllm_traces] [--shapes a,b,...] [--json out.json]
    [--repeats tests/fixtures/vllm_traces/repeats]     # second recordings: the real engine's run-to-run error

Traces are recorded by bench/record_vllm_traces.py (real vLLM 0.32 CPU, the `small` tiny model). Errors are
|sim - real| / real per request, TTFT and end-to-end, median and p90 per shape; `fit`/`held-out` says whether
the profile that produced the row was fitted on that shape. With second recordings of some shapes (`--repeats`,
recorded later by the same script) it also prints how far the real engine is from itself, request by request,
beside the simulator's error against each recording: a per-request error below that floor is not meaningful.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_gpu.hw_profiles import load_hardware  # noqa: E402
from sim_gpu.latency import LatencyModel  # noqa: E402
from sim_gpu.replay import ReplayScore, as_prediction, replay_score, score, trace_latency  # noqa: E402
from sim_gpu.trace_fit import FIT_SHAPES, fit, profile_doc  # noqa: E402
from sim_gpu.traces import Trace  # noqa: E402

DEFAULT_TRACES = REPO / "tests" / "fixtures" / "vllm_traces"
DEFAULT_REPEATS = DEFAULT_TRACES / "repeats"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_traces(folder: Path) -> dict[str, Trace]:
    traces = {p.stem: Trace.load(p) for p in sorted(folder.glob("*.json"))}
    if not traces:
        raise SystemExit(f"--traces: no *.json trace in {folder}")
    return traces


def print_table(rows: list[tuple[str, ReplayScore]], title: str) -> None:
    print(f"\n{title}")
    print(
        f"{'shape':13s} {'set':9s} {'n':>4s} {'TTFT med':>9s} {'p90':>6s} {'E2E med':>8s} {'p90':>6s}"
        f" {'real/sim TTFT ms':>17s} {'real/sim E2E ms':>16s} {'cached=':>7s}"
    )
    for label, s in rows:
        print(
            f"{s.shape:13s} {label:9s} {s.n:4d} {s.ttft_median:9.1%} {s.ttft_p90:6.0%} {s.e2e_median:8.1%} "
            f"{s.e2e_p90:6.0%} {s.real_ttft_median * 1e3:8.0f}/{s.sim_ttft_median * 1e3:<8.0f} "
            f"{s.real_e2e_median * 1e3:7.0f}/{s.sim_e2e_median * 1e3:<8.0f} {s.cached_match:7.0%}"
        )


def run_to_run(traces: dict[str, Trace], repeats: dict[str, Trace], latency: LatencyModel) -> list[dict[str, Any]]:
    """Per shape with a second recording: real vs real, and the simulator against each recording."""
    out = []
    print("\nrun to run: a second recording of each shape (same script, same machine, recorded later)")
    print(
        f"{'shape':13s} {'n':>4s} {'real vs real TTFT med/p90':>26s} {'E2E med/p90':>12s} "
        f"{'sim vs 1st TTFT/E2E med':>24s} {'sim vs 2nd TTFT/E2E med':>24s}"
    )
    for name, second in repeats.items():
        first = traces.get(name)
        if first is None:
            continue
        real = score(first, as_prediction(second))
        sim1, sim2 = replay_score(first, latency), replay_score(second, latency)
        print(
            f"{name:13s} {real.n:4d} {real.ttft_median:17.1%} / {real.ttft_p90:4.0%} {real.e2e_median:5.1%} / "
            f"{real.e2e_p90:4.0%} {sim1.ttft_median:14.1%} / {sim1.e2e_median:5.1%} "
            f"{sim2.ttft_median:15.1%} / {sim2.e2e_median:5.1%}"
        )
        out.append({"shape": name, "real_vs_real": real.row(), "sim_vs_first": sim1.row(), "sim_vs_second": sim2.row()})
    return out


def write_profile(base: str, values: dict[str, float], path: Path, note: str) -> None:
    """The `base` hardware profile's YAML with the fitted hardware fields and coefficients in place."""
    doc = profile_doc(load_hardware(base), values, description=note)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    say(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=str(DEFAULT_TRACES))
    ap.add_argument("--shapes", default="", help="comma-separated subset of the traces (default: all)")
    ap.add_argument("--hardware", default="cpu", help="hardware profile to replay with (name or YAML)")
    ap.add_argument("--fit", action="store_true", help="fit on the fit shapes, score every shape")
    ap.add_argument("--leave-one-out", action="store_true", help="for each shape: fit on the others, score it")
    ap.add_argument("--write-profile", help="with --fit: write the fitted hardware profile here")
    ap.add_argument(
        "--fit-repeats",
        action="store_true",
        help="with --fit: fit on the fit shapes' second recordings too, and score the held-out shapes' second ones",
    )
    ap.add_argument("--max-evaluations", type=int, default=800)
    ap.add_argument("--json", help="write the figures as JSON here")
    ap.add_argument(
        "--repeats",
        default=str(DEFAULT_REPEATS),
        help="folder of second recordings of some shapes (default: the fixtures'; '' for none)",
    )
    args = ap.parse_args()
    traces = load_traces(Path(args.traces))
    if args.shapes:
        wanted = [s for s in args.shapes.split(",") if s]
        unknown = [s for s in wanted if s not in traces]
        if unknown:
            ap.error(f"--shapes: no trace {unknown[0]!r} in {args.traces} (have {', '.join(traces)})")
        traces = {k: traces[k] for k in wanted}
    base = next(iter(traces.values()))
    latency = trace_latency(base, args.hardware)
    doc: dict[str, Any] = {"hardware": args.hardware, "traces": str(args.traces)}
    repeats = (
        {k: v for k, v in load_traces(Path(args.repeats)).items() if k in traces}
        if args.repeats and Path(args.repeats).is_dir()
        else {}
    )
    if args.fit_repeats and not repeats:
        ap.error(f"--fit-repeats: no second recordings in --repeats {args.repeats!r}")
    if args.fit or args.leave_one_out:
        folds = (
            [(name, [t for k, t in traces.items() if k != name]) for name in traces]
            if args.leave_one_out
            else [("", [traces[k] for k in FIT_SHAPES if k in traces])]
        )
        doc["folds"] = []
        rows: list[tuple[str, ReplayScore]] = []
        for held, fit_on in folds:
            t0 = time.monotonic()

            def prog(n: int, best: float, held: str = held) -> None:
                if n % 100 == 0:
                    say(f"  {held or 'fit'}: {n} replays, objective {best:.4f} ({time.monotonic() - t0:.0f}s)")

            heldout = [traces[held]] if held else [t for k, t in traces.items() if k not in FIT_SHAPES]
            n_fit, n_held = len(fit_on), len(heldout)
            if args.fit_repeats and not held:  # second recordings: fit shapes join the fit, the rest are scored
                fit_on = fit_on + [repeats[k] for k in FIT_SHAPES if k in repeats]
                heldout = heldout + [t for k, t in repeats.items() if k not in FIT_SHAPES]
            res = fit(fit_on, latency, heldout, max_evaluations=args.max_evaluations, progress=prog)
            say(f"fold {held or 'fixed split'}: {res.evaluations} replays, {time.monotonic() - t0:.0f}s")
            doc["folds"].append({"heldout": held or None, **res.to_dict()})
            if held:
                rows.append(("held-out", res.heldout[0]))
            else:
                rows += [("fit" if i < n_fit else "fit 2nd", s) for i, s in enumerate(res.fit)]
                rows += [("held-out" if i < n_held else "held 2nd", s) for i, s in enumerate(res.heldout)]
                print(json.dumps({k: float(f"{v:.4g}") for k, v in res.values.items()}))
                if args.write_profile:
                    note = (
                        f"vLLM {base.server.get('vllm_version', '?')} on CPU, fitted by bench/sim_accuracy.py --fit on "
                        f"recorded traces {', '.join(FIT_SHAPES)} ({base.machine.get('cpus', '?')}-core VM)"
                    )
                    write_profile(args.hardware, res.values, Path(args.write_profile), note)
        title = "leave one shape out (each row: fitted on every other shape)" if args.leave_one_out else "fixed split"
        print_table(rows, title)
    else:
        rows = [("fit" if k in FIT_SHAPES else "held-out", replay_score(t, latency)) for k, t in traces.items()]
        doc["rows"] = [{"set": label, **s.row()} for label, s in rows]
        print_table(rows, f"replayed with hardware profile {args.hardware!r}")
        if repeats:
            doc["run_to_run"] = run_to_run(traces, repeats, latency)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
