"""The ``cricket`` command. Each group of commands lives in its own module here."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="cricket",
    help=(
        "Cricket finds the anomalous cricket: shape-library anomaly detection for metrics.\n\n"
        "State (local InfluxDB data, MLflow store, reports) lives in $CRICKET_STATE_DIR, "
        "default $XDG_DATA_HOME/cricket (~/.local/share/cricket), wherever you run from. "
        "Exit codes: 0 done; 1 an error to fix; 2 a bad command line; 3 series the model "
        "knows sent no data (data_missing events)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        from cricket import __version__

        typer.echo(f"cricket {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    from cricket.cli.common import quiet_prefect

    quiet_prefect()  # before anything imports Prefect or MLflow


# Importing a module registers its commands on ``app`` (keep heavy imports inside commands).
from cricket.cli import (  # noqa: E402,F401
    alerts,
    answers,
    demo,
    evaluate,
    influx,
    models,
    pipeline,
    points,
    serve,
)


def run() -> None:
    """The ``cricket`` entry point: an error a user can fix anywhere (a malformed
    cricket.toml, a setting out of range, a service that does not answer) is one line on
    stderr, exit status 1."""
    from pydantic import ValidationError

    from cricket.errors import CricketError

    try:
        app(prog_name="cricket")
    except (CricketError, ValidationError) as exc:
        from cricket.cli.common import fail, settings_problem

        message = settings_problem(exc) if isinstance(exc, ValidationError) else str(exc)
        try:
            fail(message)
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
