"""MLflow: log training runs, register model versions, move the champion alias, load.

Every call goes through :class:`Registry`, which talks to the tracking URI from the
settings (absolute; by default a SQLite file in the state folder) without changing
MLflow's process-wide tracking URI for longer than one call.

Model versions carry two aliases: ``challenger`` (the newest candidate) and
``champion`` (what scoring loads by default). The promotion policy (evaluation on
held-out data, planted probes, the rule) is :mod:`cricket.promotion`; this module
applies its decision to the aliases, and a person overrides it with ``promote`` and
``rollback``.
Loading a version downloads its bundle (JSON + arrays) and reads it with
:meth:`ModelBundle.load`: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cricket.bundle_cache import load_cached
from cricket.config import Settings, sqlite_path
from cricket.errors import CricketError
from cricket.feedback import LabelledStretch, check_labels
from cricket.model import BUNDLE_JSON, ModelBundle, ModelFormatError
from cricket.point_promotion import PointVerdict, with_points
from cricket.promotion import (
    DEFAULT_TOLERANCE,
    EvalSummary,
    PromotionResult,
    decide,
    evaluate_bundle,
    refuse_unpromotable,
    with_answers,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

CHAMPION = "champion"
#: decoded bundles kept between loads, under the state folder (``cricket.bundle_cache``)
MODEL_CACHE = "model-cache"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"  # registered-model tag: JSON list of champion versions
MODEL_URI_TAG = "cricket.model_uri"  # run tag: where log_training_run put the pyfunc
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")


class RegistryError(CricketError):
    """A registry operation that cannot be done; the message says what to do."""


class NoChampionError(RegistryError, LookupError):
    """No model version holds the requested alias (by default ``champion``)."""


# --------------------------------------------------------------------------- store failures
class RegistryUnavailableError(CricketError):
    """The MLflow store could not be read or written (moved, locked, corrupted, down).
    Retried like any I/O failure (``retryable``), except a store that does not exist;
    the message names the store."""

    retryable = True


#: MLflow error codes that are answers about the registry's content, not store failures
_CONTENT_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS"}


def _public_uri(uri: str) -> str:
    """The tracking URI without any user:password part."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _is_store_failure(exc: BaseException) -> bool:
    import sqlite3

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, SQLAlchemyError | sqlite3.Error | OSError):
        return True
    if isinstance(exc, MlflowException):
        return exc.error_code not in _CONTENT_CODES
    return False


