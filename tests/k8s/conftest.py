"""An isolated LLMDCTL_HOME for the k8s tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMDCTL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
