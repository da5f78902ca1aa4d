"""Shared test helpers: fixture paths and free loopback ports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sim_gpu.procs import free_port, free_port_block  # noqa: F401 - re-exported for the tests

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def capture() -> dict:
    import json

    return json.loads((FIXTURES / "vllm_kv_events_capture.json").read_text())


@pytest.fixture(scope="session", autouse=True)
def shared_build_cache(tmp_path_factory):
    """One LLMDCTL_CACHE for the session: every `llmdctl up` in a temporary home would otherwise train the
    simulated model's tokenizer again (about a second of CPU each). Subprocesses inherit it."""
    if "LLMDCTL_CACHE" in os.environ:
        yield
        return
    os.environ["LLMDCTL_CACHE"] = str(tmp_path_factory.mktemp("llmdctl-cache"))
    try:
        yield
    finally:
        os.environ.pop("LLMDCTL_CACHE", None)
