"""Champion and challenger through the real retrain flow (real influxd, Prefect test
harness, MLflow SQLite): a version trained on corrupted data is not promoted, a person
can promote it anyway, and rollback gives the champion back."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from cricket.config import DetectorSpec, SeriesSelector
from cricket.influx.influxql import InfluxQLSink
from cricket.registry import Registry
from cricket.synth import make_fleet, write_fleet

pytestmark = pytest.mark.slow

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
SPEC = DetectorSpec(n_clusters=48)
END = pd.Timestamp("2026-11-10T00:00:00Z")


def retrain():
    from cricket.flows.retrain import nightly_retrain

    return nightly_retrain(
        selector=SELECTOR, spec=SPEC, train_window=timedelta(hours=30),
        holdout=timedelta(hours=6), end=END.to_pydatetime(), min_history_points=500,
    )


def test_a_challenger_trained_on_corrupted_data_is_not_promoted_and_rollback_works(
    pipeline_settings,
):
    settings = pipeline_settings
    fleet = make_fleet(hosts=3, days=1.25, step="10s", start=END - pd.Timedelta(hours=30),
                       seed=5, anomalies=False)
    write_fleet(fleet, settings)
    first = retrain()
    assert first["promoted"] is True
    v1 = first["model_version"]

    # A broken collector: the training window (not the held-out tail) turns to loud noise.
    rng = np.random.default_rng(0)
    cut = END - pd.Timedelta(hours=6)
    with InfluxQLSink(settings) as sink:
        for key, s in fleet.series.items():
            train = s[s.index < cut]
            spread = float(train.max() - train.min())
            noisy = pd.Series(rng.normal(0, 3 * spread, len(train)) + float(train.mean()),
                              index=train.index)
            sink.write_series(key, noisy)
    second = retrain()
    v2 = second["model_version"]
    assert v2 != v1
    assert second["promoted"] is False, second["decision"]
    assert "not promoted" in second["decision"]
    # the champion was evaluated batch by batch in the flow: the same numbers as the
    # whole bundle scoring each held-out tail in turn
    from cricket.influx.influxql import InfluxQLSource
    from cricket.promotion import evaluate_bundle
    from cricket.series import prepare
    from cricket.training import split_holdout

    with InfluxQLSource(settings) as src:
        held = src.read(SELECTOR, cut, END)
    tails = {str(k): split_holdout(prepare(v, SPEC))[1] for k, v in held.items()}
    champ_bundle, _ = Registry(settings).load_bundle(version=v1)
    want = evaluate_bundle(champ_bundle, tails)
    assert f"vs champion {want.rate(want.covered):.4%}" in second["decision"]

    registry = Registry(settings)
    assert registry.alias_version("champion") == v1
    assert registry.alias_version("challenger") == v2
    tags = registry.client.get_model_version(settings.model_name, v2).tags
    assert tags.get("decision") == "rejected" and tags.get("decision_reason")

    registry.promote(v2, reason="test override")
    assert registry.alias_version("champion") == v2
    registry.rollback()
    assert registry.alias_version("champion") == v1