def _probe(settings: Settings) -> BaseException | None:
    """The error a trivial read of the store raises, or None when the store answers."""
    try:
        Registry(settings).client.search_registered_models(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here is the store's
        return exc
    return None


def _unavailable(settings: Settings, exc: BaseException) -> RegistryUnavailableError:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return RegistryUnavailableError(
        f"the MLflow store at {_public_uri(settings.tracking_uri)} cannot be used ({first}): "
        "check that it exists, is readable and writable and not locked by another process "
        "(or that the tracking server is up), or set CRICKET_MLFLOW_TRACKING_URI; then run again"
    )


@contextmanager
def mlflow_store(settings: Settings) -> Iterator[None]:
    """Turn a broken MLflow store into one clear error. A "no champion" or "no such
    version" answer is checked against the store first: a store that cannot be read
    must not read as an empty registry."""
    try:
        yield
    except (RegistryError, ModelFormatError) as exc:
        if isinstance(exc, RegistryError) and (problem := _probe(settings)) is not None:
            raise _unavailable(settings, problem) from exc
        raise
    except Exception as exc:
        if _is_store_failure(exc):
            raise _unavailable(settings, exc) from exc
        raise


# --------------------------------------------------------------------------- rows
@dataclass
class VersionRow:
    """One registered version, as ``cricket models list`` shows it."""

    version: str
    aliases: list[str]
    created: datetime
    tags: dict[str, str]
    run_id: str | None

    @property
    def decision(self) -> str:
        return self.tags.get("decision", "")


def _metric_name(text: str) -> str:
    """MLflow metric/param names allow letters, digits, ``_ - . space : /`` only, and at
    most 250 characters: a longer one (a series with long tag values) keeps its head,
    a hash of the whole name and its tail (the metric's own name)."""
    clean = re.sub(r"[^\w\-. :/]", "_", text)
    if len(clean) <= 250:
        return clean
    import hashlib

    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{clean[:150]}-{digest}-{clean[-86:]}"


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
        return
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    out[_metric_name(prefix)] = text[:500]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def describe_version(tags: Mapping[str, str]) -> str:
    """The model version's description in the MLflow UI, from its tags: what it was
    trained on, how it did on held-out data and what was decided, in plain words, so a
    reviewer need not decode the tag table. Rewritten whenever the decision changes."""
    lines = []
    if tags.get("series_count"):
        span = ""
        if tags.get("trained_from") and tags.get("trained_to"):
            span = f" from {tags['trained_from'][:16]} to {tags['trained_to'][:16]} UTC"
        lines.append(f"Trained on {tags['series_count']} series{span}.")
    if tags.get("heldout_false_alarms"):
        held = f"Held-out data ({tags.get('heldout_series', '?')} series): " + (
            f"{100 * float(tags['heldout_false_alarms']):.2f}% of normal samples flagged"
        )
        if tags.get("heldout_probe_recall"):
            held += f", {100 * float(tags['heldout_probe_recall']):.0f}% of planted probes found"
        lines.append(held + ".")
    if tags.get("point_heldout_false_alarms"):
        held = ("Point model (several fields per device, in this version): "
                f"{100 * float(tags['point_heldout_false_alarms']):.2f}% of held-out rows flagged")
        if tags.get("point_probe_recall"):
            held += (f", {100 * float(tags['point_probe_recall']):.0f}% of "
                     f"{tags.get('point_probes', '?')} correlation-breaking probes found")
        lines.append(held + ".")
    if tags.get("compared_with"):
        lines.append(f"Compared with champion version {tags['compared_with']}.")
    decision = tags.get("decision")
    if decision:
        reason = tags.get("decision_reason")
        lines.append(f"Decision: {decision}" + (f": {reason}." if reason else "."))
    if tags.get("rolled_back"):
        lines.append(f"Rolled back: {tags['rolled_back']}.")
    return "\n\n".join(lines)


# --------------------------------------------------------------------------- registry
class Registry:
    """Runs, versions and aliases of ``settings.model_name`` in MLflow."""

    def __init__(self, settings: Settings | None = None, experiment: str | None = None) -> None:
        self.settings = settings or Settings()
        self.uri = self.settings.tracking_uri
        self.name = self.settings.model_name
        self.experiment = experiment or self.name
        self._artifact_root: str | None = None
        if self.uri.startswith("sqlite:///"):
            db = sqlite_path(self.uri)
            db.parent.mkdir(parents=True, exist_ok=True)
            # MLflow's default artifact root is ./mlruns under the *working directory*:
            # keep artifacts next to the database instead.
            self._artifact_root = (db.parent / "mlartifacts").as_uri()
        elif self.uri.startswith("file:"):
            Path(self.uri.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        self._client: MlflowClient | None = None

    # -- plumbing
    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    @contextmanager
    def _active(self) -> Iterator[None]:
        """Point MLflow's fluent API at our URI for the duration of one call only."""
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        with _use_tracking_uri(self.uri):
            import mlflow

            previous_registry = mlflow.get_registry_uri()
            mlflow.set_registry_uri(self.uri)
            try:
                yield
            finally:
                mlflow.set_registry_uri(previous_registry)

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self._artifact_root)

    def _version(self, version: str) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            raise RegistryError(
                f"model {self.name!r} has no version {version!r} in {_public_uri(self.uri)}: "
                "see the versions with `cricket models list`"
            ) from exc

    def alias_version(self, alias: str = CHAMPION) -> str | None:
        """The version holding ``alias``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException as exc:
            if exc.error_code in _CONTENT_CODES:
                return None  # no such model or alias: an answer, not a failure
            raise

    # -- logging and registering
    def log_training_run(
        self,
        bundle: ModelBundle,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        per_series_metrics: Mapping[str, Mapping[str, float]] | None = None,
        artifacts: Mapping[str, str | Path] | None = None,
        held_out: Mapping[str, Any] | None = None,
        run_name: str | None = None,
        parts: Mapping[str, str | Path] | None = None,
        evaluation: EvalSummary | None = None,
        bundle_dir: str | Path | None = None,
    ) -> str:
        """Log one retrain as an MLflow run; returns the run id.

        Params: the bundle's spec and selector plus ``params``. Metrics: ``metrics`` (the
        fleet summary); ``per_series_metrics`` as a table artifact (per_series_metrics.json). Artifacts:
        ``artifacts`` (images, HTML) under ``figures/``, and the bundle as a pyfunc model.
        With ``held_out``, the bundle's held-out evaluation is logged too (``evaluation``:
        that evaluation when the caller has already made it, e.g. batch by batch).
        ``parts``: more folders the model version holds next to the bundle
        (``{"points": folder}``: the point model), under the pyfunc's
        ``artifacts/<name>``. ``bundle_dir``: a folder where ``bundle`` is saved
        already (a retrain writes it batch by batch): logged as it is.
        """
        import mlflow

        flat: dict[str, str] = {}
        _flatten("spec", bundle.spec.model_dump(mode="json"), flat)
        _flatten("selector", bundle.selector.model_dump(mode="json"), flat)
        _flatten("", dict(params or {}), flat)
        flat["series_count"] = str(len(bundle.detectors))
        flat["fleet"] = str(bundle.fleet is not None)
        # The fleet summary as metrics (charts); per-series figures as one table artifact
        # (a metric per series and figure would be thousands of charts).
        all_metrics = {_metric_name(k): float(v) for k, v in (metrics or {}).items()}
        all_metrics = {k: v for k, v in all_metrics.items() if math.isfinite(v)}
        if evaluation is None and held_out is not None:
            evaluation = evaluate_bundle(bundle, held_out)
        if evaluation is not None:
            all_metrics["heldout_false_alarm_fraction"] = evaluation.rate()

        with self._active(), tempfile.TemporaryDirectory(prefix="cricket-log-") as tmp:
            tmpdir = Path(tmp)
            if bundle_dir is None:
                bundle_dir = bundle.save(tmpdir / "bundle")
            with mlflow.start_run(
                experiment_id=self._experiment_id(), run_name=run_name
            ) as run:
                if flat:
                    mlflow.log_params(flat)
                if all_metrics:
                    mlflow.log_metrics(all_metrics)
                if per_series_metrics:
                    import pandas as pd

                    table = pd.DataFrame(
                        [{"series": k, **dict(v)} for k, v in per_series_metrics.items()]
                    )
                    mlflow.log_table(table, artifact_file="per_series_metrics.json")
                if evaluation is not None:
                    mlflow.log_dict(evaluation.to_dict(), "evaluation.json")
                for label, path in (artifacts or {}).items():
                    path = Path(path)
                    target = label if Path(label).suffix else f"{label}{path.suffix}"
                    staged = tmpdir / "figures" / target
                    staged.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, staged)
                    mlflow.log_artifact(str(staged), artifact_path="figures")
                # The signature names the columns; its inputs are typed ``any`` (see
                # cricket.pyfunc.signature): score_dataframe checks them itself.
                from cricket.pyfunc import signature

                with _quiet("mlflow.pyfunc", "mlflow.models.model"):
                    info = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=str(MODEL_CODE),  # models from code: nothing pickled
                        signature=signature(),
                        artifacts={"bundle": str(bundle_dir),
                                   **{k: str(v) for k, v in (parts or {}).items()}},
                        pip_requirements=_requirements(),  # given: no inference subprocess
                    )
                mlflow.set_tags(
                    {
                        MODEL_URI_TAG: info.model_uri,
                        "trained_from": str(bundle.trained_from or ""),
                        "trained_to": str(bundle.trained_to or ""),
                        "series_count": str(len(bundle.detectors)),
                        "model_parts": ",".join(["bundle", *sorted(parts or {})]),
                    }
                )
                return run.info.run_id

    def log_scoring_run(
        self,
        report_path: str | Path,
        kind: str,
        model_version: str,
        window_start: datetime,
        window_end: datetime,
        metrics: Mapping[str, float] | None = None,
    ) -> str:
        """Record a scoring (or backfill) run in the ``<model>-scoring`` experiment with
        its HTML report as an artifact, so a reviewer finds it beside the model version.
        Returns the run id."""
        import mlflow

        experiment = f"{self.name}-scoring"
        with self._active():
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = (
                exp.experiment_id
                if exp is not None
                else self.client.create_experiment(
                    experiment, artifact_location=self._artifact_root
                )
            )
            run_name = f"{kind} {window_start:%Y-%m-%d %H:%M}"
            with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
                mlflow.log_params(
                    {
                        "kind": kind,
                        "model_version": str(model_version),
                        "window_start": window_start.isoformat(),
                        "window_end": window_end.isoformat(),
                    }
                )
                clean = {
                    _metric_name(k): float(v)
                    for k, v in (metrics or {}).items()
                    if math.isfinite(float(v))
                }
                if clean:
                    mlflow.log_metrics(clean)
                mlflow.log_artifact(str(report_path), artifact_path="report")
                return run.info.run_id

    def register(self, run_id: str, tags: Mapping[str, str] | None = None) -> str:
        """Register the run's model as a new version of ``settings.model_name``."""
        import mlflow

        run = self.client.get_run(run_id)
        model_uri = run.data.tags.get(MODEL_URI_TAG)
        if not model_uri:
            raise RegistryError(
                f"run {run_id} has no cricket model (tag {MODEL_URI_TAG} missing): "
                "register runs made by Registry.log_training_run"
            )
        version_tags = {
            "trained_from": run.data.tags.get("trained_from", ""),
            "trained_to": run.data.tags.get("trained_to", ""),
            "series_count": run.data.tags.get("series_count", ""),
            "decision": "pending",
            **{str(k): str(v) for k, v in (tags or {}).items()},
        }
        with self._active():
            mv = mlflow.register_model(model_uri, self.name, tags=version_tags)
        return str(mv.version)

    # -- loading
    def _check_store_exists(self) -> None:
        """Reading from a SQLite store that is not there would silently create an empty
        one and answer 'no champion': say that the store itself is missing."""
        if self.uri.startswith("sqlite:///"):
            db = sqlite_path(self.uri)
            if not db.is_file():
                raise RegistryUnavailableError(
                    f"the MLflow store {db} does not exist, so there is no champion model: "
                    "run the nightly retrain first (cricket retrain), or set "
                    "MLFLOW_TRACKING_URI (or CRICKET_MLFLOW_TRACKING_URI) to where the store "
                    "is (it may have moved)",
                    retryable=False,
                )

    def resolve(self, version: str | None = None, alias: str = CHAMPION) -> str:
        """The version number for an explicit ``version`` or for ``alias``."""
        self._check_store_exists()
        if version is not None:
            return str(self._version(str(version)).version)
        found = self.alias_version(alias)
        if found is None:
            if alias == CHAMPION:
                raise NoChampionError(
                    f"no version of model {self.name!r} has the alias 'champion' "
                    f"(registry {_public_uri(self.uri)}): run the nightly retrain first (cricket retrain)"
                )
            raise NoChampionError(
                f"no version of model {self.name!r} has the alias {alias!r} "
                f"(registry {_public_uri(self.uri)}): see `cricket models list`"
            )
        return found

    def load_bundle(
        self, version: str | None = None, alias: str = CHAMPION
    ) -> tuple[ModelBundle, str]:
        """Download a version's bundle and load it (arrays + JSON only; the decoded arrays
        are kept in ``<state>/model-cache`` for the next load of the same files: see
        ``cricket.bundle_cache``). Returns (bundle, version)."""
        with tempfile.TemporaryDirectory(prefix="cricket-model-") as tmp:
            return self.open_bundle(tmp, version, alias, lazy=False)

    def open_bundle(
        self, into: str | Path, version: str | None = None, alias: str = CHAMPION,
        lazy: bool = True,
    ) -> tuple[ModelBundle, str]:
        """Download a version's bundle into the folder ``into`` and open it there:
        ``lazy`` reads each series' detector when asked for (``ModelBundle.open``; the
        folder must stay while the bundle is used), else all at once (``load``)."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        resolved = self.resolve(version, alias)
        uri = self.client.get_model_version_download_uri(self.name, resolved)
        fix = (
            "retrain (cricket retrain), or make a sound version the champion "
            "(cricket models rollback / cricket models promote VERSION)"
        )
        Path(into).mkdir(parents=True, exist_ok=True)
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{uri.rstrip('/')}/artifacts/bundle",
                    dst_path=str(into),
                    tracking_uri=self.uri,
                )
            )
        except (OSError, MlflowException) as exc:
            # the store answered just above (resolve, download URI): the version's
            # files are what is missing
            raise ModelFormatError(
                f"version {resolved} of {self.name!r}: its model files are missing or "
                f"unreadable at {_public_uri(uri)}/artifacts/bundle "
                f"({type(exc).__name__}); {fix}"
            ) from None
        if not (local / BUNDLE_JSON).is_file():
            raise ModelFormatError(
                f"version {resolved} of {self.name!r} holds no cricket bundle at "
                f"{_public_uri(uri)}/artifacts/bundle: {fix}"
            )
        try:
            if lazy:
                return ModelBundle.open(local), resolved
            # decoded arrays kept between loads, named by version and the files' checksum
            return load_cached(local, self.settings.state_dir / MODEL_CACHE,
                               f"{self.name}-v{resolved}",
                               keep=self.settings.model_cache_versions), resolved
        except ModelFormatError as exc:
            text = str(exc).replace(str(local), "its bundle").splitlines()[0]
            raise ModelFormatError(
                f"version {resolved} of {self.name!r} cannot be used: {text}; {fix}"
            ) from None

    def model_uri(self, version: str | None = None, alias: str = CHAMPION) -> str:
        """``models:/NAME/VERSION`` for ``mlflow.pyfunc.load_model`` (with this tracking URI)."""
        return f"models:/{self.name}/{self.resolve(version, alias)}"

    def load_pyfunc(self, version: str | None = None, alias: str = CHAMPION) -> Any:
        """The version as an MLflow pyfunc model: ``.predict(DataFrame[series, time, value])``."""
        import mlflow.pyfunc

        uri = self.model_uri(version, alias)
        with self._active():
            return mlflow.pyfunc.load_model(uri)

    # -- aliases, promotion, rollback
    def _history(self) -> list[str]:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.name).tags or {}
        except MlflowException:
            return []
        try:
            return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]
        except ValueError:
            return []

    def _set_history(self, history: list[str]) -> None:
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history[-50:]))

    def _make_champion(self, version: str, decision: str, reason: str) -> str | None:
        previous = self.alias_version(CHAMPION)
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        history = self._history()
        if previous is not None and (not history or history[-1] != previous):
            history.append(previous)
        if not history or history[-1] != version:
            history.append(version)
        self._set_history(history)
        tags = {"decision": decision, "decision_reason": reason, "champion_since": _now()}
        if previous is not None and previous != version:
            tags["previous_champion"] = previous
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, version, k, v)
        self._describe(version)
        return previous

    def _describe(self, version: str) -> None:
        """Rewrite the version's description from its tags (see :func:`describe_version`)."""
        tags = dict(self.client.get_model_version(self.name, version).tags or {})
        self.client.update_model_version(self.name, version, description=describe_version(tags))

    def evaluate_and_promote(
        self,
        version: str,
        held_out: Mapping[str, Any],
        tolerance: float = DEFAULT_TOLERANCE,
        bundle: ModelBundle | None = None,
        labelled: Sequence[LabelledStretch] = (),
        points: PointVerdict | None = None,
        new_eval: EvalSummary | None = None,
        champion_eval: tuple[str, ModelBundle, EvalSummary] | None = None,
    ) -> PromotionResult:
        """Make ``version`` the challenger, compare it with the champion on ``held_out``,
        and move ``champion`` to it when :func:`cricket.promotion.decide` says so.

        ``bundle`` is the version's bundle when the caller has it in memory (saves a
        download); by default it is loaded from the registry. ``points``: the verdict on
        the version's point model (:mod:`cricket.point_promotion`); the version is
        promoted as a whole, so a worse point part keeps the champion. ``new_eval``:
        the version's evaluation on ``held_out`` when the caller has already made it
        (the retrain evaluates batch by batch and logs it with the run);
        ``champion_eval``: ``(version, bundle, evaluation)`` of the champion on the same
        ``held_out``, used when that version still holds the alias."""
        version = str(self._version(version).version)
        self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        champion = self.alias_version(CHAMPION)
        new_bundle = bundle if bundle is not None else self.load_bundle(version=version)[0]
        if new_eval is None:
            new_eval = evaluate_bundle(new_bundle, held_out)
        made, champion_eval = champion_eval, None
        unreadable = None
        old_bundle = None
        if champion is not None and champion != version and made and made[0] == champion:
            _, old_bundle, champion_eval = made
        elif champion is not None and champion != version:
            try:
                old_bundle, _ = self.load_bundle(version=champion)
            except ModelFormatError as exc:
                # Written by another Cricket (or damaged): scoring cannot load it either,
                # so it cannot stand in the way of a version that works.
                unreadable = str(exc).splitlines()[0][:300]
            else:
                champion_eval = evaluate_bundle(old_bundle, held_out)
        refusal = refuse_unpromotable(
            version, new_bundle, old_bundle if champion_eval is not None else None, held_out
        )
        promote, reason = decide(
            version, champion, new_eval, champion_eval, unreadable, tolerance, refusal
        )
        # people's answers: the labelled stretches every challenger must get right
        label_check = check_labels(new_bundle.detector_for, labelled) if labelled else None
        promote, reason = with_answers(promote, reason, version, champion, label_check)
        promote, reason = with_points(promote, reason, points)
        set_tag = self.client.set_model_version_tag
        for k, v in (points.tags() if points is not None else {}).items():
            set_tag(self.name, version, k, v)
        set_tag(self.name, version, "heldout_false_alarms", f"{new_eval.rate():.6f}")
        set_tag(self.name, version, "heldout_series", str(len(new_eval.covered)))
        recall = new_eval.recall()
        if recall is not None:
            set_tag(self.name, version, "heldout_probe_recall", f"{recall:.3f}")
        if champion is not None and champion != version:
            set_tag(self.name, version, "compared_with", champion)
        if promote:
            self._make_champion(version, "promoted", reason)
        else:
            set_tag(self.name, version, "decision", "rejected")
            set_tag(self.name, version, "decision_reason", reason)
            self._describe(version)
        return PromotionResult(
            version, promote, reason, champion, new_eval, champion_eval, label_check
        )

    def promote(self, version: str, reason: str = "promoted by hand") -> str | None:
        """Make ``version`` the champion (a person's override). Returns the old champion.
        The version's bundle is loaded and checked first: a damaged bundle (missing
        files, NaN thresholds or centroids...) or one without any per-series model is
        refused, so the next hourly run cannot fail (or score nothing) on it."""
        version = str(self._version(version).version)
        bundle, _ = self.load_bundle(version=version)
        if not bundle.detectors:
            raise RegistryError(
                f"version {version} of {self.name!r} has 0 per-series models: it cannot be "
                "the champion; retrain with a longer train window or holdout"
            )
        return self._make_champion(version, "promoted manually", f"{reason} at {_now()}")

    def rollback(self) -> tuple[str, str]:
        """Give ``champion`` back to the previous champion. Returns (from, to)."""
        current = self.resolve(alias=CHAMPION)
        history = self._history()
        while history and history[-1] == current:
            history.pop()
        from mlflow.exceptions import MlflowException

        while history:
            candidate = history[-1]
            try:
                self.client.get_model_version(self.name, candidate)
                break
            except MlflowException:  # deleted since: skip it
                history.pop()
        if not history:
            raise RegistryError(
                f"nothing to roll back to: version {current} of {self.name!r} is the only "
                "version that has been champion; promote another with "
                "`cricket models promote VERSION`"
            )
        target = history[-1]
        self.client.set_registered_model_alias(self.name, CHAMPION, target)
        self._set_history(history)
        stamp = _now()
        self.client.set_model_version_tag(
            self.name, current, "rolled_back", f"replaced by version {target} at {stamp}"
        )
        self.client.set_model_version_tag(self.name, current, "decision", "rolled back")
        self.client.set_model_version_tag(
            self.name, target, "decision_reason", f"restored by rollback from {current} at {stamp}"
        )
        self._describe(current)
        self._describe(target)
        return current, target

    def list_versions(self) -> list[VersionRow]:
        """Every version of the model, newest first."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException:
            return []
        aliases: dict[str, list[str]] = {}
        try:
            for alias, v in (self.client.get_registered_model(self.name).aliases or {}).items():
                aliases.setdefault(str(v), []).append(alias)
        except MlflowException:
            pass
        rows = [
            VersionRow(
                version=str(mv.version),
                aliases=sorted(aliases.get(str(mv.version), [])),
                created=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
                tags=dict(mv.tags or {}),
                run_id=mv.run_id,
            )
            for mv in versions
        ]
        return sorted(rows, key=lambda r: int(r.version), reverse=True)


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence MLflow's "no input example" chatter for one call."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _requirements() -> list[str]:
    """Pinned requirements for the logged model (given, so MLflow does not infer them by
    loading the model in a subprocess). The cricket package itself must be installed
    where the model is loaded: the model code imports it."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "numpy", "pandas", "scikit-learn"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:  # pragma: no cover
            reqs.append(dist)
    return reqs
