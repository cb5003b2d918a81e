"""The MLflow registry, for real: a SQLite tracking store in a temporary folder.

Covers logging + registering, the champion/challenger rule (a model trained on corrupted
data is not promoted), promote and rollback, the no-champion error, loading as a bundle
and as an MLflow pyfunc, and the ``cricket models`` commands.
"""

from __future__ import annotations

import os
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cricket.config import DetectorSpec, SeriesSelector, Settings
from cricket.detector import WaveformDetector
from cricket.model import ModelBundle
from cricket.promotion import EvalSummary, decide_promotion
from cricket.registry import CHAMPION, NoChampionError, Registry, RegistryError

SPEC = DetectorSpec(segment_len=16, train_slide=2, n_clusters=12, threshold_quantile=0.99)
KEYS = ["waveform.value{host=a}", "waveform.value{host=b}"]
PERIODS = {KEYS[0]: 40, KEYS[1]: 25}


def wave(key: str, start: int, n: int) -> np.ndarray:
    """The clean waveform of ``key`` at samples [start, start + n)."""
    rng = np.random.default_rng(zlib.crc32(f"{key}@{start}".encode()))
    t = np.arange(start, start + n)
    return 10 + 3 * np.sin(2 * np.pi * t / PERIODS[key]) + rng.normal(0, 0.05, n)


def make_bundle(corrupted: bool = False, keys: list[str] = KEYS) -> ModelBundle:
    """Trained on clean history, or on corrupted history: a stuck sensor (a flat line
    with some noise), which learns nothing of the real shapes. (Pure noise would not do:
    a library of noise rebuilds a clean wave about as badly as it rebuilds noise, so its
    held-out false alarms are no higher.)"""
    rng = np.random.default_rng(7)
    detectors = {}
    for key in keys:
        history = wave(key, 0, 1200)
        if corrupted:
            history = 10 + rng.normal(0, 0.3, 1200)
        detectors[key] = WaveformDetector(SPEC).fit(history)
    return ModelBundle(
        detectors=detectors,
        fleet=None,
        spec=SPEC,
        selector=SeriesSelector(),
        trained_from=datetime(2024, 1, 1, tzinfo=UTC),
        trained_to=datetime(2024, 1, 8, tzinfo=UTC),
    )


@pytest.fixture(scope="module")
def good() -> ModelBundle:
    return make_bundle()


@pytest.fixture(scope="module")
def bad() -> ModelBundle:
    return make_bundle(corrupted=True)


@pytest.fixture(scope="module")
def held_out() -> dict[str, np.ndarray]:
    """A clean tail after the training data, the same for every version compared."""
    return {key: wave(key, 1200, 400) for key in KEYS}


def add_version(registry: Registry, bundle: ModelBundle, held_out: dict) -> str:
    run_id = registry.log_training_run(
        bundle,
        params={"train_window": "7d"},
        metrics={"inertia": 1.5},
        per_series_metrics={k: {"threshold": 50.0} for k in bundle.detectors},
        held_out=held_out,
    )
    return registry.register(run_id)


# --------------------------------------------------------------------- the rule itself
def test_decide_promotion_rule() -> None:
    new = EvalSummary({"a": 0.01, "b": 0.0})
    assert decide_promotion(new, None)[0] is True
    assert "first version" in decide_promotion(new, None)[1]
    # not worse within the tolerance -> promote; worse beyond it -> keep the champion
    assert decide_promotion(new, EvalSummary({"a": 0.0, "b": 0.0}), tolerance=0.005)[0]
    promote, reason = decide_promotion(new, EvalSummary({"a": 0.0, "b": 0.0}), tolerance=0.001)
    assert not promote and "more false alarms" in reason
    # fewer series covered than the champion -> never promoted, whatever the rate
    promote, reason = decide_promotion(EvalSummary({"a": 0.0}), EvalSummary({"a": 0.5, "b": 0.5}))
    assert not promote and "misses 1 the champion covers (b)" in reason
    # a champion that could score nothing is replaced by anything
    assert decide_promotion(EvalSummary({"a": 0.9}), EvalSummary({}))[0]
    # comparison is over the champion's series: extra series of the new one do not count
    assert decide_promotion(EvalSummary({"a": 0.0, "c": 1.0}), EvalSummary({"a": 0.0}))[0]


