"""Prepare: validation policies, regular grid, gaps, robust scaling."""

import warnings

import numpy as np
import pandas as pd
import pytest

from cricket.series import (
    BadSeriesError,
    RobustScaler,
    fill_short_gaps,
    regularize,
    split_at_gaps,
    validate,
)


def idx(*seconds: int) -> pd.DatetimeIndex:
    return pd.to_datetime(list(seconds), unit="s", utc=True)


def test_non_numeric_values_are_named():
    s = pd.Series(["1.0", "2", "oops", None], index=idx(0, 10, 20, 30))
    with pytest.raises(BadSeriesError, match="non-numeric value 'oops'.*numeric one"):
        validate(s)
    with pytest.raises(BadSeriesError, match="booleans"):
        validate(pd.Series([True, False], index=idx(0, 1)))
    with pytest.raises(BadSeriesError, match="pandas Series"):
        validate(np.ones(3))


def test_numeric_strings_and_none_are_read():
    out = validate(pd.Series(["1.5", None, "3"], index=idx(0, 10, 20)))
    assert out.dtype == np.float64 and np.isnan(out.iloc[1]) and out.iloc[2] == 3.0


def test_inf_becomes_missing_or_raises():
    s = pd.Series([1.0, np.inf, -np.inf, 2.0], index=idx(0, 1, 2, 3))
    with pytest.warns(UserWarning, match="2 infinite"):
        out = validate(s)
    assert out.isna().tolist() == [False, True, True, False]
    assert np.isinf(s.iloc[1])  # the caller's series is untouched
    with pytest.raises(BadSeriesError, match="infinite value"):
        validate(s, inf="raise")


def test_duplicates_are_averaged_and_disorder_sorted():
    s = pd.Series([3.0, 1.0, 2.0, 4.0], index=idx(20, 0, 10, 10))  # clock went backwards
    with pytest.warns(UserWarning, match="1 duplicate"):
        out = validate(s)
    assert out.index.is_monotonic_increasing and out.index.is_unique
    assert out.tolist() == [1.0, 3.0, 3.0]


def test_regularize_puts_missing_steps_as_nan():
    s = pd.Series([1.0, 2.0, 4.0, 5.0], index=idx(0, 10, 30, 32))
    out = regularize(s, "10s")
    assert len(out) == 4 and out.index.freq == pd.Timedelta("10s")
    assert out.iloc[:2].tolist() == [1.0, 2.0] and np.isnan(out.iloc[2]) and out.iloc[3] == 4.5
    with pytest.raises(BadSeriesError, match="DatetimeIndex"):
        regularize(pd.Series([1.0, 2.0]), "10s")


def test_fill_short_gaps_only_interior_and_short():
    x = np.array([np.nan, 1, np.nan, 3, np.nan, np.nan, np.nan, 7, 8, np.nan])
    before = x.copy()
    out = fill_short_gaps(x, max_gap=2)
    np.testing.assert_array_equal(np.isnan(out), [1, 0, 0, 0, 1, 1, 1, 0, 0, 1])
    assert out[2] == 2.0
    out3 = fill_short_gaps(x, max_gap=3)
    np.testing.assert_allclose(out3[4:7], [4, 5, 6])
    np.testing.assert_array_equal(np.isnan(x), np.isnan(before))


def test_split_at_gaps_keeps_offsets_and_drops_short_pieces():
    x = np.r_[np.arange(5.0), np.nan, 9.0, np.nan, np.nan, np.arange(4.0)]
    pieces = split_at_gaps(x, min_len=3)
    assert [(off, p.tolist()) for off, p in pieces] == [
        (0, [0, 1, 2, 3, 4]),
        (9, [0, 1, 2, 3]),
    ]
    assert split_at_gaps(np.full(4, np.nan), 1) == []


def test_robust_scaler_and_its_fallbacks():
    x = np.r_[np.arange(101.0), np.nan]
    sc = RobustScaler().fit(x)
    assert sc.center_ == 50.0 and sc.scale_ == 50.0
    np.testing.assert_allclose(sc.inverse_transform(sc.transform(x[:-1])), x[:-1])
    flat = np.r_[np.zeros(100), 10.0]  # IQR 0 -> std
    assert RobustScaler().fit(flat).scale_ == pytest.approx(np.std(flat))
    assert RobustScaler().fit(np.ones(10)).scale_ == 1.0
    meta, arrays = sc.get_state()
    again = RobustScaler.from_state(meta, arrays)
    assert (again.center_, again.scale_) == (sc.center_, sc.scale_)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="call fit"):
        RobustScaler().transform(x)


def test_validate_is_quiet_on_clean_data():
    s = pd.Series(np.arange(5.0), index=idx(0, 1, 2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = validate(s)
    pd.testing.assert_series_equal(out, s)
