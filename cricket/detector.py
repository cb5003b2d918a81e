"""WaveformDetector: the per-series detector the pipeline and the NAB evaluation use.

It wraps the shape library (``cricket.shapes.ShapeLibrary``) with what real metrics
need: robust scaling kept in the model, gap handling, a held-out threshold and a
calibrated 0-100 score so that one threshold works across series.

CONTRACT (other modules rely on exactly these names):

    det = WaveformDetector(spec: DetectorSpec | None = None)
    det.fit(values: np.ndarray | pd.Series, holdout: np.ndarray | pd.Series | None = None) -> self
        values: 1-D float, regular steps, NaN where a step is missing. When ``holdout``
        is None the last ``spec.holdout_fraction`` of ``values`` is kept back (never
        used for k-means) to calibrate the score and set the threshold.
    det.score(values, context: int = 0) -> ScoreFrame
        values: 1-D float (NaN allowed). The first ``context`` points only give the
        segments their left context; results cover values[context:].
    det.threshold_          float, on the 0-100 score scale (a point is anomalous when
                            score >= threshold_)
    det.n_train_            int, points used for fitting
    det.get_state() -> tuple[dict, dict[str, np.ndarray]]   JSON-safe params + arrays
    WaveformDetector.from_state(meta, arrays) -> WaveformDetector   (exact round trip)

    ScoreFrame: a dataclass of equal-length numpy arrays
        value, reconstruction (original units), error (>= 0, original units),
        score (0-100, NaN where unscorable), anomalous (bool)
        and ``events(min_gap)`` -> pandas DataFrame with columns
        start_idx, end_idx (inclusive), peak, mean   (indices into the arrays)

How the score is made
---------------------
1. Prepare: short gaps (``spec.short_gap`` steps) are interpolated, longer ones split
   the series into pieces; segments never straddle a gap. Values are scaled robustly
   (median / IQR of the training data, kept in the model).
2. Error: for every point, the distance of the windowed segment that *ends* at that
   point to its nearest library shape. It uses only the point and the points before
   it, so scores are causal: the score of a point never changes when later data
   arrives (the hourly pipeline and the NAB evaluation see the same numbers).
3. Calibration: the held-out errors (data k-means never saw) give an error
   distribution per series; an error ``e`` becomes a surprise ``s = -log10 P(E >= e)``
   (empirical below the 90th percentile, an exponential tail fitted to the top 10 %
   above it, so errors beyond anything held out still rank). The 0-100 score is
   ``100 * s / (s + 3)``: a one-in-a-thousand error scores 50 on every series,
   whatever its units or noise, so one threshold fits all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cricket.config import DetectorSpec
from cricket.scoring import events_from_mask
from cricket.segments import window
from cricket.series import RobustScaler, fill_short_gaps, split_at_gaps

FORMAT_VERSION = 2
MIN_BETA = 0.01  # smallest tail scale (robust-scaled units)
SURPRISE_HALF = 3.0  # surprise (-log10 p) that maps to a score of 50
TAIL_FROM = 0.9  # quantile above which the exponential tail is fitted
_N_QUANTILES = 257
GPD = False
MAX_XI = 0.9  # stored quantiles of the held-out errors


def surprise_to_score(s: np.ndarray | float) -> np.ndarray:
    """Map a surprise ``-log10 p`` (>= 0) onto 0-100: ``100 s / (s + 3)``."""
    s = np.maximum(np.asarray(s, dtype=np.float64), 0.0)
    with np.errstate(invalid="ignore"):
        out = 100.0 * s / (s + SURPRISE_HALF)
    # An error beyond anything ever seen has infinite surprise: the top of the scale,
    # not inf/inf = NaN (which would leave the largest anomalies unflagged).
    return np.where(np.isposinf(s), 100.0, out)


def score_to_surprise(score: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`surprise_to_score`."""
    sc = np.asarray(score, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return SURPRISE_HALF * sc / (100.0 - sc)


class TailCalibrator:
    """Turns errors into surprise ``-log10 P(E >= e)`` from a sample of held-out errors.

    Below the ``TAIL_FROM`` quantile the survival function is read from stored
    quantiles; above it an exponential tail (mean excess ``beta``) extrapolates.
    """

    def __init__(self, quantiles: np.ndarray, beta: float, xi: float = 0.0) -> None:
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self.beta = float(beta)
        self.xi = float(xi)

    @classmethod
    def fit(cls, errors: np.ndarray, min_beta: float) -> TailCalibrator:
        e = np.asarray(errors, dtype=np.float64)
        e = e[np.isfinite(e)]
        if e.size == 0:
            raise ValueError("no held-out error to calibrate the score: give more data")
        q = np.quantile(e, np.linspace(0.0, 1.0, _N_QUANTILES))
        u = float(np.quantile(e, TAIL_FROM))
        excess = e[e > u] - u
        if excess.size < 2:
            return cls(q, float(min_beta), 0.0)
        # Generalised Pareto tail, method of moments (xi = 0 is the exponential tail).
        m, v = float(excess.mean()), float(excess.var())
        xi = 0.5 * (1.0 - m * m / v) if v > 0 else 0.0
        xi = min(max(xi, 0.0), MAX_XI) if GPD else 0.0
        beta = m * (1.0 - xi)
        return cls(q, max(beta, float(min_beta)), xi)

    def surprise(self, errors: np.ndarray) -> np.ndarray:
        e = np.asarray(errors, dtype=np.float64)
        probs = np.linspace(0.0, 1.0, _N_QUANTILES)
        u = float(np.interp(TAIL_FROM, probs, self.quantiles))
        # Empirical part: P(E >= e) = 1 - F(e), F interpolated between stored quantiles.
        # np.interp needs increasing x: ties in the quantiles are resolved to the top.
        q = np.maximum.accumulate(self.quantiles)
        cdf = np.interp(e, q, probs, left=0.0, right=1.0)
        surv = np.clip(1.0 - cdf, 1.0 - TAIL_FROM, 1.0)
        z = np.maximum(e - u, 0.0) / self.beta
        if self.xi > 0:
            with np.errstate(invalid="ignore"):
                tail = (1.0 - TAIL_FROM) * (1.0 + self.xi * z) ** (-1.0 / self.xi)
        else:
            tail = (1.0 - TAIL_FROM) * np.exp(-z)
        p = np.where(e > u, tail, surv)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = -np.log10(p)
        return np.where(np.isnan(e), np.nan, out)


@dataclass
class ScoreFrame:
    """Per-point results of :meth:`WaveformDetector.score` (equal-length arrays)."""

    value: np.ndarray
    reconstruction: np.ndarray
    error: np.ndarray
    score: np.ndarray
    anomalous: np.ndarray

    def __len__(self) -> int:
        return len(self.value)

    def events(self, min_gap: int = 0) -> pd.DataFrame:
        """Anomalous intervals: start_idx, end_idx (inclusive), peak, mean score."""
        return events_from_mask(self.anomalous, self.score, min_gap)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "value": self.value,
                "reconstruction": self.reconstruction,
                "error": self.error,
                "score": self.score,
                "anomalous": self.anomalous,
            }
        )


