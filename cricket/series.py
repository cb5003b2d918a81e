"""Series: what names one (SeriesKey), and how its values are prepared: validate,
regularise, fill short gaps, split at long gaps, scale robustly.

The shape library works on clean, contiguous float arrays. Real metrics have
non-numeric junk, infinities, duplicate or unordered timestamps and gaps; this module
turns them into what the library needs.

Policies (documented, tested):
- non-numeric values (strings that are not numbers, objects) -> :class:`BadSeriesError`
  naming the first offending timestamp; ``None`` counts as missing (NaN).
- ``+inf`` / ``-inf`` -> NaN (treated as missing steps) with a warning, because a
  counter overflow or a division by zero upstream should not stop a nightly run;
  pass ``inf="raise"`` to :func:`validate` to refuse them instead.
- duplicate timestamps -> averaged (mean) with a warning.
- unordered timestamps (including a clock that jumped backwards) -> sorted.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd

from cricket.config import DetectorSpec
from cricket.errors import CricketValueError


@dataclass(frozen=True, order=True)
class SeriesKey:
    measurement: str
    field: str
    tags: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # sorted (key, value)

    @classmethod
    def make(cls, measurement: str, field: str, tags: dict[str, str] | None = None) -> SeriesKey:
        return cls(measurement, field, tuple(sorted((tags or {}).items())))

    @property
    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)

    def __str__(self) -> str:
        """``measurement.field{k=v,...}``. Unambiguous: every character that delimits a
        part (``{`` in the measurement; ``.`` and ``{`` in the field; ``,`` ``=`` ``{``
        ``}`` in tag keys and values) and ``%`` itself are percent-encoded (``,`` is
        ``%2C``), so two different keys never render to the same text and :meth:`parse`
        inverts it exactly. No backslash is added, so the text is also a tag value that
        line protocol can carry (the ``series`` tag of results). Names without those
        characters render as before (``waveform.value{host=a}``)."""
        inner = ",".join(f"{_esc(k, _TAG_SPECIAL)}={_esc(v, _TAG_SPECIAL)}" for k, v in self.tags)
        head = f"{_esc(self.measurement, _MEAS_SPECIAL)}.{_esc(self.field, _FIELD_SPECIAL)}"
        return f"{head}{{{inner}}}"

    @classmethod
    def parse(cls, text: str) -> SeriesKey:
        """Inverse of ``str(key)``: ``SeriesKey.parse(str(k)) == k`` for every key."""
        head, brace, body = text.partition("{")
        if not brace or not body.endswith("}") or "." not in head:
            raise CricketValueError(f"{text!r} is not a series key such as waveform.value{{host=a}}")
        measurement, _, fld = head.rpartition(".")
        tags: dict[str, str] = {}
        for part in body[:-1].split(",") if body[:-1] else []:
            k, eq, v = part.partition("=")
            if not eq:
                raise CricketValueError(f"{text!r} is not a series key: tag {part!r} has no '='")
            tags[_unesc(k)] = _unesc(v)
        return cls.make(_unesc(measurement), _unesc(fld), tags)


_MEAS_SPECIAL = "%{"
_FIELD_SPECIAL = "%.{"
_TAG_SPECIAL = "%,={}"
_PERCENT = re.compile(r"%([0-9A-F]{2})")


def _esc(text: str, special: str) -> str:
    if not any(c in text for c in special):
        return text
    return "".join(f"%{ord(c):02X}" if c in special else c for c in text)


def _unesc(text: str) -> str:
    return _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), text) if "%" in text else text


class BadSeriesError(CricketValueError):
    """The data cannot be used as it is. The message says what is wrong and what to do."""


def validate(series: pd.Series, inf: Literal["nan", "raise"] = "nan") -> pd.Series:
    """Return a clean float64 copy of ``series``: numeric, sorted, unique timestamps.

    Raises :class:`BadSeriesError` for non-numeric values (and for infinities when
    ``inf="raise"``). The caller's series is never modified.
    """
    if not isinstance(series, pd.Series):
        raise BadSeriesError(
            f"expected a pandas Series indexed by time (got {type(series).__name__}): "
            "wrap the values with pd.Series(values, index=timestamps)"
        )
    s = series.copy()
    if s.dtype == bool:
        raise BadSeriesError(
            "the series holds booleans, not measurements: convert it with .astype(float) "
            "if 0/1 is meant"
        )
    if not pd.api.types.is_numeric_dtype(s.dtype):
        converted = pd.to_numeric(s, errors="coerce")
        bad = converted.isna() & s.notna()
        if bad.any():
            where = s.index[bad.to_numpy()][0]
            raise BadSeriesError(
                f"non-numeric value {s[bad].iloc[0]!r} at {where} "
                f"({int(bad.sum())} such value(s)): clean the field or select a numeric one"
            )
        s = converted
    s = s.astype(np.float64)
    infinite = np.isinf(s.to_numpy())
    if infinite.any():
        if inf == "raise":
            where = s.index[infinite][0]
            raise BadSeriesError(
                f"infinite value at {where} ({int(infinite.sum())} in all): "
                "fix the source or validate with inf='nan' to treat them as missing"
            )
        warnings.warn(
            f"{int(infinite.sum())} infinite value(s) treated as missing (NaN)",
            stacklevel=2,
        )
        s[infinite] = np.nan
    if not s.index.is_monotonic_increasing:
        s = s.sort_index(kind="mergesort")
    if s.index.has_duplicates:
        n_dup = int(s.index.duplicated().sum())
        warnings.warn(f"{n_dup} duplicate timestamp(s) averaged into one value each", stacklevel=2)
        s = s.groupby(level=0, sort=True).mean()
    return s


def regularize(series: pd.Series, every: str | timedelta | pd.Timedelta) -> pd.Series:
    """Resample a validated series onto a regular grid of step ``every`` (mean per
    step); steps with no data are NaN."""
    if not isinstance(series.index, pd.DatetimeIndex):
        raise BadSeriesError(
            f"regularize needs a DatetimeIndex (got {type(series.index).__name__}): "
            "index the series by timestamps"
        )
    step = pd.Timedelta(every)
    if step <= pd.Timedelta(0):
        raise CricketValueError(f"every must be a positive duration (got {every!r})")
    s = validate(series)
    return s.resample(step).mean()


def _nan_runs(isnan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and stop (exclusive) of each run of True."""
    d = np.diff(np.concatenate(([0], isnan.astype(np.int8), [0])))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def fill_short_gaps(values: np.ndarray | pd.Series, max_gap: int) -> np.ndarray:
    """Linearly interpolate each run of at most ``max_gap`` NaNs that has data on both
    sides. Longer runs and runs at the ends stay NaN. Returns a new float64 array."""
    x = np.array(values, dtype=np.float64)  # copy
    if x.ndim != 1:
        raise BadSeriesError(f"values must be 1-D (got shape {x.shape})")
    isnan = np.isnan(x)
    if max_gap <= 0 or not isnan.any():
        return x
    starts, stops = _nan_runs(isnan)
    lengths = stops - starts
    keep = (lengths <= max_gap) & (starts > 0) & (stops < len(x))
    if not keep.any():
        return x
    # mark points of short interior runs (vectorised via a +1/-1 difference array)
    marks = np.zeros(len(x) + 1, dtype=np.int64)
    np.add.at(marks, starts[keep], 1)
    np.add.at(marks, stops[keep], -1)
    fill = np.cumsum(marks[:-1]) > 0
    good = ~isnan
    idx = np.arange(len(x))
    x[fill] = np.interp(idx[fill], idx[good], x[good])
    return x


def split_at_gaps(values: np.ndarray | pd.Series, min_len: int) -> list[tuple[int, np.ndarray]]:
    """Contiguous non-NaN pieces as ``(start offset, copy of the piece)``, dropping
    pieces shorter than ``min_len``."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise BadSeriesError(f"values must be 1-D (got shape {x.shape})")
    starts, stops = _nan_runs(~np.isnan(x))
    return [(int(a), x[a:b].copy()) for a, b in zip(starts, stops, strict=True) if b - a >= min_len]


def prepare(series: pd.Series, spec: DetectorSpec) -> pd.Series:
    """Validate a regular series and fill its short gaps; long gaps stay NaN (the detector
    splits there, so no segment straddles them)."""
    s = validate(series)
    values = fill_short_gaps(s.to_numpy(dtype=float), spec.short_gap)
    return pd.Series(values, index=s.index, name=s.name)


def finite_count(values: np.ndarray | pd.Series) -> int:
    return int(np.isfinite(np.asarray(values, dtype=float)).sum())


class RobustScaler:
    """Scale by median and interquartile range, ignoring NaN.

    When the IQR is 0 (a mostly flat series) the scale falls back to the standard
    deviation, and to 1 when that is 0 too (or there is no data).
    """

    def __init__(self) -> None:
        self.center_: float | None = None
        self.scale_: float | None = None

    def fit(self, values: np.ndarray | pd.Series) -> RobustScaler:
        x = np.asarray(values, dtype=np.float64)
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            self.center_, self.scale_ = 0.0, 1.0
            return self
        q1, med, q3 = np.percentile(finite, [25, 50, 75])
        scale = float(q3 - q1)
        if not scale > 0:
            scale = float(np.std(finite))
        if not scale > 0:
            scale = 1.0
        self.center_, self.scale_ = float(med), scale
        return self

    def _check(self) -> None:
        if self.center_ is None or self.scale_ is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this RobustScaler is not fitted yet: call fit(values) first")

    def transform(self, values: np.ndarray | pd.Series) -> np.ndarray:
        self._check()
        return (np.asarray(values, dtype=np.float64) - self.center_) / self.scale_

    def inverse_transform(self, values: np.ndarray | pd.Series) -> np.ndarray:
        self._check()
        return np.asarray(values, dtype=np.float64) * self.scale_ + self.center_

    def fit_transform(self, values: np.ndarray | pd.Series) -> np.ndarray:
        return self.fit(values).transform(values)

    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        self._check()
        return {"kind": "RobustScaler", "center": self.center_, "scale": self.scale_}, {}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray] | None = None) -> RobustScaler:
        if meta.get("kind", "RobustScaler") != "RobustScaler":
            raise CricketValueError(f"state is for a {meta.get('kind')!r}, not a RobustScaler")
        obj = cls()
        obj.center_, obj.scale_ = float(meta["center"]), float(meta["scale"])
        return obj


def dominant_period(values: np.ndarray, max_period: int, min_period: int = 8) -> int | None:
    """The series' dominant period in samples (even), from the autocorrelation's highest
    peak between ``min_period`` and ``max_period`` lags; None when nothing repeats
    (peak autocorrelation below 0.3). NaN are read as the mean."""
    x = np.asarray(values, dtype=np.float64)
    x = np.where(np.isnan(x), np.nanmean(x) if np.isfinite(x).any() else 0.0, x)
    x = x - x.mean()
    n = len(x)
    max_lag = min(int(max_period), n // 3)
    if max_lag <= min_period or not np.any(x):
        return None
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[: max_lag + 2]
    acf = acf / acf[0]
    lags = np.arange(min_period, max_lag + 1)
    a = acf[lags]
    peaks = (a > acf[lags - 1]) & (a >= acf[lags + 1])
    if not peaks.any():
        return None
    best = lags[peaks][np.argmax(a[peaks])]
    if acf[best] < 0.3:
        return None
    return int(best + (best % 2))
