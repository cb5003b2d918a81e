"""The one contract every detector follows (PyOD's ``BaseDetector``, scikit-learn's
estimator conventions), and the input checks they share.

    det = Detector(**params)          # __init__ stores parameters only
    det.fit(X) -> det                 # learned attributes end in "_"
    det.decision_function(X)          # the score: higher is more anomalous
    det.predict(X)                    # 1 where the score passes threshold_, else 0
    det.threshold_
    det.get_state() -> (meta, arrays) # JSON-safe dict with kind + format_version, numeric arrays
    Detector.from_state(meta, arrays) # exact inverse
    det.save(path) / Detector.load(path)   # one .npz (cricket.persistence), never pickles

Subclasses set ``kind``, ``format_version`` and ``_fitted_attr`` (the attribute that
exists once fitted) and implement ``fit``, ``decision_function``, ``_get_state`` and
``_from_state``.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from cricket.errors import CricketError
from cricket.persistence import check_state, load_state, save_state
from cricket.series import BadSeriesError

# scikit-learn is imported only where it is used (k-means in fit, the NotFittedError
# class below): importing it costs ~1 s (scipy.stats), which every flow run, served run
# and Dask/process worker would pay although scoring never fits.


@functools.cache
def _not_fitted_error() -> type:
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    class NotFittedError(CricketError, SklearnNotFittedError):
        """A detector used before ``fit`` (or ``load``). Also scikit-learn's NotFittedError."""

    NotFittedError.__module__ = __name__
    NotFittedError.__qualname__ = "NotFittedError"
    return NotFittedError


def __getattr__(name: str) -> Any:
    # ``cricket.base.NotFittedError`` is made on first use (PEP 562), so that importing
    # the detectors does not import scikit-learn; it is one class, a subclass of both
    # CricketError and sklearn.exceptions.NotFittedError.
    if name == "NotFittedError":
        return _not_fitted_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class EstimatorParams:
    """scikit-learn's estimator parameter protocol (``get_params``, ``set_params``, a
    repr of the parameters that differ from their defaults), so that
    ``sklearn.base.clone`` and grid searches work, without importing scikit-learn.
    Parameters are the keyword arguments of ``__init__``, stored under the same names."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters.values()
        return sorted(
            p.name
            for p in params
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> Self:
        valid = self._get_param_names()
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}: "
                    f"valid parameters are {valid}"
                )
            if sub:
                getattr(self, name).set_params(**{sub: value})
            else:
                setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        changed = []
        for name in self._get_param_names():
            value = getattr(self, name, None)
            default = defaults[name].default
            try:
                same = bool(value == default)
            except Exception:  # arrays and the like compare elementwise
                same = False
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"


class BaseDetector(EstimatorParams):
    """Shared parts of every detector: fitted check, state header and format check,
    ``predict`` from ``decision_function`` and ``threshold_``, save / load."""

    kind: ClassVar[str]
    format_version: ClassVar[int] = 1
    _fitted_attr: ClassVar[str]
    _fit_args: ClassVar[str] = "values"

    def fit(self, X: Any, y: None = None) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    def decision_function(self, X: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, X: Any) -> np.ndarray:
        """1 where the score is above ``threshold_``, else 0 (NaN scores are 0)."""
        scores = self.decision_function(X)
        with np.errstate(invalid="ignore"):
            return (scores > self.threshold_).astype(np.int8)

    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attr):
            raise _not_fitted_error()(
                f"this {self.kind} is not fitted yet: call fit({self._fit_args}) first, or "
                f"load a saved one with {self.kind}.load(path)"
            )

    # ------------------------------------------------------------------ state
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-safe parameters and fitted scalars (with ``kind`` and
        ``format_version``), and the arrays: an exact round trip through
        :meth:`from_state`."""
        self._check_fitted()
        meta, arrays = self._get_state()
        return {"format_version": self.format_version, "kind": self.kind, **meta}, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        """Inverse of :meth:`get_state`; refuses another kind or format version."""
        check_state(meta, cls.kind, cls.format_version)
        return cls._from_state(meta, arrays)

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:  # pragma: no cover
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` file (arrays + JSON parameters). Returns the path written."""
        meta, arrays = self.get_state()
        return save_state(path, meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a file written by :meth:`save` (never unpickles)."""
        return cls.from_state(*load_state(path))


# ---------------------------------------------------------------------- input checks
def as_clean_values(values: Any, min_len: int = 1, what: str = "values") -> np.ndarray:
    """``values`` as a 1-D float64 array, or a :class:`BadSeriesError` saying what is
    wrong (non-numeric, not 1-D, NaN/inf, shorter than ``min_len``) and what to do."""
    if isinstance(values, pd.Series | pd.Index):
        values = values.to_numpy()
    arr = np.asarray(values)
    if arr.dtype == bool:
        raise BadSeriesError(
            f"{what} are booleans, not measurements: convert with .astype(float) if 0/1 is meant"
        )
    if arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise BadSeriesError(
                f"{what} must be numeric (got dtype {arr.dtype}): convert them with "
                "pd.to_numeric or clean the series with cricket.series.validate"
            ) from exc
    if arr.ndim != 1:
        raise BadSeriesError(f"{what} must be a 1-D series (got shape {arr.shape})")
    arr = arr.astype(np.float64, copy=False)
    # One pass without a temporary: the sum is finite when every value is (it can also
    # overflow to inf for huge finite values; the exact check below then finds nothing).
    bad = None if np.isfinite(np.add.reduce(arr)) else ~np.isfinite(arr)
    if bad is not None and bad.any():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(bad.sum()) - n_nan
        first = int(np.flatnonzero(bad)[0])
        raise BadSeriesError(
            f"{what} contain {n_nan} NaN and {n_inf} infinite value(s) (first at index "
            f"{first}): the shape library needs clean contiguous data; fill or split gaps "
            "first with cricket.series (fill_short_gaps, split_at_gaps)"
        )
    if len(arr) < min_len:
        raise BadSeriesError(
            f"{what} hold {len(arr)} point(s), shorter than one segment ({min_len}): "
            "give a longer series or use a shorter segment_len"
        )
    return arr


def as_values_with_gaps(values: Any, what: str = "values") -> np.ndarray:
    """``values`` as a new 1-D float64 array where NaN marks a missing step (infinities
    become NaN), or a :class:`BadSeriesError`."""
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    try:
        x = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadSeriesError(
            f"{what} must be numbers (got {np.asarray(values).dtype}): convert them first"
        ) from exc
    if x.ndim != 1:
        raise BadSeriesError(f"{what} must be 1-D (got shape {x.shape})")
    x[np.isinf(x)] = np.nan
    return x


def as_matrix(X: Any, n_features: int | None = None) -> np.ndarray:
    """``X`` as a 2-D float64 array of finite values (rows are items), or a
    :class:`BadSeriesError`; ``n_features`` checks the column count."""
    arr = np.asarray(X)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise BadSeriesError(
                f"X must be numeric (got dtype {arr.dtype}): convert the features to numbers"
            ) from exc
    if arr.ndim != 2:
        raise BadSeriesError(
            f"X must be 2-D, one row per item and one column per feature (got shape "
            f"{arr.shape}): reshape with X.reshape(-1, 1) for a single feature"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise BadSeriesError("X contains NaN or inf: drop or impute those rows first")
    if n_features is not None and arr.shape[1] != n_features:
        raise BadSeriesError(
            f"X has {arr.shape[1]} feature(s) but the detector was fitted on {n_features}"
        )
    return arr
