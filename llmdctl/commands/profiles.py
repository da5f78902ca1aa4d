"""`llmdctl profiles list|show`: the shipped profiles, validated."""

from __future__ import annotations

import json

import typer

from llmdctl.commands import fail

app = typer.Typer(
    help="List and show stack profiles (pools of model servers, router config, KV tiers).", no_args_is_help=True
)


def _summary(profile) -> dict:
    return {
        "name": profile.name,
        "description": profile.description,
        "engine": profile.engine,
        "pools": [
            {
                "name": p.name,
                "role": p.role,
                "replicas": p.replicas,
                "data_parallel_size": p.data_parallel_size,
                "hardware": p.hardware,
                "model_profile": p.model_profile,
            }
            for p in profile.pools
        ],
        "scorers": _scorers(profile.router.config),
        "kv_tiers": profile.kv_tiers is not None,
    }


def _scorers(config: dict) -> list[str]:
    """`profile: scorer weight, ...` per scheduling profile; unweighted refs (filters, pickers) by name."""
    out = []
    for prof in config.get("schedulingProfiles") or []:
        parts = []
        for ref in prof.get("plugins") or []:
            name = str(ref.get("pluginRef", "?"))
            weight = ref.get("weight")
            parts.append(f"{name.removesuffix('-scorer')} {weight:g}" if isinstance(weight, (int, float)) else name)
        out.append(f"{prof.get('name', '?')}: {', '.join(parts)}")
    return out


@app.command(
    "list",
    help="List the shipped profiles with their pools and weighted scorers. Invalid ones are listed with their error.",
)
def list_command(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmdctl.profile import ProfileError, list_profiles, load_profile

    rows, errors = [], []
    for path in list_profiles():
        try:
            rows.append(_summary(load_profile(str(path))))
        except ProfileError as exc:
            errors.append({"name": path.stem, "error": str(exc)})
    if as_json:
        typer.echo(json.dumps({"profiles": rows, "invalid": errors}, indent=2))
        raise typer.Exit(1 if errors else 0)
    table = Table(show_lines=True)
    table.add_column("profile", no_wrap=True)
    table.add_column("pods", no_wrap=True)
    table.add_column("scheduling (scorer weight)", overflow="fold")
    for r in rows:
        pods = "\n".join(
            f"{p['replicas']} x {p['name']} ({p['role']})"
            + (f", dp {p['data_parallel_size']}" if p["data_parallel_size"] > 1 else "")
            for p in r["pools"]
        )
        table.add_row(f"[bold]{r['name']}[/bold]", pods, "\n".join(r["scorers"]) + f"\n[dim]{r['description']}[/dim]")
    console = Console()
    console.print(table)
    for e in errors:
        typer.echo(f"error: {e['error']}", err=True)
    if errors:
        raise typer.Exit(1)


@app.command("show", help="Show one profile, validated and with defaults filled in, as YAML (or JSON).")
def show_command(
    name: str = typer.Argument(..., help="Profile name or path to a profile YAML file."),
    set_: list[str] = typer.Option(
        [], "--set", "-s", help="Apply KEY=VALUE overrides first, as `llmdctl up` would (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    import yaml

    from llmdctl.profile import ProfileError, load_profile, profile_to_dict

    try:
        profile = load_profile(name, set_)
    except ProfileError as exc:
        raise fail(str(exc), 2) from None
    doc = profile_to_dict(profile)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(yaml.safe_dump(doc, sort_keys=False, width=120).rstrip())
