"""Fixtures for the real-vLLM integration tests (`python -m pytest -m vllm`).

The tests run only when selected with `-m vllm` (they start real engines: minutes, ~2 GB each); in any
other run they are skipped with that reason. When selected: in CI (CI=true) a missing engine is installed
and an install failure FAILS the run loudly; elsewhere a missing engine is a skip that says why and how.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.vllm.vllm_harness import REPO, start_vllm_pods

HASH_SEED = "42"  # explicit PYTHONHASHSEED for vLLM and the router: hashes must still agree
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "vllm" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="real-vLLM integration test: select with `python -m pytest -m vllm`")
    for item in items:
        if item.get_closest_marker("vllm"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def vllm_installed() -> str:
    """The engine's interpreter; installs it in CI (failing loudly), skips with the reason elsewhere."""
    sys.path.insert(0, str(REPO))
    from llmdctl.engines.vllm_env import EngineError, install_vllm, vllm_python, vllm_status

    if not vllm_status().installed:
        if not IN_CI and os.environ.get("LLMDCTL_VLLM_AUTO_INSTALL") != "1":
            reason = "vLLM engine not installed: run `llmdctl engine install vllm` (or set LLMDCTL_VLLM_AUTO_INSTALL=1)"
            print(f"\nSKIP: {reason}", file=sys.stderr)
            pytest.skip(reason)
        try:
            install_vllm(lambda step, state, detail: print(f"engine install: {step} {state} {detail}", file=sys.stderr))
        except EngineError as exc:
            pytest.fail(f"CI: the vLLM engine could not be installed: {exc}", pytrace=False)
    try:
        return str(vllm_python())
    except EngineError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def tiny_model(vllm_installed: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny deterministic model: $LLMDCTL_VLLM_TEST_MODEL when it holds one (CI builds it once), else built now."""
    given = os.environ.get("LLMDCTL_VLLM_TEST_MODEL")
    if given and (Path(given) / "config.json").is_file():
        return given
    from llmdctl.commands.model import make_tiny

    out = tmp_path_factory.mktemp("tiny-model")
    make_tiny(str(out), "tiny", 0)
    return str(out)


@pytest.fixture(scope="module")
def vllm_pair(tiny_model: str, tmp_path_factory: pytest.TempPathFactory):
    """Two real vLLM pods (CPU build), one core each, PYTHONHASHSEED=42, KV events on."""
    tmp = tmp_path_factory.mktemp("vllm-pair")
    t0 = time.monotonic()
    stack = start_vllm_pods(tiny_model, 2, tmp, HASH_SEED)
    print(
        f"\nvLLM pair ready in {time.monotonic() - t0:.1f} s (per pod: "
        f"{[round(p.ready_s or 0, 1) for p in stack.procs]})",
        file=sys.stderr,
    )
    try:
        yield stack
    finally:
        stack.close()
