"""Helpers shared by the `cricket` commands: console, errors, times, running flows."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error (no traceback) and exit."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def parse_time(text: str) -> datetime:
    """An ISO time, or 'now'; naive times are UTC."""
    import pandas as pd

    from cricket.windows import utc

    if text.strip().lower() == "now":
        return utc(datetime.now().astimezone())
    try:
        return utc(pd.Timestamp(text))
    except (ValueError, TypeError):
        fail(f"cannot read {text!r} as a time: write it like 2026-11-24T10:00 (UTC)")


def selector_options(
    measurement: str, field: str, group_by: str, tags: list[str] | None, every: str
):  # noqa: ANN201
    from pydantic import ValidationError

    from cricket.config import SeriesSelector

    tag_filters: dict[str, str] = {}
    for item in tags or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"tag filter {item!r} is not KEY=VALUE: write it like --tag dc=sjc01")
        tag_filters[key] = value
    try:
        return SeriesSelector(
            measurement=measurement,
            field=field,
            group_by=[g for g in group_by.split(",") if g],
            tags=tag_filters,
            every=every,
        )
    except ValidationError as exc:
        fail(_validation_message(exc))


def _validation_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for e in errors():
            loc = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return "; ".join(parts)
    return str(exc)


def quiet_prefect() -> None:
    """Prefect's own logs go to the console only at WARNING unless asked for."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def run_flow(name: str, flow: Callable[..., Any], **params: Any) -> Any:
    """Run a flow in this process with a spinner; known failures become clear errors."""
    quiet_prefect()
    from cricket.errors import user_facing

    with console.status(f"running {name} ...", spinner="dots"):
        try:
            return flow(**params)
        except Exception as exc:  # noqa: BLE001
            message = user_facing(exc)
            if message is None:
                raise
            fail(message)
