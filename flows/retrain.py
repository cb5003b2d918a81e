"""Nightly retrain: learn each series' normal shapes and register a new model version.

The story: find the series -> for each batch, extract the training window and the
held-out tail, prepare and fit -> fit the fleet library -> evaluate the new model and
the champion on the same held-out tail -> log to MLflow, register, promote if not worse.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timedelta

from prefect import flow, get_run_logger

from cricket.config import DetectorSpec, SeriesSelector, Settings
from cricket.errors import CricketValueError
from cricket.model import ModelBundle
from cricket.plots import training_pictures
from cricket.series import prepare
from cricket.training import overall_metrics, split_holdout
from cricket.windows import batched, floor_time, utc
from flows.runtime import batch_size_for, in_flight_limit, pipelined, scheduled_time, task_runner
from tasks.extract import discover_series
from tasks.registry import evaluate_and_promote, log_and_register
from tasks.train import TrainBatch, fit_fleet, train_batch

#: the fleet library is fitted on at most this many points in all
FLEET_POINTS = 200_000


@flow(name="nightly-retrain", log_prints=True, task_runner=task_runner())
def nightly_retrain(
    selector: SeriesSelector = SeriesSelector(),
    spec: DetectorSpec = DetectorSpec(),
    train_window: timedelta = timedelta(days=7),
    holdout: timedelta = timedelta(hours=24),
    end: datetime | None = None,
    min_history_points: int = 1000,
) -> dict:
    """Train one shape library per series over ``train_window`` ending at ``end`` (default:
    the run's scheduled time, floored to the hour), keep the last ``holdout`` back for
    thresholds and evaluation, and register the result as a new model version."""
    log = get_run_logger()
    settings = Settings()
    t_start = time.perf_counter()
    end = utc(end) if end is not None else floor_time(scheduled_time(), timedelta(hours=1))
    if holdout >= train_window:
        raise CricketValueError(
            f"holdout ({holdout}) must be shorter than train_window ({train_window}): "
            "the model needs history before the held-out tail"
        )
    train_start, holdout_start = end - train_window, end - holdout

    keys = discover_series(settings, selector)
    if not keys:
        raise CricketValueError(
            f"the selector matched no series (measurement {selector.measurement!r}, "
            f"field {selector.field!r}, tags {selector.tags}) in database "
            f"{settings.influx_database!r}: check the selector or write data first "
            "(cricket synth --write)"
        )
    batches = list(batched(keys, batch_size_for(settings, len(keys))))
    fleet_cap = max(FLEET_POINTS // len(batches), 1)
    by_index: dict[int, TrainBatch] = {}
    for index, _batch, fut in pipelined(
        lambda batch: train_batch.submit(
            settings, selector, spec, batch, train_start, holdout_start, end,
            min_history_points, fleet_cap,
        ),
        batches,
        in_flight_limit(settings),
    ):
        by_index[index] = fut.result()
    results = [by_index[i] for i in sorted(by_index)]  # batch order: same fleet sample
    t_fleet = time.perf_counter()
    trained = [t for r in results for t in r.trained]
    holdouts = {k: v for r in results for k, v in r.holdouts.items()}
    fleet = fit_fleet([r.fleet_sample for r in results], spec)

    detectors = {t.key: t.detector for t in trained if t.detector is not None}
    skipped = {t.key: t.reason for t in trained if t.detector is None}
    if not detectors and fleet is None:
        raise CricketValueError(
            f"no series had enough data to train on between {train_start:%Y-%m-%d %H:%M} and "
            f"{holdout_start:%Y-%m-%d %H:%M} UTC (need {min_history_points} points): "
            "write more history or lower min_history_points"
        )
    bundle = ModelBundle(
        detectors=detectors,
        fleet=fleet,
        spec=spec,
        selector=selector,
        trained_from=train_start,
        trained_to=end,
        extra={"skipped": skipped, "holdout_from": holdout_start.isoformat()},
    )
    per_series = {t.key: t.metrics for t in trained}
    timings = {
        "extract": sum(r.seconds.get("extract", 0.0) for r in results),
        "fit": sum(r.seconds.get("fit", 0.0) for r in results),
        "fit_fleet": time.perf_counter() - t_fleet,
    }
    t_register = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cricket-pictures-") as pictures_dir:
        pictures = training_pictures(detectors, fleet, holdouts, spec, pictures_dir)
        version = log_and_register(
            settings,
            bundle,
            artifacts=pictures,
            holdouts=holdouts,
            per_series_metrics=per_series,
            metrics=overall_metrics(per_series),
            params={
                "selector": selector.model_dump(mode="json"),
                "spec": spec.model_dump(mode="json"),
                "train_window": str(train_window),
                "holdout": str(holdout),
                "train_from": train_start.isoformat(),
                "train_to": end.isoformat(),
                "min_history_points": min_history_points,
            },
        )
    timings["register"] = time.perf_counter() - t_register
    t_evaluate = time.perf_counter()
    # The first half of each held-out tail calibrated the thresholds; the second half is
    # scored by both the new version and the champion.
    evaluation = {k: split_holdout(prepare(v, spec))[1] for k, v in holdouts.items()}
    decision = evaluate_and_promote(settings, bundle, version, evaluation)
    timings["evaluate"] = time.perf_counter() - t_evaluate
    seconds = time.perf_counter() - t_start
    summary = {
        "model_version": version,
        "series": len(keys),
        "series_models": len(detectors),
        "fleet_served": sorted(skipped),
        "promoted": bool(decision["promote"]),
        "decision": decision["reason"],
        "train_from": train_start.isoformat(),
        "train_to": end.isoformat(),
        "seconds": round(seconds, 2),
        "batches": len(batches),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    log.info(
        "registered version %s of %s (%d series, %d on the fleet library): %s",
        version, settings.model_name, len(keys), len(skipped), decision["reason"],
    )
    return summary

