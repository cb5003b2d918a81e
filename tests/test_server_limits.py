"""Server limits (issue 17): long reads on a server without a row limit are not taken for
truncation, and on a server with a real ``max-row-limit`` smaller than the fleet, series
discovery and reads still see everything and the pipeline completes."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from fixtures.pipeline import apply_env
from hostile_support import SPEC, write_clean
from reliability_support import KillableInflux, pipeline_settings_for

from cricket.config import SeriesSelector
from cricket.influx.influxql import InfluxQLClient, InfluxQLSink, InfluxQLSource
from cricket.series import SeriesKey

ROW_LIMIT = 40


class LimitedInflux(KillableInflux):
    """An influxd of the test's own whose plain answers stop at ``ROW_LIMIT`` rows."""

    def config_text(self) -> str:
        text = super().config_text()
        assert "max-row-limit = 0" in text
        return text.replace("max-row-limit = 0", f"max-row-limit = {ROW_LIMIT}")


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    server = LimitedInflux(tmp_path_factory.mktemp("limited-influxd"))
    server.start(timeout=60)
    yield server
    server.stop()


def test_a_long_read_at_one_second_on_a_server_without_a_row_limit_comes_back_whole(influx_settings):
    """12 h at 1 s is 43,200 rows in one answer: InfluxDB 1.x marks such a series
    ``partial`` in a plain answer although nothing is missing; read it whole."""
    key = SeriesKey.make("waveform", "value", {"host": "a"})
    idx = pd.date_range("2026-11-19T00:00Z", periods=12 * 3600, freq="1s")
    values = np.sin(np.arange(len(idx)) / 10.0)
    with InfluxQLSink(influx_settings) as sink:
        sink.write_series(key, pd.Series(values, index=idx))
    selector = SeriesSelector(measurement="waveform", field="value", group_by=["host"], every="1s")
    with InfluxQLSource(influx_settings) as src:
        got = src.read(selector, idx[0], idx[-1] + pd.Timedelta("1s"))
    assert np.array_equal(got[key].to_numpy(), values)
    # the same with GROUP BY time buckets (two points per 1 s bucket)
    with InfluxQLSink(influx_settings) as sink:
        sink.write_series(key, pd.Series(values, index=idx + pd.Timedelta("500ms")))
    with InfluxQLSource(influx_settings) as src:
        got = src.read(selector, idx[0], idx[-1] + pd.Timedelta("1s"))
    assert len(got[key]) == len(idx) and np.isfinite(got[key]).all()


def test_a_fleet_larger_than_the_servers_row_limit_is_discovered_read_and_scored(
    limited, tmp_path, monkeypatch, prefect_api
):
    from cricket.flows.retrain import nightly_retrain
    from cricket.flows.score import hourly_score

    settings = pipeline_settings_for(limited, tmp_path, batch_size=25)
    apply_env(monkeypatch, settings)
    # the server really cuts plain answers at the limit
    keys = [SeriesKey.make("waveform", "value", {"host": f"h{i:03d}"}) for i in range(60)]
    end = pd.Timestamp("2026-11-20T00:00Z")
    write_clean(settings, keys, hours=3, end=end)
    import httpx

    r = httpx.get(f"{settings.influx_url}/query",
                  params={"db": settings.influx_database, "q": 'SHOW SERIES FROM "waveform"'})
    assert len(r.json()["results"][0]["series"][0]["values"]) == ROW_LIMIT
    selector = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
    with InfluxQLSource(settings) as src:
        src.page = 25  # pages smaller than the fleet
        assert src.discover(selector) == sorted(keys)
        data = src.read(selector, end - pd.Timedelta(hours=3), end)
    assert len(data) == 60 and all(s.notna().sum() == 1080 for s in data.values())
    trained = nightly_retrain(selector=selector, spec=SPEC, train_window=timedelta(hours=2),
                              holdout=timedelta(minutes=45),
                              end=(end - pd.Timedelta(hours=1)).to_pydatetime(),
                              min_history_points=200)
    assert trained["series"] == 60 and trained["series_models"] == 60
    summary = hourly_score(selector=selector, at=end.to_pydatetime())
    assert summary["scored"] == 60 and summary["points_written"] >= 60 * 360
    with InfluxQLClient(settings) as c:
        n = c.query('SELECT count("score") FROM "cricket_score"', database=settings.score_database)
    assert n[0]["values"][0][1] == 60 * 360
