"""Small text formatters shared by the panels (numbers, percentages, bars), so columns read the same everywhere."""

from __future__ import annotations

from rich.text import Text


def pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def num(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def bar(frac: float | None, width: int = 8) -> Text:
    """A KV-usage bar: green under 70 %, yellow under 90 %, red above."""
    if frac is None:
        return Text("-")
    frac = min(1.0, max(0.0, frac))
    filled = round(frac * width)
    style = "green" if frac < 0.7 else "yellow" if frac < 0.9 else "red"
    t = Text("█" * filled, style=style)
    t.append("░" * (width - filled), style="dim")
    t.append(f" {frac * 100:3.0f}%")
    return t


def hit(value: float | None) -> Text:
    """A hit rate coloured by how good it is."""
    if value is None:
        return Text("-", style="dim")
    style = "bold green" if value >= 0.6 else "yellow" if value >= 0.25 else "red"
    return Text(f"{value * 100:.0f}%", style=style)
