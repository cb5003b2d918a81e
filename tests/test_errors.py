"""Errors users can fix derive from CricketError and print as one line; bugs keep
their traceback."""

from __future__ import annotations

import numpy as np
import pytest

from cricket.base import NotFittedError
from cricket.detector import WaveformDetector
from cricket.errors import CricketError, CricketValueError, user_facing
from cricket.influx.base import InfluxError
from cricket.model import UnknownSeriesError
from cricket.persistence import FormatVersionError, ModelFormatError
from cricket.registry import NoChampionError, RegistryError, RegistryUnavailableError
from cricket.series import BadSeriesError


@pytest.mark.parametrize(
    "cls",
    [
        CricketValueError,
        BadSeriesError,
        ModelFormatError,
        FormatVersionError,
        NotFittedError,
        InfluxError,
        RegistryError,
        NoChampionError,
        RegistryUnavailableError,
        UnknownSeriesError,
    ],
)
def test_every_fixable_error_is_a_cricket_error_and_prints_as_its_message(cls: type) -> None:
    assert issubclass(cls, CricketError)
    assert user_facing(cls("do this: run that")) == "do this: run that"


def test_built_in_types_kept_where_callers_rely_on_them() -> None:
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    assert issubclass(BadSeriesError, ValueError) and issubclass(ModelFormatError, ValueError)
    assert issubclass(UnknownSeriesError, KeyError) and issubclass(NoChampionError, LookupError)
    assert issubclass(NotFittedError, SklearnNotFitted)
    with pytest.raises(SklearnNotFitted, match="call fit"):
        WaveformDetector().score(np.zeros(10))


def test_a_bugs_exceptions_keep_their_traceback() -> None:
    assert user_facing(KeyError("host")) is None
    assert user_facing(ValueError("could not broadcast")) is None
    assert user_facing(TypeError("unsupported operand")) is None
    # Raised while handling a fixable error is still a bug; raised *from* one is a wrapper.
    try:
        try:
            raise BadSeriesError("bad data")
        except BadSeriesError:
            raise KeyError("oops") from None
    except KeyError as exc:
        assert user_facing(exc) is None
    wrapper = RuntimeError("task failed")
    wrapper.__cause__ = InfluxError("InfluxDB at http://x is down: start it")
    assert user_facing(wrapper) == "InfluxDB at http://x is down: start it"


def test_pydantic_validation_is_the_users_to_fix() -> None:
    from pydantic import ValidationError

    from cricket.config import DetectorSpec

    with pytest.raises(ValidationError) as info:
        DetectorSpec(segment_len=7)
    assert "segment_len" in user_facing(info.value)
