"""`llmdctl logs [NAME]`: the log of a component or pod, or the tail of all of them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from llmdctl.commands import fail

HELP = """Show logs of the running (or last) stack. NAME is a component (`router`, `sim-pod`, ...) or a pod
(`pod-0`: the log of the process serving it); without NAME, the last lines of every log. Logs live in
$LLMDCTL_HOME/logs and are kept after `llmdctl down`."""


def _follow(paths: list[Path], prefix: bool) -> None:
    """Print new lines as they arrive until Ctrl-C (polling: works for any file system)."""
    offsets = {p: (p.stat().st_size if p.exists() else 0) for p in paths}
    try:
        while True:
            for p in paths:
                try:
                    size = p.stat().st_size
                except OSError:
                    continue
                if size < offsets[p]:
                    offsets[p] = 0  # truncated: a new run started
                if size > offsets[p]:
                    with open(p, "rb") as fh:
                        fh.seek(offsets[p])
                        data = fh.read()
                    offsets[p] += len(data)
                    for line in data.decode(errors="replace").splitlines():
                        typer.echo(f"{p.stem:>12} | {line}" if prefix else line)
            time.sleep(0.2)
    except KeyboardInterrupt:
        return


def logs_command(
    name: Optional[str] = typer.Argument(
        None, help="Component or pod name (see `llmdctl status`); all logs when omitted."
    ),
    lines: int = typer.Option(
        50, "-n", "--lines", help="Lines to show from the end of each log (0: none, only follow)."
    ),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines until Ctrl-C."),
) -> None:
    from llmdctl.local.stack import log_path_of
    from llmdctl.local.state import StateError, load_state, logs_dir
    from llmdctl.local.supervisor import tail

    if lines < 0:
        raise fail(f"--lines: expected >= 0, got {lines}", 2)
    try:
        state = load_state()
    except StateError:
        state = None
    if name is not None:
        path = log_path_of(state, name)
        if path is None:
            known = (
                sorted({c.name for c in state.components} | {p.name for p in state.pods})
                if state
                else sorted(p.stem for p in logs_dir().glob("*.log"))
            )
            raise fail(f"no log for {name!r}; known: {', '.join(known) or 'none (nothing has run yet)'}", 2)
        if lines:
            text = tail(path, lines)
            if text:
                typer.echo(text)
        if follow:
            _follow([path], prefix=False)
        return
    paths = [Path(c.log) for c in state.components] if state else sorted(logs_dir().glob("*.log"))
    if not paths:
        raise fail("no logs yet: start a stack with `llmdctl up PROFILE`", 1)
    for p in paths:
        if lines:
            typer.echo(f"==> {p.stem} ({p}) <==")
            text = tail(p, lines)
            if text:
                typer.echo(text)
    if follow:
        _follow(paths, prefix=True)
