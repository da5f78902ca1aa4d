"""The code passes the project's own ruff configuration (pyproject.toml [tool.ruff]): lint and format."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_ruff_passes(args: list[str]) -> None:
    ruff = shutil.which("ruff")
    assert ruff is not None, "ruff is not installed: pip install '.[test]'"
    result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
