"""Which exceptions are the user's to fix, and how to say so without a traceback."""

from __future__ import annotations

from pydantic import ValidationError


class CricketError(RuntimeError):
    """Base class for errors whose message already says what went wrong and what to do."""


def user_facing(exc: BaseException) -> str | None:
    """The message to show for an error a user can fix, or None for a bug (traceback)."""
    from cricket.influx.base import InfluxError

    known: tuple[type[BaseException], ...] = (CricketError, InfluxError, ValueError, KeyError)
    try:
        from cricket.model import ModelFormatError
        from cricket.registry import NoChampionError, RegistryError

        known = known + (NoChampionError, RegistryError, ModelFormatError)
    except ImportError:  # pragma: no cover - registry optional in minimal installs
        pass
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
    if isinstance(exc, known):
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return text or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        return user_facing(cause)
    return None
