"""MLflow for the point model: its own registered model, ``<model_name>-points``.

The point model is a model kind of its own (its own selector of fields, its own spec and
schedule), registered next to the waveform model under ``<settings.model_name>-points``
with the same aliases (``champion``) and the same plumbing (:class:`Registry`). A
version's artifacts are ``points/points.json`` (JSON only: loading never runs code).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cricket.config import Settings
from cricket.multifield import PointBundle
from cricket.registry import CHAMPION, Registry, RegistryError

SUFFIX = "-points"


def point_model_name(settings: Settings) -> str:
    return f"{settings.model_name}{SUFFIX}"


def point_registry(settings: Settings) -> Registry:
    """A Registry for the point model (same store, its own model name and experiment)."""
    return Registry(settings.model_copy(update={"model_name": point_model_name(settings)}))


def log_and_register_points(
    settings: Settings, bundle: PointBundle, params: Mapping[str, Any],
    metrics: Mapping[str, float],
) -> str:
    """Log the point bundle as an MLflow run and register it; returns the new version."""
    import mlflow

    reg = point_registry(settings)
    flat = {k: str(v)[:5000] for k, v in params.items()}
    with reg._active(), tempfile.TemporaryDirectory(prefix="cricket-points-") as tmp:
        folder = Path(tmp) / "points"
        bundle.save(folder)
        with mlflow.start_run(experiment_id=reg._experiment_id(), run_name="points-retrain") as run:
            mlflow.log_params(flat)
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(v)})
            mlflow.log_artifacts(str(folder), artifact_path="points")
            mlflow.set_tags({"model_kind": "points", "devices": str(len(bundle.models))})
            source = f"{run.info.artifact_uri.rstrip('/')}/points"
            run_id = run.info.run_id
        client = reg.client
        try:
            client.get_registered_model(reg.name)
        except Exception:  # noqa: BLE001 - not there yet: create it
            client.create_registered_model(reg.name, tags={"model_kind": "points"})
        mv = client.create_model_version(reg.name, source, run_id=run_id,
                                         tags={"model_kind": "points"})
    return str(mv.version)


def load_points(
    settings: Settings, version: str | None = None, alias: str = CHAMPION
) -> tuple[PointBundle, str]:
    """The point bundle of ``version`` (default: the one holding ``alias``)."""
    import mlflow.artifacts

    reg = point_registry(settings)
    resolved = reg.resolve(version, alias)
    mv = reg.client.get_model_version(reg.name, resolved)
    with tempfile.TemporaryDirectory(prefix="cricket-points-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=tmp, tracking_uri=reg.uri
            )
        except Exception as exc:  # noqa: BLE001 - one line the user can act on
            raise RegistryError(
                f"version {resolved} of {reg.name!r} has no readable point bundle ({exc}): "
                "retrain the point model (cricket points retrain)"
            ) from exc
        return PointBundle.load(Path(local)), resolved


def set_point_champion(settings: Settings, version: str) -> None:
    point_registry(settings).client.set_registered_model_alias(
        point_model_name(settings), CHAMPION, version
    )
