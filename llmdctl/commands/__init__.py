"""One module per command group: parse and validate options, call llmdctl.local, render the result."""

from __future__ import annotations

import typer


def paragraphs(text: str) -> str:
    """Help text written with hard-wrapped lines, re-flowed so the terminal wraps it (blank line = paragraph)."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise (no traceback for user mistakes)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
