"""`llmdctl plan epd` as users run it: listed in help, JSON with the encode leg, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llmdctl.commands.plan import SCENARIO_NAMES
from llmdctl.plan.epd import EPD_SCENARIOS
from llmdctl.plan.presets import SCENARIOS

REPO = Path(__file__).resolve().parents[2]


def _plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmdctl", "plan", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200", "PYTHONHASHSEED": "0"},
    )


def test_help_names_every_scenario() -> None:
    assert set(SCENARIO_NAMES) == set(SCENARIOS) | set(EPD_SCENARIOS)
    r = _plan("--help")
    assert r.returncode == 0
    assert "Scenario: llmd-73, small, epd." in r.stdout and "aggregated, e-pd, pd, epd" in r.stdout


def test_epd_json_rows_decisions_and_files(tmp_path: Path) -> None:
    r = _plan(
        "epd", "--json", "--time-scale", "0.05", "--rate-scale", "0.5", "--policies", "pd,epd", "--decisions", "1",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["files"] == [str(tmp_path / "plan.json"), str(tmp_path / "plan_epd.png")]
    assert json.loads((tmp_path / "plan.json").read_text())["rows"] == doc["rows"]
    assert (tmp_path / "plan_epd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["scenario"] == "epd" and doc["slo"] == {"ttft_s": 0.5, "itl_s": 0.05}
    assert [(row["deployment"], row["rate"]) for row in doc["rows"]][:2] == [("pd", 4.0), ("epd", 4.0)]
    assert len(doc["rows"]) == 2 * len(EPD_SCENARIOS["epd"].rates)
    for row in doc["rows"]:
        assert row["ok"] == row["requests"] > 0 and len(row["decisions"]) == 1
        assert row["layout"] == {"pd": "4P+4D", "epd": "1E+4P+3D"}[row["deployment"]]
        legs = row["decisions"][0].get("epd")
        if row["deployment"] == "epd":
            assert row["encode_legs"] == row["requests"] and legs["encode"] == "10.0.0.1:8100"
        else:
            assert row["encode_legs"] == 0 and legs is None


def test_epd_rejects_sweep_flags_in_one_line() -> None:
    r = _plan("epd", "--pd", "2:2")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--pd" in lines[0] and "epd" in lines[0] and "Traceback" not in r.stderr
    r = _plan("epd", "--policies", "disagg")
    assert r.returncode == 2 and "aggregated, e-pd, pd, epd" in r.stderr and "Traceback" not in r.stderr
    r = _plan("small", "--decisions", "2")
    assert r.returncode == 2 and "--decisions" in r.stderr and "Traceback" not in r.stderr


def test_an_unwritable_out_or_a_bad_slo_fails_at_once_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for scenario in ("epd", "small"):
        r = _plan(scenario, "--out", str(blocker / "results"), "--time-scale", "0.01")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-800:]
        assert "--out" in r.stderr and "cannot create the directory" in r.stderr
    r = _plan("epd", "--slo-ttft", "-1")
    assert r.returncode == 2 and "--slo-ttft: expected seconds > 0" in r.stderr and "Traceback" not in r.stderr
