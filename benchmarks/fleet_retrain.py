"""The timed nightly retrain of ``fleet.py``: ``nightly_retrain`` over the retrain fleet
(the last day held out), its wall time at the measured size and extrapolated to 1,000
series, the stages' shares, the peak memory, and which champion it was evaluated against."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

from fleet_setup import END
from instruments import peak_rss_mb, reset_peak, rss_mb, shares


def retrain_champion(settings) -> str | None:  # noqa: ANN001
    """The version holding the retrain model's champion alias before the timed retrain
    (only a kept folder has one), or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        mv = MlflowClient(tracking_uri=settings.tracking_uri).get_model_version_by_alias(
            settings.model_name, "champion")
    except MlflowException:
        return None
    return str(mv.version)


def measure_retrain(result: dict, *, settings: Any, selector: Any, spec: Any, hosts: int,
                    train_days: float, timer: Any, workers: int) -> None:
    """Run the retrain once and put its figures in ``result`` (``retrain_*``). ``settings``
    are the retrain fleet's, already in the environment; ``timer`` times ``prepare``."""
    from cricket.flows.retrain import nightly_retrain

    result["retrain_champion"] = retrain_champion(settings)
    timer.take()
    result["retrain_rss_at_start_mb"] = rss_mb()
    reset_peak()
    t0 = time.perf_counter()
    summary = nightly_retrain(
        selector=selector, spec=spec, train_window=timedelta(days=train_days),
        holdout=timedelta(hours=24), end=END.to_pydatetime(), min_history_points=1000,
    )
    wall = time.perf_counter() - t0
    prep = timer.take()
    t = summary["timings"]
    # fit_fleet, register and evaluate run alone (one task): they hold the whole
    # machine for their wall time, hence x workers in task-seconds.
    stages = {
        "extract": t.get("extract", 0.0),
        "prepare": sum(prep.values()),
        "fit": t.get("fit", 0.0) - prep.get("train-batch", 0.0)
        + t.get("fit_fleet", 0.0) * workers,
        "score": (t.get("evaluate", 0.0) + t.get("evaluate_new", 0.0)) * workers
        + t.get("evaluate_batches", 0.0)  # task-seconds, in the train batches
        - prep.get("evaluate-and-promote", 0.0) - prep.get("evaluate-batch", 0.0),
        "write": t.get("register", 0.0) * workers,
    }
    result["retrain_size"] = {"series": hosts, "days": train_days,
                              "points": hosts * int(train_days * 8640)}
    result["retrain_s"] = round(wall, 1)
    result["retrain_1000_series_s"] = round(wall, 1) if hosts == 1000 else None
    result["retrain_1000_series_s_extrapolated"] = round(wall * 1000 / hosts, 1)
    result["retrain_seconds"] = {k: round(v, 2) for k, v in t.items()}
    result["retrain_shares"] = shares(stages, wall, workers)
    result["retrain_peak_rss_mb"] = peak_rss_mb()
    result["retrain_series_models"] = summary["series_models"]
    print(f"retrain {hosts} x {train_days} d: {wall:.1f} s", file=sys.stderr, flush=True)
