"""Shared test helpers: fixture paths and free loopback ports."""

from __future__ import annotations

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
