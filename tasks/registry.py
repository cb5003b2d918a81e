"""Prefect tasks around cricket.registry: log + register, evaluate + promote, load.

MLflow calls retry with backoff (a busy SQLite file or a tracking server blip), but not
when retrying cannot help: no champion, a damaged bundle, an unknown version.
Nothing is cached or persisted: bundles and held-out arrays are never hashed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cricket.tasks.common import CPU_TASK, IO_TASK
from prefect import get_run_logger, task

from cricket.config import Settings
from cricket.errors import is_retryable
from cricket.feedback import LabelledStretch
from cricket.model import ModelBundle, ModelFormatError
from cricket.multifield import PointBundle
from cricket.point_promotion import PointVerdict
from cricket.point_registry import PART, save_part
from cricket.promotion import DEFAULT_TOLERANCE, HIGH_FALSE_ALARMS, EvalSummary, evaluate_bundle
from cricket.registry import (
    CHAMPION,
    Registry,
    RegistryError,
    mlflow_store,
)
from cricket.search import one_blas_thread
from cricket.training import TrainedModel, overall_metrics

#: errors that a retry cannot fix: fail at once with the message that says what to do
PERMANENT = (RegistryError, ModelFormatError, ValueError, TypeError, KeyError)


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry I/O failures, not permanent ones."""
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception as exc:  # noqa: BLE001 - the rest says whether it can heal
        return is_retryable(exc)
    return True


_MLFLOW_TASK = {**IO_TASK, "retry_condition_fn": retry_unless_permanent}


@task(name="log-and-register", timeout_seconds=600, **_MLFLOW_TASK)
def log_and_register(
    settings: Settings,
    model: TrainedModel,
    params: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    points: PointBundle | None = None,
    evaluation: EvalSummary | None = None,
    bundle_dir: str | Path | None = None,
) -> str:
    """Log the retrain as an MLflow run (parameters, per-series and overall metrics, the
    bundle, and the pictures a reviewer looks at) and register it; returns the new
    version. ``points``: the point model, held by the same version (``artifacts/points``).
    ``evaluation``: the model's held-out evaluation (the retrain flow's
    batches), else it is made here. ``bundle_dir``: where the bundle is saved already
    (the retrain writes it batch by batch; ``model.bundle`` is opened from it)."""
    from cricket.plots import training_pictures  # matplotlib: only the retrain draws

    registry = Registry(settings)
    bundle = model.bundle
    with tempfile.TemporaryDirectory(prefix="cricket-pictures-") as pictures, mlflow_store(settings):
        parts = {PART: save_part(points, Path(pictures) / PART)} if points is not None else None
        run_id = registry.log_training_run(
            bundle,
            params=params,
            metrics=overall_metrics(model.per_series),
            per_series_metrics=model.per_series,
            artifacts=training_pictures(
                bundle.detectors, bundle.fleet, model.holdouts, bundle.spec, pictures
            ),
            held_out=model.holdouts,
            run_name=run_name,
            parts=parts,
            evaluation=evaluation,
            bundle_dir=bundle_dir,
        )
        version = registry.register(run_id)
    get_run_logger().info(
        "logged run %s and registered version %s of %s", run_id, version, registry.name
    )
    return version


@task(name="evaluate-and-promote", timeout_seconds=600, **_MLFLOW_TASK)
def evaluate_and_promote(
    settings: Settings,
    bundle: ModelBundle | None,
    version: str,
    holdouts: Mapping[str, Any],
    tolerance: float = DEFAULT_TOLERANCE,
    labelled: Sequence[LabelledStretch] = (),
    points: PointVerdict | None = None,
    new_eval: EvalSummary | None = None,
    champion_eval: tuple[str, ModelBundle, EvalSummary] | None = None,
) -> dict[str, Any]:
    """Challenger vs champion on the same held-out tail; move ``champion`` if not worse,
    and only if it gets the ``labelled`` stretches (people's answers) right and its point
    part (``points``, the verdict of :func:`cricket.tasks.points.judge_point_part`) is
    not worse than the champion's. ``new_eval``: the challenger's evaluation when already
    made (the retrain flow's ``evaluate_fleet``); ``champion_eval``: ``(version, bundle,
    evaluation)`` of the champion, likewise (see ``load_champion``).

    Returns ``{"version", "promote", "reason", "champion_before", "false_alarms",
    "champion_false_alarms", "label_check"}``.
    """
    with mlflow_store(settings):
        result = Registry(settings).evaluate_and_promote(
            version, holdouts, tolerance=tolerance, bundle=bundle, labelled=labelled,
            points=points,
            new_eval=new_eval,
            champion_eval=champion_eval,
        )
    get_run_logger().info("version %s: %s", version, result.reason)
    warning = None
    rate = result.new_eval.rate()
    if result.promoted and rate > HIGH_FALSE_ALARMS:
        warning = (
            f"version {version} was promoted but flags {rate:.2%} of its held-out points "
            f"(more than {HIGH_FALSE_ALARMS:.0%}): expect false events; check the training "
            "window for anomalies, then retrain or roll back (cricket models rollback)"
        )
        with mlflow_store(settings):
            Registry(settings).client.set_model_version_tag(
                settings.model_name, version, "warning", warning
            )
        get_run_logger().warning("%s", warning)
    return {
        "warning": warning,
        "version": result.version,
        "promote": result.promoted,
        "reason": result.reason,
        "champion_before": result.champion_before,
        "false_alarms": result.new_eval.rate(),
        "champion_false_alarms": (
            None if result.champion_eval is None else result.champion_eval.rate()
        ),
        "label_check": None if result.label_check is None else result.label_check.to_dict(),
        "points": None if points is None else {
            "ok": points.ok, "reason": points.reason,
            **(points.new.to_dict() if points.new is not None else {"missing": True}),
            "champion": None if points.champion is None else points.champion.to_dict(),
        },
    }


@task(name="evaluate-batch", timeout_seconds=1800, **CPU_TASK)
def evaluate_batch(bundle: ModelBundle, holdouts: Mapping[str, Any]) -> EvalSummary:
    """``bundle`` (a sub-bundle: the batch's detectors and the fleet library) on the
    held-out tails of one batch of series."""
    with one_blas_thread():  # the other workers evaluate other batches
        return evaluate_bundle(bundle, holdouts)


@task(name="load-champion", timeout_seconds=300, **_MLFLOW_TASK)
def load_champion(settings: Settings, into: str | Path) -> tuple[ModelBundle, str] | None:
    """The champion's bundle and version, for the retrain to evaluate it batch by batch:
    downloaded into the folder ``into`` and opened there, each series' detector read when
    a batch asks for it (the folder must stay while the bundle is used). None when there
    is no champion or its files cannot be read (the promotion step then says so, as it
    did before)."""
    with mlflow_store(settings):
        registry = Registry(settings)
        version = registry.alias_version(CHAMPION)
        if version is None:
            return None
        try:
            return registry.open_bundle(into, version=version)
        except ModelFormatError:
            return None


@task(name="load-model", timeout_seconds=300, **_MLFLOW_TASK)
def load_model(
    settings: Settings, version: str | None = None, alias: str = CHAMPION
) -> tuple[ModelBundle, str]:
    """The bundle of ``version`` (default: the one holding ``alias``) and its version."""
    with mlflow_store(settings):
        bundle, resolved = Registry(settings).load_bundle(version=version, alias=alias)
    get_run_logger().info(
        "loaded version %s of %s (%d series, fleet: %s)",
        resolved, settings.model_name, len(bundle.detectors), bundle.fleet is not None,
    )
    return bundle, resolved
