"""The ``cricket`` command. Each group of commands lives in its own module here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="cricket",
    help="Cricket finds the anomalous cricket: shape-library anomaly detection for metrics.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Importing a module registers its commands on ``app`` (keep heavy imports inside commands).
from cricket.cli import (  # noqa: E402,F401
    alerts,
    answers,
    demo,
    evaluate,
    influx,
    models,
    pipeline,
    serve,
)
