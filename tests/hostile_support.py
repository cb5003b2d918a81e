"""Helpers for the issue-17 tests ("nothing silently wrong"): write clean synthetic
waveforms under keys a test chooses (odd tag values, two measurements...) to the real
influxd, and retrain / score / backfill them through the real flows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd

from cricket.config import DetectorSpec, SeriesSelector, Settings
from cricket.influx.influxql import InfluxQLSink, InfluxQLSource
from cricket.series import SeriesKey

SPEC = DetectorSpec(n_clusters=8, segment_len=16, min_event_gap=8)
END = pd.Timestamp("2026-11-20T00:00:00Z")
HOURS = 6
TRAIN_END = END - pd.Timedelta(hours=2)


def write_clean(settings: Settings, keys: list[SeriesKey], hours: float = HOURS,
                step: str = "10s", end: pd.Timestamp = END, seed: int = 3) -> dict[SeriesKey, pd.Series]:
    """Anomaly-free synthetic waveforms (the demo fleet's shapes), one per key, ending
    at ``end``; written to the source database. Returns what was written."""
    from cricket.synth import make_fleet

    fleet = make_fleet(hosts=len(keys), days=hours / 24, step=step,
                       start=end - pd.Timedelta(hours=hours), seed=seed, anomalies=False)
    out = {}
    with InfluxQLSink(settings) as sink:
        for key, series in zip(keys, fleet.series.values(), strict=False):
            sink.write_series(key, series)
            out[key] = series
    return out


def retrain(selector: SeriesSelector, holdout: timedelta = timedelta(hours=1, minutes=30),
            end: pd.Timestamp = TRAIN_END, **kw: Any) -> dict:
    from cricket.flows.retrain import nightly_retrain

    return nightly_retrain(selector=selector, spec=kw.pop("spec", SPEC),
                           train_window=kw.pop("train_window", timedelta(hours=4)),
                           holdout=holdout, end=end.to_pydatetime(),
                           min_history_points=kw.pop("min_history_points", 200), **kw)


def score(selector: SeriesSelector, at: pd.Timestamp, **kw: Any) -> dict:
    from cricket.flows.score import hourly_score

    return hourly_score(selector=selector, at=at.to_pydatetime(), **kw)


def scores_by_series(settings: Settings, selector: SeriesSelector, start: Any, end: Any,
                     model_version: str | None = None) -> dict[str, pd.DataFrame]:
    with InfluxQLSource(settings) as src:
        rows = src.read_scores(selector, pd.Timestamp(start), pd.Timestamp(end), model_version)
    if rows.empty:
        return {}
    return {str(k): g for k, g in rows.groupby("series")}
