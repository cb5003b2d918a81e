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
"""
