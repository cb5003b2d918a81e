"""Hostile input (issue 8): injection through every user-controlled name is matched
literally or refused, never executed.

Already covered, referenced from docs/reliability.md and not repeated here:
tests/test_influx_baddata.py (tag values, measurement, field, tag keys and group-by
names against the real influxd, newline and ambiguous-backslash refusal),
tests/test_influx_flux.py (tag values travel as Flux params, hostile tag keys refused),
tests/test_report_browser.py (a hostile series tag renders as text in Chromium),
tests/test_model_bundle.py (pickle bombs refused without running).

The Flux path here is checked on the generated query text and its params only: no
InfluxDB 2.x server can run in this environment.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from cricket.config import DetectorSpec, SeriesSelector
from cricket.influx.base import InfluxError
from cricket.influx.influxql import InfluxQLClient, InfluxQLSink, InfluxQLSource
from cricket.series import SeriesKey

PAYLOADS = [
    "x' OR 1=1 --",
    'x" OR "1"="1',
    "x; DROP DATABASE victim",
    '") |> drop(columns: ["_value"]) |> yield(name: "x',
    "params.bucket",
    "${env.HOME}",
    "x\\\"; DROP MEASUREMENT waveform; --",
    "../../../../tmp/escaped",
    "<img src=x onerror=alert(1)>",
]
T0 = pd.Timestamp("2024-01-01T00:00:00Z")


def _s(n: int, v: float = 1.0) -> pd.Series:
    return pd.Series(np.full(n, v), index=pd.date_range(T0, periods=n, freq="10s"))


@pytest.mark.parametrize("name", PAYLOADS)
def test_hostile_database_name_is_created_and_used_literally(influx_settings, name):
    victim = influx_settings  # holds a point that must survive
    key = SeriesKey.make("waveform", "value", {"host": "a"})
    with InfluxQLSink(victim) as sink:
        sink.write_series(key, _s(3, 7.0))
    hostile = victim.model_copy(update={"influx_database": name})
    with InfluxQLClient(hostile) as c:
        try:
            c.ensure_database(name)
        except InfluxError as exc:  # influxd refuses names with / or \: refused, fine
            assert "invalid name" in str(exc) and repr(name) in str(exc)
        else:
            try:
                with InfluxQLSink(hostile) as sink:
                    sink.write_series(key, _s(2, 1.0))
                with InfluxQLSource(hostile) as src:
                    got = src.read(SeriesSelector(), T0, T0 + pd.Timedelta("1min"))
                assert got[key].dropna().tolist() == [1.0, 1.0]
                dbs = {row[0] for s in c.query("SHOW DATABASES") for row in s["values"]}
                assert name in dbs and victim.influx_database in dbs
            finally:
                c.drop_database(name)
    with InfluxQLSource(victim) as src:
        assert src.read(SeriesSelector(), T0, T0 + pd.Timedelta("1min"))[key].dropna().tolist() == [7.0] * 3


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_model_version_and_series_tags_in_results_match_literally(influx_settings, payload):
    key = SeriesKey.make("waveform", "value", {"host": payload})
    frame = pd.DataFrame({"value": [1.0, 2.0], "reconstruction": [1.0, 2.0],
                          "error": [0.0, 0.0], "score": [1.0, 2.0], "anomalous": [False, True]},
                         index=pd.date_range(T0, periods=2, freq="10s"))
    with InfluxQLSink(influx_settings) as sink:
        assert sink.write_scores(key, frame, payload) == 2
        sink.write_scores(SeriesKey.make("waveform", "value", {"host": "b"}), frame, "1")
    with InfluxQLSource(influx_settings) as src:
        rows = src.read_scores(key, T0, T0 + pd.Timedelta("1min"), model_version=payload)
        other = src.read_scores(SeriesKey.make("waveform", "value", {"host": "b"}), T0,
                                T0 + pd.Timedelta("1min"))
    assert len(rows) == 2 and set(rows["model_version"]) == {payload}
    assert set(rows["host"]) == {payload} and len(other) == 2


def test_hostile_selector_names_through_the_flux_source_stay_in_params(tmp_path):
    """Measurement, field, tag values and bucket go to the Flux request as params; tag
    keys that are not plain names are refused. (Query text only: no 2.x server here.)"""
    from fixtures.influx import settings_for

    from cricket.influx.flux import FluxSource

    class _Fake:
        url = "http://127.0.0.1:9"

    plain_text = None
    for payload in ["plain", *PAYLOADS]:
        settings = settings_for(_Fake(), "db", tmp_path, influx_source="flux",
                                influx_bucket=payload, influx_org="o",
                                influx_token=SecretStr("t"))
        src = FluxSource(settings)
        try:
            sel = SeriesSelector(measurement=payload, field=payload, tags={"host": payload},
                                 group_by=["host"])
            q, params = src.build_query(sel, T0, T0 + pd.Timedelta("1h"))
            plain_text = plain_text or q
            assert q == plain_text, (payload, q)  # the text never depends on the values
            assert params["bucket"] == payload and params["measurement"] == payload
            assert params["field"] == payload and params["tag0"] == payload
            plain_name = re.fullmatch(r"[A-Za-z0-9_.\-]+", payload) is not None
            for bad_key in ["_measurement"] + ([] if plain_name else [payload]):
                with pytest.raises(InfluxError, match="plain"):
                    src.build_query(SeriesSelector(group_by=[bad_key]), T0,
                                    T0 + pd.Timedelta("1h"))
        finally:
            src.close()


def _tiny_bundle():
    from cricket.detector import WaveformDetector
    from cricket.model import ModelBundle

    spec = DetectorSpec(segment_len=8, n_clusters=4, threshold_quantile=0.99)
    x = np.sin(np.arange(600) * 2 * np.pi / 16)
    det = WaveformDetector(spec).fit(x[:480], holdout=x[480:])
    return ModelBundle(detectors={"waveform.value{host=a}": det}, fleet=None, spec=spec,
                       selector=SeriesSelector(), trained_from=datetime(2024, 1, 1, tzinfo=UTC),
                       trained_to=datetime(2024, 1, 2, tzinfo=UTC))


@pytest.mark.parametrize("payload", [
    "x'; DROP TABLE registered_models; --",
    "../../../../tmp/cricket-escaped-model",
    '<img src=x onerror=alert(1)>',
])
def test_hostile_model_name_is_stored_literally_or_refused_and_touches_no_other_model(
    mlflow_settings, payload, tmp_path
):
    from mlflow.exceptions import MlflowException

    from cricket.registry import Registry

    bundle = _tiny_bundle()
    good = Registry(mlflow_settings)
    v_good = good.register(good.log_training_run(bundle))
    hostile = Registry(mlflow_settings.model_copy(update={"model_name": payload}))
    try:
        version = hostile.register(hostile.log_training_run(bundle))
    except (MlflowException, ValueError) as exc:  # refused: fine, as long as nothing broke
        assert payload not in {m.name for m in good.client.search_registered_models()}
        assert "Traceback" not in str(exc)
    else:
        names = {m.name for m in good.client.search_registered_models()}
        assert payload in names and mlflow_settings.model_name in names
        assert hostile.load_bundle(version=version)[0].series_keys == bundle.series_keys
    assert good.load_bundle(version=v_good)[0].series_keys == bundle.series_keys
    assert not Path("/tmp/cricket-escaped-model").exists()
    state = Path(mlflow_settings.state_dir).resolve()
    outside = [p for p in state.parent.rglob("*") if p.is_file()
               and not p.resolve().is_relative_to(state.parent)]
    assert outside == []


def test_hostile_model_name_in_the_report_is_escaped(tmp_path):
    from cricket.report import Report, render_html

    rep = Report(title="t", kind="score", window_start=T0, window_end=T0 + pd.Timedelta("1h"),
                 model_name="<script>window.__pwned=1</script>", model_version="<b>1</b>",
                 results=[], notes=["<img src=x onerror=alert(1)>"])
    html = render_html(rep)
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.slow
def test_hostile_selector_from_the_cli_matches_nothing_and_runs_nothing(pipeline_settings):
    """A tag filter or measurement carrying InfluxQL is a literal name: it matches no
    series (the real ones are untouched), and the retrain says the selector matched
    nothing."""
    from cricket.synth import make_fleet, write_fleet

    fleet = make_fleet(hosts=2, days=0.05, start=T0, seed=1, anomalies=False)
    written = write_fleet(fleet, pipeline_settings)
    from cricket.flows.retrain import nightly_retrain

    from cricket.cli.common import selector_options
    from cricket.errors import CricketError

    for measurement, tags in (("waveform", ["host=x' OR 1=1 --"]), ("waveform", ['host=" OR ""="']),
                              ('waveform" WHERE 1=1; DROP DATABASE x; --', None)):
        selector = selector_options(measurement, "value", "host", tags, "10s")  # as the CLI does
        with pytest.raises((ValueError, CricketError), match="matched no series|does not exist"):
            nightly_retrain(selector=selector, end=T0 + pd.Timedelta("1h"))
    with InfluxQLClient(pipeline_settings) as c:
        n = c.query('SELECT count("value") FROM "waveform"')[0]["values"][0][1]
    assert n == written
    assert json.dumps(written)
