"""MLflow for the point model: a part of the waveform model's versions.

A retrain with a point selector logs the point bundle inside the same model version as
the waveform bundle: the version's pyfunc holds ``artifacts/bundle`` (waveform) and
``artifacts/points/points.json`` (one point model per device; JSON only, loading never
runs code). The version is promoted as a whole (:mod:`cricket.point_promotion`), and
scoring points loads the point part of the champion (or of a given version).

Earlier versions registered the point model on its own as ``<model_name>-points``; such
models are no longer read, and pointing at one says so in one line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cricket.config import Settings
from cricket.errors import CricketValueError
from cricket.multifield import PointBundle
from cricket.registry import CHAMPION, Registry, RegistryError

PART = "points"
OLD_SUFFIX = "-points"
RETRAIN_HINT = (
    "retrain with a point selector (cricket points retrain, or the nightly-retrain "
    "deployment with its `points` parameter)"
)


class NoPointModelError(RegistryError):
    """The model version holds no point model."""


def save_part(bundle: PointBundle, folder: Path) -> Path:
    """The folder a model version holds as its ``points`` part."""
    bundle.save(Path(folder))
    return Path(folder)


def _old_model_note(reg: Registry) -> str:
    """A sentence about a separate ``<name>-points`` model of an earlier Cricket, if any."""
    from mlflow.exceptions import MlflowException

    name = reg.name if reg.name.endswith(OLD_SUFFIX) else f"{reg.name}{OLD_SUFFIX}"
    try:
        model = reg.client.get_registered_model(name)
    except MlflowException:
        return ""
    if (model.tags or {}).get("model_kind") != "points":
        return ""
    base = name.removesuffix(OLD_SUFFIX)
    return (f" (the separate point model {name!r} of an earlier Cricket is no longer read: "
            f"point models now live in the versions of {base!r})")


def load_points(
    settings: Settings, version: str | None = None, alias: str = CHAMPION
) -> tuple[PointBundle, str]:
    """The point part of ``version`` (default: the version holding ``alias``) of
    ``settings.model_name``."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    reg = Registry(settings)
    if reg.name.endswith(OLD_SUFFIX) and _old_model_note(reg):
        base = reg.name.removesuffix(OLD_SUFFIX)
        raise NoPointModelError(
            f"model {reg.name!r} is the separate point model of an earlier Cricket and is no "
            f"longer read: point models now live in the versions of {base!r} next to its "
            f"waveform model; set CRICKET_MODEL_NAME={base} and {RETRAIN_HINT}"
        )
    resolved = reg.resolve(version, alias)
    uri = reg.client.get_model_version_download_uri(reg.name, resolved)
    with tempfile.TemporaryDirectory(prefix="cricket-points-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"{uri.rstrip('/')}/artifacts/{PART}", dst_path=tmp,
                tracking_uri=reg.uri,
            ))
        except (OSError, MlflowException):
            local = Path(tmp) / "absent"
        if not (local / "points.json").is_file():
            raise NoPointModelError(
                f"version {resolved} of {reg.name!r} holds no point model: "
                f"{RETRAIN_HINT}{_old_model_note(reg)}"
            )
        try:
            return PointBundle.load(local), resolved
        except (CricketValueError, ValueError, KeyError) as exc:
            raise RegistryError(
                f"version {resolved} of {reg.name!r} has an unreadable point model "
                f"({str(exc).splitlines()[0][:200]}): {RETRAIN_HINT}"
            ) from None


def champion_points(settings: Settings) -> tuple[PointBundle | None, str | None]:
    """The champion's point part and the champion's version (None, version) when the
    champion holds none, (None, None) when there is no champion."""
    champion = Registry(settings).alias_version(CHAMPION)
    if champion is None:
        return None, None
    try:
        return load_points(settings, champion)[0], champion
    except NoPointModelError:
        return None, champion
