"""Helpers shared by the `cricket` commands: console, errors, times, running flows."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

# soft_wrap: a path or URL is printed on one line, whatever the terminal's width
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
_verbose = False


#: exit statuses (README, "Exit codes")
EXIT_OK = 0
EXIT_ERROR = 1  # something to fix: input, configuration, a service that does not answer
EXIT_USAGE = 2  # the command line itself (unknown option, missing argument)
EXIT_DATA_MISSING = 3  # the run worked, but series the model knows sent (almost) no data


def exit_for(summary: dict) -> None:
    """Exit with EXIT_DATA_MISSING when the run's summary lists series (or devices) the
    model knows that sent (almost) no data; return otherwise."""
    if summary.get("data_missing"):
        raise typer.Exit(EXIT_DATA_MISSING)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print a clear error (one line, no traceback, credentials masked) and exit."""
    from cricket.errors import redact

    err_console.print(
        f"[bold red]error:[/] {escape(redact(message))}", markup=True, highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(code)


def parse_time(text: str) -> datetime:
    """An ISO time, 'now', or a time relative to now ('now-30m', 'now+2h', '+2h');
    naive times are UTC."""
    import re

    import pandas as pd

    from cricket.config import parse_duration
    from cricket.windows import utc

    now = utc(datetime.now().astimezone())
    relative = re.fullmatch(r"\s*(?:now)?\s*([+-])\s*(\S+)\s*", text.lower())
    if text.strip().lower() == "now":
        return now
    if relative:
        try:
            step = parse_duration(relative.group(2))
        except ValueError as exc:
            fail(f"cannot read {text!r} as a time: {exc}")
        return now + step if relative.group(1) == "+" else now - step
    try:
        return utc(pd.Timestamp(text))
    except (ValueError, TypeError):
        fail(f"cannot read {text!r} as a time: write it like 2026-11-24T10:00 (UTC), now, "
             "now-30m or now+2h")


def duration(option: str, text: str, allow_zero: bool = False):  # noqa: ANN201
    """A duration option, checked: one line naming the option when it is wrong."""
    from datetime import timedelta

    from cricket.config import parse_duration

    try:
        td = parse_duration(text)
    except ValueError as exc:
        fail(f"{option}: {exc}")
    if td < timedelta(0) or (td == timedelta(0) and not allow_zero):
        fail(f"{option} {text!r} must be a positive duration, like '1h'")
    return td


def tag_options(items: list[str] | None, what: str = "tag") -> dict[str, str]:
    """Repeated ``--tag KEY=VALUE`` options as a dict; a malformed one is a one-line error
    naming ``what`` it was meant to be."""
    tags: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} {item!r} is not KEY=VALUE: write it like --tag dc=sjc01")
        tags[key] = value
    return tags


def selector_options(
    measurement: str, field: str, group_by: str, tags: list[str] | None, every: str
):  # noqa: ANN201
    from pydantic import ValidationError

    from cricket.config import SeriesSelector

    tag_filters = tag_options(tags, "tag filter")
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
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return str(exc)


def settings_problem(exc: Exception) -> str:
    """One line for a setting that cannot be used (an environment variable or a key in
    cricket.toml): which one, what is wrong, where to fix it. Never the value: it may be
    a secret."""
    if getattr(exc, "title", None) != "Settings":
        return _validation_message(exc)
    parts = []
    for e in exc.errors():  # type: ignore[attr-defined]
        loc = [str(p) for p in e.get("loc", ())]
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"CRICKET_{loc[0].upper()} ({'.'.join(loc)}): {msg}" if loc else msg)
    return ("; ".join(parts) + ": fix that environment variable, or the key in cricket.toml "
            "(README, Configuration, says what each takes)")


def quiet_prefect(verbose: bool = False) -> None:
    """Set before Prefect or MLflow is imported: the terminal shows a short summary, or
    with ``verbose`` the runs' logs. The runs' logs still go to the Prefect API (UI) at
    INFO either way: only the console handler is quiet."""
    global _verbose
    _verbose = verbose
    level = "INFO" if verbose else "CRITICAL"
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = level
    if verbose:
        os.environ.pop("MLFLOW_LOGGING_LEVEL", None)
    else:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A temporary server started by Prefect itself (not through flows.server) gets time
    # to create its database on a slow machine too.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Known failures (:func:`cricket.errors.user_facing` has words for them) become a
    one-line error and exit status; anything else (a bug) keeps its traceback."""
    from cricket.errors import user_facing

    try:
        yield
    except Exception as exc:  # noqa: BLE001 - known errors become one line
        message = user_facing(exc)
        if message is None:
            raise
        fail(message)


def run_flow(name: str, flow: Callable[..., Any], **params: Any) -> Any:
    """Run a flow in this process with a spinner, against a Prefect API that answers
    (flows.server); known failures become clear one-line errors."""
    from cricket.flows.server import prefect_api

    if not _verbose:  # MLflow prints "Successfully registered model ..." past its loggers
        from mlflow.utils.logging_utils import disable_logging

        disable_logging()

    with console.status(f"running {name} ...", spinner="dots") as status, one_line_errors():
        with prefect_api(announce=status.update) as where:
            status.update(f"running {name} ...")
            result = flow(**params)
    if isinstance(result, dict):
        result.setdefault("prefect_api", where)
    return result
