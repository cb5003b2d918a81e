"""`cricket models list | promote VERSION | rollback`: review and override the registry.

The same aliases (``champion``, ``challenger``) and tags show in the MLflow UI
(``mlflow ui --backend-store-uri <tracking URI>``).
"""

from __future__ import annotations

import typer

from cricket.cli import app

models_app = typer.Typer(
    name="models",
    help="Model versions in MLflow: list them, promote one, roll the champion back.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


def _registry():  # noqa: ANN202 - heavy import kept inside
    from cricket.config import Settings
    from cricket.registry import Registry

    return Registry(Settings())


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@models_app.command("list")
def list_models() -> None:
    """Every version: aliases, when it was made, training range, the promotion decision."""
    from rich.console import Console
    from rich.table import Table

    registry = _registry()
    rows = registry.list_versions()
    # A table needs its width even where stdout is not a terminal (cron, a pipe, CI).
    console = Console() if Console().is_terminal else Console(width=200)
    if not rows:
        typer.echo(
            f"no versions of model {registry.name!r} in {registry.uri}: "
            "run the nightly retrain first (cricket retrain)"
        )
        return
    table = Table(title=f"{registry.name}  ({registry.uri})")
    for col in ("version", "aliases", "created (UTC)", "trained", "series", "false alarms"):
        table.add_column(col, no_wrap=col != "trained")
    table.add_column("decision")
    for row in rows:
        t = row.tags
        trained = f"{t.get('trained_from', '')[:16]} .. {t.get('trained_to', '')[:16]}"
        fa = t.get("heldout_false_alarms")
        decision = row.decision
        if t.get("decision_reason"):
            decision = f"{decision}: {t['decision_reason']}"
        if t.get("warning"):
            decision = f"{decision} [WARNING: {t['warning']}]"
        aliases = ", ".join(row.aliases)
        style = "bold green" if "champion" in row.aliases else None
        table.add_row(
            row.version,
            aliases,
            row.created.strftime("%Y-%m-%d %H:%M"),
            trained if trained.strip(" .") else "",
            t.get("series_count", ""),
            f"{float(fa):.3%}" if fa else "",
            decision,
            style=style,
        )
    console.print(table)


@models_app.command("promote")
def promote(
    version: str = typer.Argument(..., help="the version to make champion"),
    reason: str = typer.Option("promoted by hand", help="recorded in the version's tags"),
) -> None:
    """Make VERSION the champion (scoring loads it from the next run on)."""
    from cricket.model import ModelFormatError
    from cricket.registry import RegistryError

    registry = _registry()
    try:
        previous = registry.promote(version, reason=reason)
    except (RegistryError, ModelFormatError) as exc:
        _fail(str(exc))
        return
    if previous == version:
        typer.echo(f"version {version} of {registry.name} already is the champion")
    else:
        before = f" (was version {previous})" if previous else ""
        typer.echo(f"version {version} of {registry.name} is now the champion{before}")


@models_app.command("rollback")
def rollback() -> None:
    """Give the champion alias back to the previous champion."""
    from cricket.registry import RegistryError

    registry = _registry()
    try:
        old, new = registry.rollback()
    except RegistryError as exc:
        _fail(str(exc))
        return
    typer.echo(
        f"rolled back {registry.name}: champion is version {new} again (was version {old})"
    )
