"""Which exceptions are the user's to fix, and how to say so without a traceback.

Every error a user can fix derives from :class:`CricketError`; its message says what
went wrong and what to do. The ``cricket`` command prints those as one line; anything
else is a bug and keeps its traceback. Where callers (or scikit-learn conventions)
expect a built-in type, a subclass derives from both (``CricketValueError`` is a
``ValueError``, ``UnknownSeriesError`` a ``KeyError``).

    CricketError
    +-- CricketValueError (ValueError)     bad values, parameters, data
    |   +-- BadSeriesError                  (cricket.series) data that cannot be used as is
    |   +-- ModelFormatError                (cricket.persistence) a saved model that cannot be read
    |       +-- FormatVersionError          ... written in another format version
    +-- NotFittedError                      (cricket.base) a detector used before fit
    +-- DataNotFoundError (FileNotFoundError)  a file or folder the user named is missing
    +-- InfluxError                         (cricket.influx.base) InfluxDB refused or is down
    +-- RegistryError                       (cricket.registry) MLflow registry answers
    |   +-- NoChampionError (LookupError)
    +-- RegistryUnavailableError            (cricket.registry) the MLflow store is unusable
    +-- UnknownSeriesError (KeyError)       (cricket.model) no detector for a series
"""

from __future__ import annotations

import re

from pydantic import ValidationError

# user[:password]@ in any URL (http://user:pw@host, postgresql://u:p@db/...)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s?#]+@")


def redact(text: object) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}***@", str(text))


class CricketError(Exception):
    """Base class for errors whose message already says what went wrong and what to do.

    ``retryable`` says whether trying again later can succeed (a server that did not
    answer, an HTTP 5xx); a missing database, unknown version or refused credentials
    cannot heal by retrying, and the pipeline's tasks fail at once on those."""

    retryable: bool = False

    def __init__(self, *args: object, retryable: bool | None = None) -> None:
        super().__init__(*args)
        if retryable is not None:
            self.retryable = retryable


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying can help: what the error says of itself; an error a user must
    fix (bad input, unknown names) never; any other failure (I/O) may heal."""
    marked = getattr(exc, "retryable", None)
    if marked is not None:
        return bool(marked)
    if isinstance(exc, ValueError | TypeError | KeyError | LookupError | AttributeError):
        return False
    return True


class CricketValueError(CricketError, ValueError):
    """A value (parameter, input data, saved state) that cannot be used as given."""


class DataNotFoundError(CricketError, FileNotFoundError):
    """A file or folder the user pointed Cricket at does not exist or holds nothing."""


def user_facing(exc: BaseException) -> str | None:
    """The one-line message for an error a user can fix, or None for a bug (which keeps
    its traceback). Parameters refused by pydantic count as the user's to fix; so does
    an error explicitly raised ``from`` one of those (a wrapper's ``__cause__``)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
    if isinstance(exc, CricketError):
        return redact(str(exc) or type(exc).__name__)
    cause = exc.__cause__
    if cause is not None and cause is not exc:
        return user_facing(cause)
    return None
