"""Nightly retrain: learn each series' normal shapes and register a new model version.

The story: find the series -> for each batch, extract the training window and the
held-out tail, prepare and fit -> fit the fleet library and assemble the model ->
log to MLflow and register -> evaluate the new model and the champion on the same
held-out tail, and promote the new one if it is not worse.
With a point selector (``points``), the same run also trains the point model (several
fields of one device judged together, :mod:`cricket.flows.points`); the version holds
both and is promoted as a whole.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from cricket.flows.points import point_part
from cricket.flows.runtime import (
    batch_size_for,
    in_flight_limit,
    pipelined,
    release_freed_memory,
    run_name,
    scheduled_time,
    task_runner,
)
from cricket.tasks.alert import read_labels
from cricket.tasks.common import Stopwatch
from cricket.tasks.extract import discover_series
from cricket.tasks.points import check_champion_points, judge_point_part
from cricket.tasks.registry import (
    evaluate_and_promote,
    load_champion,
    log_and_register,
)
from cricket.tasks.score import sub_bundle
from cricket.tasks.train import StreamedRun, fit_fleet, train_batch
from prefect import flow, get_run_logger

from cricket.config import DetectorSpec, SeriesSelector, Settings
from cricket.errors import CricketValueError
from cricket.limits import check_batch, check_series_span
from cricket.model import ModelBundle, ModelFormatError
from cricket.multifield import PointSelector, PointSpec
from cricket.search import blas_held_at_one
from cricket.training import no_series_error
from cricket.windows import TrainingWindow, batched, floor_time

#: the fleet library is fitted on at most this many points in all
FLEET_POINTS = 200_000


@flow(
    name="nightly-retrain",
    flow_run_name=run_name("retrain"),
    log_prints=True,
    task_runner=task_runner(),
)
def nightly_retrain(
    selector: SeriesSelector = SeriesSelector(),
    spec: DetectorSpec = DetectorSpec(),
    train_window: timedelta = timedelta(days=7),
    holdout: timedelta = timedelta(hours=24),
    end: datetime | None = None,
    min_history_points: int = 1000,
    points: PointSelector | None = None,
    point_spec: PointSpec = PointSpec(),
) -> dict:
    """Train one shape library per series over ``train_window`` ending at ``end`` (default:
    the run's scheduled time, floored to the hour), keep the last ``holdout`` back for
    calibration and evaluation, and register the result as a new model version; with
    ``points``, the version also holds a point model per device of those fields."""
    settings = Settings()
    clock = Stopwatch()
    end = end if end is not None else floor_time(scheduled_time(), timedelta(hours=1))
    window = TrainingWindow.ending(end, train_window, holdout)
    need = 4 * spec.segment_len * selector.every  # calibration half: 2 segments at least
    if holdout < need:
        raise CricketValueError(
            f"holdout ({holdout}) is too short: thresholds are calibrated on its first half "
            f"and need at least 2 x segment_len = {2 * spec.segment_len} steps there, so give "
            f"a holdout of at least {need} (at a step of {selector.every})"
        )
    n_steps = check_series_span("the train window", train_window, selector.every)

    keys = discover_series(settings, selector)
    if not keys:
        raise no_series_error(selector, settings.influx_database)
    check_batch("the retrain", n_steps, len(keys), batch_size_for(settings, len(keys)))
    labels = read_labels(settings)  # people's answers: what to learn, what to keep out
    batches = list(batched(keys, batch_size_for(settings, len(keys))))
    fleet_cap = max(FLEET_POINTS // len(batches), 1)
    with tempfile.TemporaryDirectory(prefix="cricket-retrain-") as staging:
        # The champion's bundle, read series by series: each batch gets its part and
        # evaluates it on the batch's held-out tails (the same tails as the new model).
        champion = load_champion(settings, into=Path(staging) / "champion")

        def champion_part(batch: list) -> ModelBundle | None:
            nonlocal champion
            if champion is None:
                return None
            try:
                return sub_bundle(champion[0], batch)
            except ModelFormatError:  # a damaged detector: the promotion step says so
                champion = None
                return None

        # The new bundle is written as batches finish; the flow keeps each series'
        # metrics and evaluation, not its detector or its held-out data.
        run = StreamedRun(Path(staging), spec, selector)
        # BLAS on one thread, held from this thread while batches train side by side
        # (each fit is one core's work; 2-thread BLAS in two workers at once spin-waits)
        with blas_held_at_one():
            for index, _batch, fut in pipelined(
                lambda batch: train_batch.submit(
                    settings, selector, spec, batch, window, min_history_points, fleet_cap,
                    [lab for lab in labels if lab.series in {str(k) for k in batch}],
                    champion_part(batch),
                ),
                batches,
                in_flight_limit(settings),
            ):
                run.add(index, fut.result())  # and lets go of the batch's data
                # the batches before this one are gone: give their pages back, or the
                # worker threads' malloc arenas grow with the fleet (docs/scaling.md)
                release_freed_memory()
        clock.add_from(run.batch_seconds, "extract", "fit", "evaluate_batches")
        clock.lap()

        fleet = fit_fleet(run.fleet_samples(), spec)
        model = run.finish(fleet, window, min_history_points)
        clock.lap("fit_fleet")
        part = point_part(settings, points, point_spec, window, labels) if points else None
        clock.lap("points")
        params = {
            "selector": selector.model_dump(mode="json"),
            "spec": spec.model_dump(mode="json"),
            "train_window": str(train_window),
            "holdout": str(holdout),
            "train_from": window.start.isoformat(),
            "train_to": window.end.isoformat(),
            "min_history_points": min_history_points,
        }
        run_name = f"retrain {selector.measurement}.{selector.field} to {window.end:%Y-%m-%d %H:%M}"
        if part:
            params["points"] = {"selector": points.model_dump(mode="json"),
                                "spec": point_spec.model_dump(mode="json")}
        # the new model's held-out evaluation: the batches' parts, and the series the
        # fleet library serves (it exists only now); logged with the run, and the
        # challenger's side of the promotion
        new_eval = run.new_evaluation(model.bundle)
        clock.lap("evaluate_new")
        version = log_and_register(settings, model, params, run_name=run_name,
                                   points=part.bundle if part else None, evaluation=new_eval,
                                   bundle_dir=run.bundle_dir)
        clock.lap("register")
        stretches = run.stretches
        verdict = (judge_point_part(settings, part.bundle, part.holdout, part.labelled)
                   if part else check_champion_points(settings))
        champion_eval = None
        if champion is not None and champion[1] != version:
            champion_eval = (champion[1], champion[0], run.champion_evaluation())
        decision = evaluate_and_promote(
            settings, model.bundle, version, run.tails, labelled=stretches,
            points=verdict, new_eval=new_eval, champion_eval=champion_eval,
        )
        del champion, champion_eval
        clock.lap("evaluate")

    get_run_logger().info(
        "registered version %s of %s (%d series, %d on the fleet library): %s",
        version, settings.model_name, len(keys), len(model.skipped), decision["reason"],
    )
    return {
        "model_version": version,
        "series": len(keys),
        "series_models": len(model.bundle.detectors),
        "fleet_served": sorted(model.skipped),
        "promoted": bool(decision["promote"]),
        "decision": decision["reason"],
        "warnings": [decision["warning"]] if decision.get("warning") else [],
        "train_from": window.start.isoformat(),
        "train_to": window.end.isoformat(),
        "labels": {
            "normal": sum(st.label.label == "normal" for st in stretches),
            "anomaly": sum(st.label.label == "anomaly" for st in stretches),
            "shapes_learned": run.shapes_learned,
            "check": decision.get("label_check"),
        },
        "points": None if part is None else {
            "devices": len(part.bundle.models), "skipped": part.skipped,
            "labelled_out": part.labelled_out, "normal_learnt": part.learnt_normal,
            "check": decision.get("points"),
        },
        "seconds": clock.total(),
        "batches": len(batches),
        "timings": clock.timings(),
    }