# --------------------------------------------------------------------- real MLflow
def test_first_version_becomes_champion_and_loads(
    mlflow_settings: Settings, good: ModelBundle, held_out: dict, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # nothing may land in the working directory
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    registry = Registry(mlflow_settings)
    assert registry.uri.startswith("sqlite:////")

    version = add_version(registry, good, held_out)
    result = registry.evaluate_and_promote(version, held_out)
    assert result.promoted and result.champion_before is None
    assert registry.alias_version(CHAMPION) == version
    assert registry.alias_version("challenger") == version

    (row,) = registry.list_versions()
    assert row.version == version and row.aliases == ["challenger", "champion"]
    assert row.decision == "promoted"
    assert row.tags["series_count"] == "2"
    assert row.tags["trained_from"].startswith("2024-01-01")
    assert float(row.tags["heldout_false_alarms"]) < 0.02
    assert "compared_with" not in row.tags  # nothing to compare with: no empty tag
    # the MLflow UI's description says it in words
    described = registry.client.get_model_version(registry.name, version).description
    assert "Trained on 2 series from 2024-01-01" in described
    assert "Decision: promoted: first version" in described

    loaded, loaded_version = registry.load_bundle()
    assert loaded_version == version and loaded.series_keys == KEYS
    probe = wave(KEYS[0], 5000, 300)
    np.testing.assert_array_equal(
        loaded.detectors[KEYS[0]].score(probe).score, good.detectors[KEYS[0]].score(probe).score
    )
    # The load left its decoded arrays in the model cache; CRICKET_MODEL_CACHE_VERSIONS=0
    # loads the same model and keeps none.
    cache = mlflow_settings.state_dir / "model-cache"
    assert len(list(cache.iterdir())) == 1
    uncached = Registry(mlflow_settings.model_copy(update={"model_cache_versions": 0}))
    assert uncached.load_bundle()[0].series_keys == KEYS and list(cache.iterdir()) == []

    # The MLflow process-wide URI and the environment are left as they were, and
    # nothing was written to the working directory (no ./mlruns, no ./mlflow.db).
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
    assert list(work.iterdir()) == []
    # Nothing in the stored model is a pickle: MLflow's "models from code" was used.
    artifact_files = [p for p in mlflow_settings.state_dir.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow_model.py" for p in artifact_files)
    assert not [p for p in artifact_files if p.suffix in {".pkl", ".pickle", ".cloudpickle"}]


def test_pyfunc_predicts_a_dataframe(
    mlflow_settings: Settings, good: ModelBundle, held_out: dict
) -> None:
    registry = Registry(mlflow_settings)
    version = add_version(registry, good, held_out)
    registry.promote(version)
    model = registry.load_pyfunc()  # mlflow.pyfunc.load_model("models:/NAME/VERSION")
    times = pd.date_range("2024-02-01", periods=240, freq="10s", tz="UTC")
    values = wave(KEYS[1], 3000, 240)
    values[120:140] = 25.0  # an anomaly
    frame = pd.DataFrame({"series": KEYS[1], "time": times, "value": values})
    out = model.predict(frame)
    assert isinstance(out, pd.DataFrame)
    assert {"series", "time", "value", "reconstruction", "error", "score", "anomalous"} <= set(out.columns)
    assert len(out) == 240 and (out.series == KEYS[1]).all()
    np.testing.assert_array_equal(out.score.to_numpy(), good.detectors[KEYS[1]].score(values).score)
    assert out.anomalous.iloc[120:150].all()
    # this spec alerts at its 99th percentile in each of its views (shapes, structure, range,
    # noise), so a clean stretch may show a stray alert, but few
    assert out.anomalous.iloc[:110].sum() <= 2


def test_worse_challenger_is_not_promoted_then_promote_and_rollback(
    mlflow_settings: Settings, good: ModelBundle, bad: ModelBundle, held_out: dict
) -> None:
    registry = Registry(mlflow_settings)
    v1 = add_version(registry, good, held_out)
    assert registry.evaluate_and_promote(v1, held_out).promoted

    v2 = add_version(registry, bad, held_out)
    result = registry.evaluate_and_promote(v2, held_out)
    assert not result.promoted and result.champion_before == v1
    assert result.new_eval.rate() > result.champion_eval.rate() + 0.1  # much worse
    assert registry.alias_version(CHAMPION) == v1
    assert registry.alias_version("challenger") == v2
    tags = {r.version: r.tags for r in registry.list_versions()}
    assert tags[v2]["decision"] == "rejected"
    assert "more false alarms" in tags[v2]["decision_reason"]
    described = registry.client.get_model_version(registry.name, v2).description
    assert f"Compared with champion version {v1}." in described
    assert "Decision: rejected:" in described and "more false alarms" in described

    # a second good version is not worse: it becomes champion
    v3 = add_version(registry, good, held_out)
    assert registry.evaluate_and_promote(v3, held_out).promoted
    assert registry.alias_version(CHAMPION) == v3
    assert {r.version: r.tags for r in registry.list_versions()}[v3]["previous_champion"] == v1

    # rollback moves the alias back to the previous champion
    assert registry.rollback() == (v3, v1)
    assert registry.alias_version(CHAMPION) == v1
    assert registry.load_bundle()[1] == v1
    described = registry.client.get_model_version(registry.name, v3).description
    assert f"Rolled back: replaced by version {v1}" in described
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()

    # a person can override the rule; rollback undoes that too
    assert registry.promote(v2) == v1
    assert registry.alias_version(CHAMPION) == v2
    assert registry.rollback() == (v2, v1)
    assert registry.alias_version(CHAMPION) == v1
    with pytest.raises(RegistryError, match="has no version '99'"):
        registry.promote("99")


def test_challenger_missing_a_series_is_not_promoted(
    mlflow_settings: Settings, good: ModelBundle, held_out: dict
) -> None:
    registry = Registry(mlflow_settings)
    v1 = add_version(registry, good, held_out)
    registry.evaluate_and_promote(v1, held_out)
    partial = ModelBundle({KEYS[0]: good.detectors[KEYS[0]]}, None, SPEC, SeriesSelector())
    v2 = add_version(registry, partial, held_out)
    result = registry.evaluate_and_promote(v2, held_out, bundle=partial)
    assert not result.promoted and KEYS[1] in result.reason
    assert registry.alias_version(CHAMPION) == v1


def test_no_champion_is_a_clear_error(mlflow_settings: Settings) -> None:
    registry = Registry(mlflow_settings)
    with pytest.raises(NoChampionError) as info:
        registry.load_bundle()
    msg = str(info.value)
    assert "no version of model 'cricket-test' has the alias 'champion'" in msg
    assert "run the nightly retrain first (cricket retrain)" in msg
    with pytest.raises(NoChampionError):
        registry.rollback()
    assert registry.list_versions() == []


def test_models_cli(
    mlflow_settings: Settings, good: ModelBundle, bad: ModelBundle, held_out: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cricket.cli import app

    monkeypatch.setenv("CRICKET_MLFLOW_TRACKING_URI", mlflow_settings.tracking_uri)
    monkeypatch.setenv("CRICKET_MODEL_NAME", mlflow_settings.model_name)
    monkeypatch.setenv("CRICKET_STATE_DIR", str(mlflow_settings.state_dir))
    runner = CliRunner()

    empty = runner.invoke(app, ["models", "list"])
    assert empty.exit_code == 0 and "run the nightly retrain first" in empty.output
    failed = runner.invoke(app, ["models", "rollback"])
    assert failed.exit_code == 1 and "has the alias 'champion'" in failed.output

    registry = Registry(mlflow_settings)
    v1 = add_version(registry, good, held_out)
    registry.evaluate_and_promote(v1, held_out)
    v2 = add_version(registry, bad, held_out)
    registry.evaluate_and_promote(v2, held_out)

    listing = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0, listing.output
    assert "champion" in listing.output and "challenger" in listing.output
    assert "rejected" in listing.output and "promoted" in listing.output

    promoted = runner.invoke(app, ["models", "promote", v2])
    assert promoted.exit_code == 0
    assert f"version {v2} of cricket-test is now the champion (was version {v1})" in promoted.output
    rolled = runner.invoke(app, ["models", "rollback"])
    assert rolled.exit_code == 0
    assert f"champion is version {v1} again (was version {v2})" in rolled.output
    missing = runner.invoke(app, ["models", "promote", "42"])
    assert missing.exit_code == 1 and "cricket models list" in missing.output


# --------------------------------------------------------------------- Prefect tasks
def test_retry_condition_skips_permanent_errors() -> None:
    from cricket.tasks.registry import retry_unless_permanent
    from prefect.states import Failed

    assert retry_unless_permanent(None, None, Failed(data=NoChampionError("none"))) is False
    assert retry_unless_permanent(None, None, Failed(data=ConnectionError("blip"))) is True


@pytest.mark.slow
def test_load_model_task_fails_fast_without_champion(
    mlflow_settings: Settings, prefect_api: None
) -> None:
    """Through a real Prefect API (the session's test harness from fixtures.pipeline)."""
    from cricket.tasks.registry import load_model
    from prefect import flow

    @flow
    def scoring() -> None:
        load_model(mlflow_settings)

    t0 = time.perf_counter()
    with pytest.raises(NoChampionError, match="run the nightly retrain first"):
        scoring()
    # no retries: their backoff (2 + 5 + 15 s, jitter at most halves it: >= 11 s)
    # would only delay an error that waiting cannot fix
    assert time.perf_counter() - t0 < 8.0


def test_a_missing_store_is_named_and_not_silently_created(tmp_path: Path) -> None:
    """A store that moved away must not read as an empty registry ('no champion'), and
    looking for the champion must not leave an empty database behind."""
    from cricket.registry import RegistryUnavailableError

    db = tmp_path / "moved" / "mlflow.db"
    settings = Settings(state_dir=tmp_path, mlflow_tracking_uri=f"sqlite:///{db}")
    with pytest.raises(RegistryUnavailableError, match="does not exist.*cricket retrain"):
        Registry(settings).load_bundle()
    assert not db.exists()
