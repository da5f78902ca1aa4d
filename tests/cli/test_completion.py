"""Shell completion works for bash, zsh and fish: the script installs and completes commands and options."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from llmdctl.cli import app


@pytest.fixture
def named_shell(monkeypatch):
    """Typer takes the shell named on the command line only with its parent-shell detection off (with it on,
    the parent process decides, and a pytest without a shell parent, as under nohup, gets none)."""
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")


SCRIPT_MARK = {
    "bash": "complete -o default -F _llmdctl_completion llmdctl",
    "zsh": "#compdef llmdctl",
    "fish": "complete --command llmdctl",
}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_a_script_for_the_shell(shell, named_shell):
    r = CliRunner().invoke(app, ["--show-completion", shell], prog_name="llmdctl")
    assert r.exit_code == 0, r.output
    assert "_LLMDCTL_COMPLETE" in r.output and SCRIPT_MARK[shell] in r.output


def test_install_completion_writes_the_bash_script(tmp_path, monkeypatch, named_shell):
    monkeypatch.setenv("HOME", str(tmp_path))
    r = CliRunner().invoke(app, ["--install-completion", "bash"], prog_name="llmdctl")
    assert r.exit_code == 0, r.output
    assert "_LLMDCTL_COMPLETE" in (tmp_path / ".bash_completions" / "llmdctl.sh").read_text()


@pytest.mark.parametrize(
    ("words", "cword", "expect"), [("llmdctl pro", 1, "profiles"), ("llmdctl up --eng", 2, "--engine")]
)
def test_bash_completes_commands_and_options(words, cword, expect):
    env = {"_LLMDCTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    r = CliRunner().invoke(app, [], env=env, prog_name="llmdctl")
    assert expect in r.output.split()
