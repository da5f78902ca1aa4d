"""`sim calibrate` is a real command of the simulator's CLI (no import guard can make it vanish)."""

from __future__ import annotations

import subprocess
import sys

from sim_gpu.procs import free_port


def test_calibrate_is_registered_and_an_unreachable_server_is_one_line_and_exit_1():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = subprocess.run(
        [sys.executable, "-m", "sim_gpu", "calibrate", "--url", url, "--heldout", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0]
    assert "Traceback" not in r.stderr


def test_report_names_the_fit_the_heldout_errors_and_the_profiles_to_use():
    from sim_gpu.calibrate import CalibrationResult, report_lines

    coeffs = {"compute": 0.5, "memory": 0.8, "overhead_s": 0.002, "per_token_s": 1e-5, "per_seq_s": 3e-4}
    result = CalibrationResult(
        "http://x", "m", "cpu", coeffs, [], 0.04, 0.3, files={"hardware": "/o/cpu.yaml", "model": "/o/m.yaml"}
    )
    lines = report_lines(result)
    assert lines[0].startswith("fitted cpu: compute x0.5, memory x0.8, overhead 2.00 ms, 10.0 us/token, 0.30 ms/seq")
    assert "fit median error 4.0%, 30.0% before" in lines[0]
    assert lines[-1] == "use them: llmdctl sim serve --hardware /o/cpu.yaml --model-profile /o/m.yaml"
    assert not any(line.startswith("held-out") for line in lines)  # --heldout 0: no comparison to report
    result.heldout = {
        "requests": 4,
        "ttft_median_error": 0.1,
        "ttft_p90_error": 0.2,
        "e2e_median_error": 0.05,
        "e2e_p90_error": 0.07,
    }
    assert "TTFT error median 10.0% p90 20.0%; end-to-end error median 5.0% p90 7.0%" in report_lines(result)[1]