def _as_float_1d(values: Any, what: str) -> np.ndarray:
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    try:
        x = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what} must be numbers (got {np.asarray(values).dtype}): convert them first"
        ) from exc
    if x.ndim != 1:
        raise ValueError(f"{what} must be 1-D (got shape {x.shape})")
    x[np.isinf(x)] = np.nan
    return x


class WaveformDetector:
    """Shape-library anomaly detector for one series with a calibrated 0-100 score."""

    def __init__(self, spec: DetectorSpec | None = None) -> None:
        self.spec = spec or DetectorSpec()

    # ------------------------------------------------------------------ helpers
    @property
    def segment_len(self) -> int:
        return int(self.spec.segment_len)

    def _pieces(self, scaled: np.ndarray) -> list[tuple[int, np.ndarray]]:
        return split_at_gaps(fill_short_gaps(scaled, self.spec.short_gap), self.segment_len)

    def _trailing_error(self, scaled: np.ndarray, k: int = 0) -> np.ndarray:
        """Distance of the windowed segment ending at each point to its nearest shape
        in library ``k`` (scaled units); NaN where no full segment ends (start of a
        piece, gaps)."""
        return self._error_with(self.libraries_[k], scaled)

    def _error_with(self, lib: Any, scaled: np.ndarray) -> np.ndarray:
        n = int(lib.segment_len)
        out = np.full(len(scaled), np.nan)
        w = window(n)
        pieces = split_at_gaps(fill_short_gaps(scaled, self.spec.short_gap), n)
        for start, piece in pieces:
            segs = np.lib.stride_tricks.sliding_window_view(piece, n) * w
            _, dist = lib.nearest(segs)
            out[start + n - 1 : start + len(piece)] = dist
        return out

    def _surprise(self, scaled: np.ndarray) -> np.ndarray:
        """Per-point surprise: the largest over the scales (NaN where no scale scores)."""
        out = None
        for k, cal in enumerate(self.calibrators_):
            s = cal.surprise(self._trailing_error(scaled, k))
            out = s if out is None else np.fmax(out, s)
        return out

    @property
    def library_(self):  # noqa: ANN201
        """The base-scale shape library (``spec.segment_len``)."""
        return self.libraries_[0]

    @property
    def context_len(self) -> int:
        """Points of left context a score needs (longest segment - 1)."""
        self._check_fitted()
        return max(int(lib.segment_len) for lib in self.libraries_) - 1

    def _reconstruct(self, scaled: np.ndarray) -> np.ndarray:
        rec = np.full(len(scaled), np.nan)
        for start, piece in self._pieces(scaled):
            rec[start : start + len(piece)] = self.library_.reconstruct(piece)
        return rec

    # ---------------------------------------------------------------------- fit
    def fit(self, values: Any, holdout: Any = None) -> WaveformDetector:
        """Learn the shapes from ``values`` and calibrate the score on held-out data."""

        x = _as_float_1d(values, "values")
        n = self.segment_len
        if holdout is None:
            cut = int(round(len(x) * (1 - self.spec.holdout_fraction)))
            train, held = x[:cut], x[cut:]
            held_context = x[max(cut - self.spec.max_period, 0) : cut]
        else:
            train = x
            held = _as_float_1d(holdout, "holdout")
            held_context = np.empty(0)
        if np.count_nonzero(~np.isnan(train)) < 2 * n:
            raise ValueError(
                f"{np.count_nonzero(~np.isnan(train))} training points are too few for "
                f"segments of {n}: give at least {2 * n + int(2 * n * self.spec.holdout_fraction)}"
                " points of history"
            )
        self.scaler_ = RobustScaler().fit(train)
        scaled = self.scaler_.transform(train)
        if not self._pieces(scaled):
            raise ValueError(
                f"no gap-free stretch of {n} points in the training data: fill gaps or use a "
                "shorter segment_len"
            )
        spec = self.spec
        scales = [n]
        if spec.period_scale:
            period = dominant_period(scaled, spec.max_period)
            if period is not None and period > n:
                scales.append(period)

        self.libraries_, self.calibrators_ = [], []
        held_scaled = self.scaler_.transform(np.r_[held_context, held])
        for m in scales:
            lib = self._fit_library(m, scaled)
            if lib is None:
                continue
            self.libraries_.append(lib)
            k = len(self.libraries_) - 1
            held_err = self._trailing_error(held_scaled, k)[len(held_context) :]
            if np.count_nonzero(~np.isnan(held_err)) < 8:
                if k > 0:  # a long scale the held-out data cannot calibrate: drop it
                    self.libraries_.pop()
                    continue
                # Too little held-out data: fall back to the training errors (optimistic).
                held_err = self._trailing_error(scaled, k)
            self.calibrators_.append(TailCalibrator.fit(held_err, min_beta=MIN_BETA))
        self.threshold_ = float(surprise_to_score(-math.log10(1.0 - spec.threshold_quantile)))
        self.n_train_ = int(np.count_nonzero(~np.isnan(train)))
        return self

    def _fit_library(self, m: int, scaled: np.ndarray) -> Any:
        """A shape library of segment length ``m`` fitted on ``scaled`` (None: no
        gap-free stretch of ``m`` points)."""
        import warnings

        from cricket.shapes import ShapeLibrary

        spec = self.spec
        pieces = [p for _, p in split_at_gaps(fill_short_gaps(scaled, spec.short_gap), m)]
        if not pieces:
            return None
        lib = ShapeLibrary(
            segment_len=m,
            train_slide=spec.train_slide,
            n_clusters=spec.n_clusters,
            n_init=spec.n_init,
            random_state=spec.random_state,
            algorithm=spec.algorithm,
            holdout_fraction=0.0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fewer distinct segments than clusters is fine
            lib.fit(pieces)
        return lib

    # -------------------------------------------------------------------- score
    def _check_fitted(self) -> None:
        if not hasattr(self, "libraries_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "this WaveformDetector is not fitted yet: call fit(values) first, or load one "
                "with WaveformDetector.from_state(meta, arrays)"
            )

    def score(self, values: Any, context: int = 0) -> ScoreFrame:
        """Score ``values[context:]``; the first ``context`` points are history only."""
        self._check_fitted()
        x = _as_float_1d(values, "values")
        if not 0 <= context <= len(x):
            raise ValueError(f"context must be in [0, {len(x)}] (got {context})")
        scaled = self.scaler_.transform(x)
        surprise = self._surprise(scaled)
        score = surprise_to_score(surprise)
        score[np.isnan(surprise)] = np.nan
        rec = self.scaler_.inverse_transform(self._reconstruct(scaled))
        sl = slice(context, None)
        with np.errstate(invalid="ignore"):
            anomalous = score >= self.threshold_
        return ScoreFrame(
            value=x[sl],
            reconstruction=rec[sl],
            error=np.abs(x - rec)[sl],
            score=score[sl],
            anomalous=anomalous[sl] & ~np.isnan(score[sl]),
        )

    # -------------------------------------------------------------------- state
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-safe parameters and scalars, and the arrays (exact round trip)."""
        self._check_fitted()
        libs, arrays = [], {}
        for k, (lib, cal) in enumerate(zip(self.libraries_, self.calibrators_, strict=True)):
            lib_meta, lib_arrays = lib.get_state()
            libs.append({"library": lib_meta, "beta": cal.beta, "xi": cal.xi})
            arrays.update({f"scale{k}.{name}": v for name, v in lib_arrays.items()})
            arrays[f"scale{k}.quantiles"] = cal.quantiles.copy()
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "WaveformDetector",
            "spec": self.spec.model_dump(mode="json"),
            "scales": libs,
            "scaler": self.scaler_.get_state()[0],
            "threshold": self.threshold_,
            "n_train": self.n_train_,
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> WaveformDetector:
        """Inverse of :meth:`get_state`."""
        from cricket.shapes import ShapeLibrary

        if meta.get("kind") != "WaveformDetector":
            raise ValueError(f"state is for a {meta.get('kind')!r}, not a WaveformDetector")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"detector state has format version {meta.get('format_version')!r}; this "
                f"Cricket reads version {FORMAT_VERSION}: retrain the model"
            )
        det = cls(DetectorSpec(**meta["spec"]))
        det.libraries_, det.calibrators_ = [], []
        for k, sc in enumerate(meta["scales"]):
            prefix = f"scale{k}."
            lib_arrays = {
                name[len(prefix) :]: v
                for name, v in arrays.items()
                if name.startswith(prefix) and name != prefix + "quantiles"
            }
            det.libraries_.append(ShapeLibrary.from_state(sc["library"], lib_arrays))
            det.calibrators_.append(
                TailCalibrator(
                    np.array(arrays[prefix + "quantiles"], dtype=np.float64), sc["beta"], sc["xi"]
                )
            )
        det.scaler_ = RobustScaler.from_state(meta["scaler"])
        det.threshold_ = float(meta["threshold"])
        det.n_train_ = int(meta["n_train"])
        return det


def alert_scores(score: np.ndarray, hold: int | None = None, margin: float = 20.0) -> np.ndarray:
    """Fire once per anomaly: keep a point's score only where it rises above every
    score of the ``hold`` points before it and either no alert was kept in the last
    ``hold`` points or it beats the last kept one by ``margin`` (0-100 units);
    other points get 0 (NaN stays NaN).

    Causal (uses only earlier points) and independent of any threshold: a stretch of
    high scores (a ramp, a long anomaly) raises one alert, or a few when it keeps
    getting much worse, instead of one per point. ``hold`` None or 0 returns the
    scores unchanged.
    """
    s = np.asarray(score, dtype=np.float64)
    if not hold:
        return s.copy()
    hold = int(hold)
    filled = np.where(np.isnan(s), -np.inf, s)
    padded = np.concatenate((np.full(hold, -np.inf), filled))
    prev_max = np.lib.stride_tricks.sliding_window_view(padded[:-1], hold).max(axis=1)
    rising = np.flatnonzero(filled > prev_max)
    out = np.where(np.isnan(s), np.nan, 0.0)
    last_t, last_v = -(10**12), -np.inf
    for t in rising.tolist():
        v = filled[t]
        if t - last_t > hold or v >= last_v + margin:
            out[t] = v
            last_t, last_v = t, v
    return out


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
