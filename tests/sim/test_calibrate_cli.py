"""`sim calibrate` is a real command of the simulator's CLI (no import guard can make it vanish)."""

from __future__ import annotations

import subprocess
import sys

from sim_gpu.procs import free_port


def test_calibrate_is_registered_and_an_unreachable_server_is_one_line_and_exit_1():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = subprocess.run(
        [sys.executable, "-m", "sim_gpu", "calibrate", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0]
    assert "Traceback" not in r.stderr


def test_report_puts_heldout_accuracy_first_and_labels_the_fit_as_in_sample():
    from sim_gpu.calibrate import CalibrationResult, report_lines

    row = {"n": 40, "ttft_median": 0.08, "ttft_p90": 0.3, "e2e_median": 0.06, "e2e_p90": 0.2}
    result = CalibrationResult(
        "http://x",
        "m",
        "cpu",
        {"mfu": 0.25, "request_in_s": 0.014},
        fit=[{**row, "shape": "burst", "ttft_median": 0.01}],
        heldout=[{**row, "shape": "kv-pressure"}],
        before=[{**row, "shape": "kv-pressure", "ttft_median": 0.61, "e2e_median": 0.53}],
        skipped=["long-prefix"],
        files={"hardware": "/o/cpu.yaml", "model": "/o/m.yaml", "traces": "/o/traces"},
        run_to_run=[
            {
                "shape": "kv-pressure",
                "real_vs_real": {**row, "ttft_median": 0.21, "e2e_median": 0.2},
                "sim_vs_repeat": {**row, "ttft_median": 0.18, "e2e_median": 0.16},
            }
        ],
    )
    lines = report_lines(result)
    assert lines[0] == "fitted cpu: mfu 0.25, request_in_s 0.014"
    assert lines[1] == (
        "held-out kv-pressure (40 requests): TTFT error median 8.0% p90 30.0%; end-to-end median 6.0% p90 20.0%"
        " (before the fit: 61% / 53%)"
    )
    assert lines[2] == (
        "held-out kv-pressure recorded again: the server against itself TTFT median 21.0%, end-to-end median 20.0%;"
        " the fitted profile against the second recording 18.0% / 16.0%"
    )
    assert lines[3].startswith("fitted on burst (in-sample, not accuracy): TTFT median 1.0%")
    assert lines[4] == "skipped long-prefix: its prompts exceed the server's max_model_len"
    assert lines[-1] == "use them: llmdctl sim serve --hardware /o/cpu.yaml --model-profile /o/m.yaml"


def test_server_flags_come_from_vllms_cache_config_gauge():
    from sim_gpu.calibrate import server_flags

    flags = server_flags({"block_size": "32", "num_gpu_blocks": "257"}, 2048, 32)
    assert flags == {"block-size": "32", "max-num-seqs": "32", "num-gpu-blocks": "257", "max-model-len": "2048"}
