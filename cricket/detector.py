"""WaveformDetector: the per-series detector that ships (pipeline, MLflow model, NAB).

It wraps the shape library (:class:`cricket.shapes.ShapeLibrary`) with what real
metrics need: robust scaling kept in the model, gap handling, a held-out calibration
and a 0-100 score so that one threshold works across series. It follows the detector
contract of :mod:`cricket.base` (PyOD-style):

    det = WaveformDetector(spec: DetectorSpec | None = None, per_series_scaling=False)
    det.fit(values, holdout=None) -> det
        values: 1-D float, regular steps, NaN where a step is missing. When ``holdout``
        is None the last ``spec.holdout_fraction`` of ``values`` is kept back (never
        used for k-means) to calibrate the score.
    det.decision_function(values) -> the calibrated 0-100 score (NaN where unscorable)
    det.predict(values) -> 1 where score >= threshold_, else 0
    det.score(values, context=0) -> ScoreFrame   everything scoring produces, for
        values[context:] (the first ``context`` points only give left context)
    det.threshold_  (0-100 score scale), det.n_train_, det.context_len
    det.get_state() / WaveformDetector.from_state(meta, arrays)   exact round trip

Everything a score depends on happens inside :meth:`WaveformDetector.score`, so the
pipeline, the promotion evaluation and the MLflow pyfunc get the same numbers from it.
That includes the scaling of a *fleet* detector (``per_series_scaling=True``): it is
fitted on many series, each scaled by its own median / IQR, and so scales every series
it scores by that series' own median / IQR first (values, reconstruction and error
come back in the series' own units).

How the score is made
---------------------
1. Prepare: short gaps (``spec.short_gap`` steps) are interpolated, longer ones split
   the series into pieces; the shapes are learnt, and calibrated, on segments that lie
   wholly inside a piece. Values are scaled robustly (median / IQR of the training
   data, kept in the model).
2. Error: for every point, the distance of the windowed segment that *ends* at that
   point to its nearest library shape, at each scale (``spec.segment_len`` and, with
   ``spec.period_scale``, the series' dominant period). It uses only the point and the
   points before it, so scores are causal: the score of a point never changes when
   later data arrives (the hourly pipeline and the NAB evaluation see the same numbers).
   A segment that spans a longer gap is matched on its observed samples only, where
   they hold at least half the window's weight (:mod:`cricket.gaps`): points soon after
   a gap, and most points of an irregular series, get a score; missing steps never do.
3. Calibration (:mod:`cricket.calibration`): each scale's held-out errors turn an error
   into a surprise; the score is the most surprising view's, on 0-100. The base scale
   is also calibrated on a sibling library's errors on the start of the history, and an
   error is no rarer than either end of the history says (:mod:`cricket.crossfit`).
4. A third view with a period scale (:mod:`cricket.extent`): the spread of the values
   over the trailing dominant period, whose surprise is high when a window is too quiet
   (lost periodic structure: a missing pulse, a frozen value). It joins the score. A
   fourth, where the held-out noise is steady: the spread of the second differences over
   the trailing short segment, high when a window is too smooth (lost noise: a frozen
   value, a shape without noise).
5. A value view (:func:`cricket.calibration.range_surprise`): a value outside the range of
   everything the model was fitted on (widened by 5 %) is at least as surprising as
   ``log10`` of the number of values fitted on, more the further out; it joins the score
   where the base scale scores. A spike or a jump past anything seen alerts at once.
6. Events (:meth:`ScoreFrame.events`): runs of alerts, each settled to the samples whose
   attributed error (the residual of every segment covering a sample, calibrated like the
   score) reaches the alert level; with an uncapped severity for ranking. The attributed
   error and its calibration are computed only when events (or the model's state) are
   asked for: the causal score alone (NAB) does not pay for them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from cricket.base import BaseDetector, as_values_with_gaps
from cricket.calibration import TailCalibrator, range_surprise, surprise_to_score
from cricket.config import DetectorSpec
from cricket.crossfit import crossfit_calibrator
from cricket.detector_state import detector_from_state, detector_state
from cricket.errors import CricketValueError
from cricket.extent import (
    attributed_error,
    provisional_from,
    quiet_extent,
    roughness,
    spread,
    structure_extent,
)
from cricket.gaps import masked_nearest, pieces, spanning_errors
from cricket.score_frame import ScoreFrame
from cricket.segments import window
from cricket.series import RobustScaler, dominant_period, fill_short_gaps
from cricket.shapes import ShapeLibrary

__all__ = ["NOISE_SEGMENTS", "NOISE_STEADY", "STRUCTURE_PERIODS", "ScoreFrame", "WaveformDetector"]


#: held-out periods the lost-structure view needs (fewer: no view); its tail is then
#: calibrated on the training and held-out windows together (no fitted shape enters it)
STRUCTURE_PERIODS = 10
#: held-out segments the lost-noise view needs (fewer: no view)
NOISE_SEGMENTS = 20
#: the lost-noise view only where the held-out noise is steady: its smoothest windows
#: (0.999 quantile of -log10 spread) at most this far above the median (log10 2: no
#: held-out window more than twice as smooth as the typical one)
NOISE_STEADY = math.log10(2.0)


class WaveformDetector(BaseDetector):
    """Shape-library anomaly detector for one series (or a fleet of series) with a
    calibrated 0-100 score."""

    kind = "WaveformDetector"
    format_version = 3  # 3: attributed-error and structure calibrations (settled events)
    _fitted_attr = "libraries_"

    def __init__(self, spec: DetectorSpec | None = None, per_series_scaling: bool = False) -> None:
        self.spec = spec or DetectorSpec()
        self.per_series_scaling = per_series_scaling

    # ------------------------------------------------------------------ helpers
    @property
    def segment_len(self) -> int:
        return int(self.spec.segment_len)

    @property
    def library_(self) -> ShapeLibrary:
        """The base-scale shape library (``spec.segment_len``)."""
        return self.libraries_[0]

    @property
    def context_len(self) -> int:
        """Points of left context a score needs (longest segment - 1)."""
        self._check_fitted()
        return max(int(lib.segment_len) for lib in self.libraries_) - 1

    def _pieces(self, scaled: np.ndarray, n: int | None = None) -> list[tuple[int, np.ndarray]]:
        return pieces(scaled, self.spec.short_gap, self.segment_len if n is None else n)

    def _scale_pass(
        self, scaled: np.ndarray, k: int, spanning: bool = True
    ) -> tuple[np.ndarray, list[Any]]:
        """Library ``k``'s trailing error, and what :meth:`_attributed` needs to give each
        sample's attributed error later without a second nearest-shape search: per
        gap-free piece, its start, values and the nearest shape of each segment. With
        ``spanning``, segments that span a gap are matched on their observed samples
        (:mod:`cricket.gaps`); the calibration (``fit``) uses whole segments only."""
        lib = self.libraries_[k]
        n = int(lib.segment_len)
        out = np.full(len(scaled), np.nan)
        w = window(n)
        hits = []
        filled = fill_short_gaps(scaled, self.spec.short_gap)
        for start, piece in pieces(filled, 0, n):
            segs = np.lib.stride_tricks.sliding_window_view(piece, n) * w
            idx, dist = lib.nearest(segs)
            out[start + n - 1 : start + len(piece)] = dist
            hits.append((start, piece, idx))
        if spanning:
            at, dist = spanning_errors(filled, lib.centroids_, out)
            out[at] = dist
        return out, hits

    def _attributed(self, k: int, size: int, hits: list[Any]) -> np.ndarray:
        """Each sample's attributed error at scale ``k`` (:func:`cricket.extent.
        attributed_error`) from :meth:`_scale_pass`'s ``hits`` over ``size`` points."""
        lib = self.libraries_[k]
        n = int(lib.segment_len)
        w = window(n)
        attr = np.full(size, np.nan)
        for start, piece, idx in hits:
            segs = np.lib.stride_tricks.sliding_window_view(piece, n) * w
            attr[start : start + len(piece)] = attributed_error(segs, lib.centroids_[idx], w)
        return attr

    @property
    def attr_calibrators_(self) -> list[TailCalibrator]:
        """The attributed-error calibrators (one per scale), fitted on the held-out data
        the first time events or the model's state need them (NAB never does)."""
        cals = getattr(self, "_attr_calibrators", None)
        if cals is None:
            sources = getattr(self, "_attr_sources", None)
            if sources is None:
                raise AttributeError("attr_calibrators_")
            cals = [TailCalibrator.fit(self._attributed(k, size, hits)[off:])
                    for k, (size, hits, off) in enumerate(sources)]
            self._attr_calibrators, self._attr_sources = cals, None
        return cals

    def _views(
        self, scaled: np.ndarray
    ) -> tuple[dict[str, np.ndarray], Callable[[], np.ndarray | None]]:
        """Each view's causal surprise by name, and a function giving the extent mask
        (None for a model saved without the attributed calibration) when called."""
        views: dict[str, np.ndarray] = {}
        passes = []
        for k, cal in enumerate(self.calibrators_):
            err, hits = self._scale_pass(scaled, k)
            views[f"shape {self.libraries_[k].segment_len}"] = cal.surprise(err)
            passes.append(hits)
        m = 0
        if getattr(self, "spread_calibrator_", None) is not None:
            m = self.spread_len_
            s = self.spread_calibrator_.surprise(spread(self._pieces(scaled, m), len(scaled), m))
            views[f"structure {m}"] = s
        bounds = getattr(self, "range_", None)
        if bounds is not None:  # the value itself outside the trained range (one sample),
            # where the base scale scores (so the score stays NaN where no segment ends)
            base = views[f"shape {self.libraries_[0].segment_len}"]
            views["range 1"] = np.where(np.isnan(base), np.nan, range_surprise(scaled, *bounds))
        quiet = None
        if getattr(self, "noise_calibrator_", None) is not None:
            n = self.segment_len
            quiet = self.noise_calibrator_.surprise(
                roughness(self._pieces(scaled, n), len(scaled), n)
            )
            views[f"noise {n}"] = quiet

        def extent() -> np.ndarray | None:
            try:
                cals = self.attr_calibrators_
            except AttributeError:
                return None
            if not cals:
                return None
            level = self.alert_surprise
            n = len(scaled)
            hot = [cals[k].surprise(self._attributed(k, n, hits)) >= level
                   for k, hits in enumerate(passes)]
            if not hot:
                return None
            # the sample-sharp views: the base scale (where settled), the value's range,
            # the lost noise
            fine = hot[0].copy()
            fine[provisional_from(n, int(self.libraries_[0].segment_len)) :] = False
            if "range 1" in views:
                fine |= np.nan_to_num(views["range 1"]) >= level
            if quiet is not None:
                fine |= quiet_extent(np.nan_to_num(quiet) >= level, self.segment_len)
            out = fine | hot[0]
            for k in range(1, len(hot)):
                # a longer scale's last samples are provisional (provisional_from): where
                # a sharp view sees an anomaly there, the long scale may join its parts
                # but not run on past the sharp view's last hot sample; an anomaly only
                # the long scale sees keeps the long scale's (the next window, whose
                # context holds these samples, settles it)
                seg = int(self.libraries_[k].segment_len)
                p = provisional_from(n, seg)
                near = max(p - seg, 0)  # a sharp view's anomaly this close reaches the tail
                sharp = np.flatnonzero(fine[near:])
                if p < n and sharp.size:
                    hot[k][max(p, near + int(sharp[-1]) + 1) :] = False
                out |= hot[k]
            if m:
                out |= structure_extent(np.nan_to_num(views[f"structure {m}"]) >= level, m)
            return out

        return views, extent

    @property
    def alert_surprise(self) -> float:
        """The surprise at the alert threshold: ``-log10(1 - threshold_quantile)``."""
        return -math.log10(1.0 - self.spec.threshold_quantile)

    def _reconstruct(self, scaled: np.ndarray) -> np.ndarray:
        rec = np.full(len(scaled), np.nan)
        for start, piece in self._pieces(scaled):
            rec[start : start + len(piece)] = self.library_.reconstruct(piece)
        return rec

    def _own_scaler(self, x: np.ndarray) -> RobustScaler | None:
        """A fleet detector's scaler for the series ``x`` itself (None otherwise, or
        when ``x`` holds no number)."""
        if not self.per_series_scaling:
            return None
        finite = x[np.isfinite(x)]
        return RobustScaler().fit(finite) if finite.size else None

    def to_model_units(self, values: Any) -> np.ndarray:
        """``values`` in the units the libraries were learned in (the fleet's
        per-series scaling, then the model's scaler)."""
        self._check_fitted()
        x = as_values_with_gaps(values)
        own = self._own_scaler(x)
        return self.scaler_.transform(own.transform(x) if own is not None else x)

    # ---------------------------------------------------------------------- fit
    def fit(self, values: Any, holdout: Any = None) -> WaveformDetector:
        """Learn the shapes from ``values`` and calibrate the score on held-out data.
        A fleet detector (``per_series_scaling``) is fitted on series already scaled
        each by its own median / IQR (see ``cricket.training.fleet_training_values``)."""
        x = as_values_with_gaps(values, "values")
        n = self.segment_len
        if holdout is None:
            cut = int(round(len(x) * (1 - self.spec.holdout_fraction)))
            train, held = x[:cut], x[cut:]
            held_context = x[max(cut - self.spec.max_period, 0) : cut]
        else:
            train = x
            held = as_values_with_gaps(holdout, "holdout")
            held_context = np.empty(0)
        if np.count_nonzero(~np.isnan(train)) < 2 * n:
            raise CricketValueError(
                f"{np.count_nonzero(~np.isnan(train))} training points are too few for "
                f"segments of {n}: give at least {2 * n + int(2 * n * self.spec.holdout_fraction)}"
                " points of history"
            )
        self.scaler_ = RobustScaler().fit(train)
        scaled = self.scaler_.transform(train)
        if not self._pieces(scaled):
            raise CricketValueError(
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
        self._attr_calibrators, self._attr_sources = None, []
        held_scaled = self.scaler_.transform(np.r_[held_context, held])
        for m in scales:
            lib = self._fit_library(m, scaled)
            if lib is None:
                continue
            self.libraries_.append(lib)
            k = len(self.libraries_) - 1
            held_err, hits = self._scale_pass(held_scaled, k, spanning=False)
            held_err = held_err[len(held_context) :]
            source = (len(held_scaled), hits, len(held_context))
            if np.count_nonzero(~np.isnan(held_err)) < 8:
                if k > 0:  # a long scale the held-out data cannot calibrate: drop it
                    self.libraries_.pop()
                    continue
                # Too little held-out data: fall back to the training errors (optimistic).
                held_err, hits = self._scale_pass(scaled, k, spanning=False)
                source = (len(scaled), hits, 0)
                cal = TailCalibrator.fit(held_err)
            elif k == 0 and spec.calibration_crossfit:  # both ends of the history
                history = np.r_[scaled, self.scaler_.transform(held)]
                cal = crossfit_calibrator(held_err, history, len(held), m,
                                          self._fit_library, self._pieces)
            else:
                cal = TailCalibrator.fit(held_err)
            self.calibrators_.append(cal)
            # the attributed calibrator is fitted from these when first needed
            self._attr_sources.append(source)
        # Lost periodic structure: the spread over one dominant period (see cricket.extent).
        self.spread_calibrator_, self.spread_len_ = None, 0
        if len(self.libraries_) > 1:
            m = int(self.libraries_[1].segment_len)
            held_spread = spread(self._pieces(held_scaled, m), len(held_scaled), m)
            held_spread = held_spread[len(held_context) :]
            # a tail needs many independent windows: at least STRUCTURE_PERIODS periods
            if np.count_nonzero(np.isfinite(held_spread)) >= STRUCTURE_PERIODS * m:
                # no fitted shape enters the spread: calibrate on training + held-out
                # windows (~1 independent per period; held-out alone gave a loose tail)
                both = np.r_[spread(self._pieces(scaled, m), len(scaled), m), held_spread]
                self.spread_calibrator_, self.spread_len_ = TailCalibrator.fit(both), m
        # The range of every value fitted on (training and held-out), for the range view.
        seen = self.scaler_.transform(np.r_[train, held])
        seen = seen[np.isfinite(seen)]
        self.range_ = (float(seen.min()), float(seen.max()), int(seen.size))
        # Lost noise: too smooth over one short segment, where the noise is steady.
        self.noise_calibrator_ = None
        rough = roughness(self._pieces(held_scaled, n), len(held_scaled), n)
        rough = rough[len(held_context) :]
        finite = rough[np.isfinite(rough)]
        if finite.size >= NOISE_SEGMENTS * n and (
            np.quantile(finite, 0.999) - np.median(finite) <= NOISE_STEADY
        ):
            self.noise_calibrator_ = TailCalibrator.fit(rough)
        self.threshold_ = float(surprise_to_score(-math.log10(1.0 - spec.threshold_quantile)))
        self.n_train_ = int(np.count_nonzero(~np.isnan(train)))
        return self

    def _fit_library(self, m: int, scaled: np.ndarray) -> ShapeLibrary | None:
        """A shape library of segment length ``m`` fitted on ``scaled`` (None: no
        gap-free stretch of ``m`` points)."""
        spec = self.spec
        pieces = [p for _, p in self._pieces(scaled, m)]
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
    def score(self, values: Any, context: int = 0) -> ScoreFrame:
        """Score ``values[context:]``; the first ``context`` points are history only."""
        self._check_fitted()
        x = as_values_with_gaps(values, "values")
        if not 0 <= context <= len(x):
            raise CricketValueError(f"context must be in [0, {len(x)}] (got {context})")
        own = self._own_scaler(x)
        x_model = own.transform(x) if own is not None else x
        scaled = self.scaler_.transform(x_model)
        views, extent_of = self._views(scaled)
        surprise = None
        for v in views.values():
            surprise = v if surprise is None else np.fmax(surprise, v)
        score = surprise_to_score(surprise)
        score[np.isnan(surprise)] = np.nan
        rec = self.scaler_.inverse_transform(self._reconstruct(scaled))
        error = np.abs(x_model - rec)
        if own is not None:  # back to the series' own units
            rec = own.inverse_transform(rec)
            error = error * own.scale_
        sl = slice(context, None)
        with np.errstate(invalid="ignore"):
            anomalous = score >= self.threshold_
        reach = self.context_len
        # the left context's last longest segment: every sample a long view may still
        # have left provisional at the end of the window before (the structure view's
        # last window start included)
        lead = slice(max(context - reach - 1, 0), context)

        def settle() -> tuple[np.ndarray | None, np.ndarray | None]:
            extent = extent_of()
            if extent is None:
                return None, None
            return extent[sl], extent[lead]

        return ScoreFrame(
            value=x[sl],
            reconstruction=rec[sl],
            error=error[sl],
            score=score[sl],
            anomalous=anomalous[sl] & ~np.isnan(score[sl]),
            lead_anomalous=(anomalous & ~np.isnan(score))[lead],
            surprise=surprise[sl],
            reach=reach,
            scales={name: v[sl] for name, v in views.items()},
            settle=settle,
        )

    def decision_function(self, values: Any) -> np.ndarray:
        """The calibrated 0-100 score per point (higher is more anomalous; NaN where no
        segment ends, e.g. the first points and gaps)."""
        return self.score(values).score

    def predict(self, values: Any) -> np.ndarray:
        """1 where the score is at or above ``threshold_``, else 0."""
        return self.score(values).anomalous.astype(np.int8)

    def nearest_shapes(
        self, values: Any, context: int, events: pd.DataFrame | Mapping[str, Any],
        score: np.ndarray,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each event (indices into ``values[context:]``, as :meth:`ScoreFrame.events`
        or :meth:`ScoreFrame.event_columns` gives): the windowed segment ending at its
        peak ``score`` (the segment the score was computed from; NaN at steps missing
        from it) and the library's nearest normal shape (over a gap, on the observed
        samples, as scored), both in the model's scaled units; two empty arrays for an
        event with no segment there (one pair per event)."""
        starts = np.asarray(events["start_idx"]).tolist()
        if not starts:
            return []
        ends = np.asarray(events["end_idx"]).tolist()
        scaled = fill_short_gaps(self.to_model_units(values), self.spec.short_gap)
        n = self.segment_len
        w = window(n)
        out = []
        for a, b in zip(starts, ends, strict=True):
            a, b = int(a), int(b)
            part = score[a : b + 1]
            peak = a + (int(np.nanargmax(part)) if np.isfinite(part).any() else 0)
            end = context + peak + 1
            seg = scaled[max(end - n, 0) : end]
            seen = np.isfinite(seg)
            if len(seg) < n or not seen[-1]:
                out.append((np.empty(0), np.empty(0)))
                continue
            seg = seg * w
            if seen.all():
                idx, _ = self.library_.nearest(seg[None, :])
            else:
                idx, _ = masked_nearest(np.where(seen, seg, 0.0)[None, :], seen[None, :],
                                        self.library_.centroids_)
            out.append((seg, np.asarray(self.library_.centroids_[int(idx[0])], dtype=float)))
        return out

    # -------------------------------------------------------------------- state
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return detector_state(self)

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> WaveformDetector:
        return detector_from_state(cls, meta, arrays)
