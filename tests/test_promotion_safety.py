"""Promotion that must refuse, and damaged models (issue 17): a version with no
per-series model, a version trained on other series, and a damaged bundle never become
champion, and a damaged champion is refused with one line instead of being scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.pipeline import apply_env
from hostile_support import TRAIN_END, retrain, write_clean
from reliability_support import pipeline_settings_for
from test_bad_input import cli

from cricket.config import SeriesSelector
from cricket.influx.influxql import InfluxQLSource
from cricket.series import SeriesKey

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
OTHER = SeriesSelector(measurement="other", field="value", group_by=["host"])
HOSTS = ("a", "b")
AT = TRAIN_END + pd.Timedelta(hours=1)


@pytest.fixture(scope="module")
def base(influx_server, tmp_path_factory, prefect_api):
    mp = pytest.MonkeyPatch()
    settings = pipeline_settings_for(influx_server, tmp_path_factory.mktemp("promo"))
    apply_env(mp, settings)
    write_clean(settings, [SeriesKey.make("waveform", "value", {"host": h}) for h in HOSTS])
    write_clean(settings, [SeriesKey.make("other", "value", {"host": h}) for h in ("x", "y")])
    first = retrain(SELECTOR)
    assert first["promoted"] and first["series_models"] == 2
    yield settings, first["model_version"]
    mp.undo()


@pytest.fixture
def env(base, monkeypatch):
    settings, champion = base
    apply_env(monkeypatch, settings)
    return settings, champion


def _champion(settings) -> str:
    from cricket.registry import Registry

    return Registry(settings).alias_version("champion")


def _bundle_dir(settings, version: str) -> Path:
    from cricket.registry import Registry

    reg = Registry(settings)
    root = Path(reg.client.get_model_version_download_uri(reg.name, version).removeprefix("file://"))
    return next(root.rglob("bundle.json")).parent


def _one_line_error(text: str, version: str) -> None:
    assert "Traceback" not in text and f"version {version}" in text, text


def test_zero_holdout_is_refused_and_a_version_without_series_models_is_not_promoted(env):
    settings, champion = env
    result, text = cli("retrain", "--holdout", "0s", "--end", TRAIN_END.isoformat(),
                       "--train-window", "4h")
    assert result.exit_code == 1 and "holdout" in text and "too short" in text, text
    assert _champion(settings) == champion
    # every series too short for a model of its own: a fleet-only version
    fleet_only = retrain(SELECTOR, min_history_points=10**9)
    assert fleet_only["series_models"] == 0 and not fleet_only["promoted"]
    assert "0 per-series models" in fleet_only["decision"]
    assert _champion(settings) == champion
    result, text = cli("models", "promote", fleet_only["model_version"])
    assert result.exit_code == 1 and "0 per-series models" in text
    assert _champion(settings) == champion


def test_a_version_trained_on_other_series_is_not_promoted(env):
    settings, champion = env
    other = retrain(OTHER)
    assert other["series_models"] == 2 and not other["promoted"], other
    assert "covers none of the champion's 2 series" in other["decision"]
    assert _champion(settings) == champion


@pytest.mark.parametrize("damage", ["nan-threshold", "nan-centroids", "deleted-folder"])
def test_a_damaged_bundle_is_refused_on_promote_and_on_load(env, damage):
    settings, champion = env
    victim = retrain(SELECTOR, end=TRAIN_END - pd.Timedelta(minutes=30))["model_version"]
    from cricket.registry import Registry

    Registry(settings).promote(victim)  # sound: the hand promotion works
    folder = _bundle_dir(settings, victim)
    if damage == "nan-threshold":
        doc = json.loads((folder / "bundle.json").read_text())
        doc["detectors"][0]["meta"]["threshold"] = float("nan")
        (folder / "bundle.json").write_text(json.dumps(doc))
    elif damage == "nan-centroids":
        with np.load(folder / "arrays.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        name = next(k for k in arrays if k.endswith("centroids"))
        arrays[name] = np.full_like(arrays[name], np.nan)
        with open(folder / "arrays.npz", "wb") as fh:
            np.savez_compressed(fh, **arrays)
    else:
        shutil.rmtree(folder)
    try:
        # the damaged champion is refused by the next run, which writes nothing
        result, text = cli("score", "--at", AT.isoformat())
        assert result.exit_code == 1, text
        _one_line_error(text, victim)
        with InfluxQLSource(settings) as src:
            assert src.read_scores(SELECTOR, TRAIN_END, AT, model_version=victim).empty
        # and a person cannot promote it again either
        Registry(settings).promote(champion)
        result, text = cli("models", "promote", victim)
        assert result.exit_code == 1, text
        _one_line_error(text, victim)
        assert _champion(settings) == champion
    finally:
        Registry(settings).client.set_registered_model_alias(Registry(settings).name, "champion",
                                                             champion)
