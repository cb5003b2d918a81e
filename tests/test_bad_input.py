"""Bad input, end to end (issue 8): each test's name says the expected outcome. Every
failure must be an error that names the problem and the fix, never a bare library
traceback; no run may lose or corrupt stored data (the raw point count is checked).

Covered elsewhere and referenced from docs/reliability.md, not repeated here:
tests/test_influx_baddata.py (string fields, NaN/inf on write, duplicates in the
database, unknown database, server down at the source level), tests/test_model_bundle.py
(wrong/future format version, corrupted npz, pickle bombs), tests/test_influx_flux.py
(missing bucket on the Flux path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.pipeline import apply_env
from reliability_support import (
    END,
    SELECTOR,
    KillableInflux,
    Pipeline,
    fast_retries,
    pipeline_settings_for,
    raw_count,
    score_rows,
    tiny_pipeline,
)

from cricket.config import DetectorSpec
from cricket.influx.base import InfluxError
from cricket.influx.influxql import InfluxQLSink, InfluxQLSource
from cricket.scoring import score_series
from cricket.series import SeriesKey, prepare

pytestmark = pytest.mark.slow

W1 = END - pd.Timedelta(hours=1)
EXTRA = ["newcomer", "flat", "spiky", "short", "clockjump", "vanishing", "gappy", "outages"]
#: the "outages" host sends nothing for 8 steps from W1 + 20 min and 60 steps from W1 + 40 min
OUTAGES = ((W1 + pd.Timedelta(minutes=20), 8), (W1 + pd.Timedelta(minutes=40), 60))


def _key(host: str) -> SeriesKey:
    return SeriesKey.make("waveform", "value", {"host": host})


def _grid(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    return pd.date_range(start, end, freq="10s", inclusive="left")


def _write_extra_hosts(p: Pipeline) -> None:
    """Series the model never saw, each bad in its own way, around the last hour."""
    base = p.fleet.series[_key("cricket001")]
    ctx = W1 - pd.Timedelta(minutes=20)
    idx = _grid(ctx, END)
    with InfluxQLSink(p.settings) as sink:
        sink.write_series(_key("newcomer"), base[ctx:END - pd.Timedelta("1ns")] * 1.1 + 3)
        sink.write_series(_key("flat"), pd.Series(5.0, index=idx))
        spiky = pd.Series(7.0, index=idx)
        spiky[W1 + pd.Timedelta(minutes=30)] = 500.0
        sink.write_series(_key("spiky"), spiky)
        sink.write_series(_key("short"), pd.Series([1.0, 2.0, 3.0, 2.0, 1.0],
                                                   index=_grid(W1, W1 + pd.Timedelta("50s"))))
        # the clock jumped back 10 min at W1+30min: the next 10 min are written again
        first = base[W1 - pd.Timedelta(minutes=20):W1 + pd.Timedelta(minutes=30)]
        again = base[W1 + pd.Timedelta(minutes=20):END - pd.Timedelta("1ns")] + 1.0
        jumped = pd.concat([first, again])  # times go backwards in the middle
        sink.write_series(_key("clockjump"), jumped)
        sink.write_series(_key("vanishing"), base[W1 - pd.Timedelta(hours=3):W1 - pd.Timedelta(minutes=30)])
        # data stops 19 min before the window and resumes after it: a 1 h 19 min gap
        sink.write_series(_key("gappy"), base[ctx:W1 - pd.Timedelta(minutes=19)])
        outages = base[ctx:END - pd.Timedelta("1ns")] * 1.1 + 3
        for at, steps in OUTAGES:
            outages = outages.drop(_grid(at, at + steps * pd.Timedelta("10s")))
        sink.write_series(_key("outages"), outages)


@pytest.fixture(scope="module")
def trained(influx_server, tmp_path_factory, prefect_api) -> Pipeline:
    mp = pytest.MonkeyPatch()
    p = tiny_pipeline(pipeline_settings_for(influx_server, tmp_path_factory.mktemp("badin")), mp)
    _write_extra_hosts(p)
    yield p
    mp.undo()


@pytest.fixture
def pipe(trained: Pipeline, monkeypatch) -> Pipeline:
    apply_env(monkeypatch, trained.settings)
    fast_retries(monkeypatch)
    return trained


@pytest.fixture(scope="module")
def hour(trained) -> dict:
    """One hourly run over the last hour: model series plus every odd extra host."""
    from cricket.flows.score import hourly_score

    mp = pytest.MonkeyPatch()
    apply_env(mp, trained.settings)
    try:
        return hourly_score(selector=SELECTOR, at=END.to_pydatetime())
    finally:
        mp.undo()


def _rows(p: Pipeline, host: str) -> pd.DataFrame:
    with InfluxQLSource(p.settings) as src:
        return src.read_scores(_key(host), W1, END)


def cli(*args: str):  # noqa: ANN201
    from typer.testing import CliRunner

    from cricket.cli import app

    result = CliRunner().invoke(app, list(args))
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    text = " ".join(out.split())
    assert "Traceback" not in out, out
    # a crash would surface here as the exception itself rather than a clean exit
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    return result, text


# ---------------------------------------------------------------- data in the database


def test_brand_new_series_without_a_model_is_scored_by_the_fleet_library(pipe, hour):
    rows = _rows(pipe, "newcomer")
    assert len(rows) == 360 and rows["score"].notna().all()
    from cricket.registry import Registry

    bundle, _ = Registry(pipe.settings).load_bundle()
    assert bundle.detector_for(str(_key("newcomer")))[1] == "fleet"


def test_flat_line_is_scored_without_error(pipe, hour):
    rows = _rows(pipe, "flat")
    assert len(rows) == 360 and np.isfinite(rows["score"]).all()


def test_repeated_value_then_spike_raises_an_event_at_the_spike(pipe, hour):
    spike = W1 + pd.Timedelta(minutes=30)
    assert str(_key("spiky")) in hour["anomalous_series"]
    with InfluxQLSource(pipe.settings) as src:
        events = src.read_events(_key("spiky"), W1, END)
    # scoring is causal (trailing segments): the event may start a few steps later
    near = (events["start"] <= spike + pd.Timedelta(minutes=2)) & (events["end"] >= spike)
    assert near.any(), events


def test_series_shorter_than_a_segment_is_scored_or_skipped_without_crashing(pipe, hour):
    rows = _rows(pipe, "short")
    assert len(rows) <= 5  # never invents points
    assert hour["series"] == 3 + len(EXTRA)


def test_clock_jump_backwards_leaves_one_point_per_step_and_scores_the_window(pipe, hour):
    rows = _rows(pipe, "clockjump")
    assert len(rows) == 360 and rows.index.is_unique


def test_series_that_disappeared_is_noted_and_the_others_are_scored(pipe, hour):
    assert any("vanishing" in n and "no data" in n for n in hour["notes"]), hour["notes"]
    assert _rows(pipe, "vanishing").empty
    for host in ("cricket001", "cricket002", "cricket003"):
        assert len(_rows(pipe, host)) == 360


def test_gap_longer_than_the_window_is_noted_and_nothing_is_invented(pipe, hour):
    assert any("gappy" in n and "no data" in n for n in hour["notes"]), hour["notes"]
    assert _rows(pipe, "gappy").empty


def test_outages_get_no_score_and_the_data_after_them_is_scored_from_what_arrived(pipe, hour):
    rows = _rows(pipe, "outages")
    step = pd.Timedelta("10s")
    (a8, n8), (a60, n60) = OUTAGES
    missing = _grid(a8, a8 + n8 * step).union(_grid(a60, a60 + n60 * step))
    assert not rows.index.isin(missing).any()  # nothing invented for the missing steps
    assert rows["score"].notna().all() and not any("outages" in n for n in hour["notes"])
    # After the 60-step outage the short scale scores every step from 15 steps after it
    # on (once the data after it holds half of a segment's window weight), on that data
    # only; before segments over a gap were matched on their observed samples, the 31
    # steps after any outage had no score (rows are written only where there is one).
    after = _grid(a60 + n60 * step, a60 + (n60 + 32) * step)
    assert after[15:].isin(rows.index).all()
    # after the 8-step one, at most the few steps whose short segment misses the middle
    # of its window go unscored (6; 31 before)
    after = _grid(a8 + n8 * step, a8 + (n8 + 32) * step)
    assert after.isin(rows.index).sum() >= 32 - 8


def test_gap_longer_than_the_training_window_leaves_the_series_to_the_fleet_library(pipe):
    from cricket.training import train_series

    idx = _grid(W1 - pd.Timedelta(hours=4), W1)
    empty = pd.Series(np.nan, index=idx)
    res = train_series("x", empty, empty, DetectorSpec(n_clusters=4), min_points=100)
    assert res.detector is None and "fleet library" in res.reason


def test_nan_and_inf_in_a_series_score_as_gaps_with_finite_results(pipe):
    from cricket.registry import Registry

    bundle, _ = Registry(pipe.settings).load_bundle()
    s = pipe.fleet.series[_key("cricket001")][W1 - pd.Timedelta(minutes=10):END].copy()
    s.iloc[100] = np.nan
    s.iloc[200] = np.inf
    s.iloc[201] = -np.inf
    det, source = bundle.detector_for(str(_key("cricket001")))
    with pytest.warns(UserWarning, match="infinite"):
        res = score_series(_key("cricket001"), s, det, source, W1.to_pydatetime(), bundle.spec)
    assert np.isfinite(res.frame[["value", "score", "error"]].to_numpy()).all()
    assert s.index[200] not in res.frame.index and s.index[100] not in res.frame.index


def test_duplicate_and_unordered_timestamps_are_sorted_and_averaged(pipe):
    t = pd.DatetimeIndex(["2026-01-01T00:00:20Z", "2026-01-01T00:00:00Z",
                          "2026-01-01T00:00:10Z", "2026-01-01T00:00:10Z"])
    with pytest.warns(UserWarning, match="duplicate"):
        out = prepare(pd.Series([3.0, 1.0, 2.0, 4.0], index=t), DetectorSpec())
    assert out.index.is_monotonic_increasing and out.index.is_unique
    assert out.tolist() == [1.0, 3.0, 3.0]


def test_non_numeric_field_fails_the_score_naming_the_field_and_writes_nothing(pipe):
    with InfluxQLSink(pipe.settings) as sink:
        sink.write_points([f'strings,host=a value="up" {int(W1.value)}'])
    raw = raw_count(pipe.settings)
    result, text = cli("score", "--at", END.isoformat(), "--measurement", "strings")
    assert result.exit_code == 1 and "non-numeric" in text and "numeric field" in text
    with InfluxQLSource(pipe.settings) as src:
        assert src.read_scores(SeriesKey.make("strings", "value", {"host": "a"}), W1, END).empty
    assert raw_count(pipe.settings) == raw


# ---------------------------------------------------------------- selectors and ranges


def test_selector_matching_nothing_fails_retrain_with_a_clear_message(pipe):
    result, text = cli("retrain", "--measurement", "no_such_metric", "--end", W1.isoformat())
    # a misspelt measurement is named, with the ones that exist
    assert result.exit_code == 1 and "'no_such_metric' does not exist" in text
    assert "waveform" in text and "--measurement" in text
    result, text = cli("retrain", "--tag", "host=no_such_host", "--end", W1.isoformat())
    assert result.exit_code == 1 and "matched no series" in text and "selector" in text


def test_selector_matching_nothing_scores_nothing_and_says_so(pipe):
    # a measurement that does not exist is refused (tests/test_selector_checks.py); a tag
    # filter whose value matches no series scores nothing and says so
    result, text = cli("score", "--at", END.isoformat(), "--tag", "host=no_such_host",
                       "--json")
    assert result.exit_code == 0, text
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["scored"] == 0 and summary["points_written"] == 0
    assert any("nothing to score" in n for n in summary["notes"])


def test_backfill_start_after_end_is_refused_naming_both_times(pipe):
    raw = raw_count(pipe.settings)
    result, text = cli("backfill", "--start", END.isoformat(), "--end", W1.isoformat())
    assert result.exit_code == 1 and "is not before end" in text and "swap" in text
    assert raw_count(pipe.settings) == raw


def test_backfill_in_the_future_is_refused(pipe):
    future = pd.Timestamp.now(tz="UTC").ceil("h") + pd.Timedelta(days=3)
    result, text = cli("backfill", "--start", future.isoformat(),
                       "--end", (future + pd.Timedelta(hours=2)).isoformat())
    assert result.exit_code == 1 and "in the future" in text


def test_score_window_in_the_future_is_refused(pipe):
    future = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=3)
    result, text = cli("score", "--at", future.isoformat())
    assert result.exit_code == 1 and "in the future" in text and "at or before now" in text


def test_unreadable_time_is_refused_with_an_example(pipe):
    result, text = cli("score", "--at", "yesterday-ish")
    assert result.exit_code == 1 and "cannot read" in text and "2026-11-24T10:00" in text


def test_unreadable_duration_is_refused_with_examples(pipe):
    result, text = cli("score", "--at", END.isoformat(), "--every", "10parsecs")
    assert result.exit_code == 1 and "duration" in text and "'10s'" in text


def test_tag_filter_without_equals_is_refused(pipe):
    result, text = cli("score", "--at", END.isoformat(), "--tag", "host")
    assert result.exit_code == 1 and "KEY=VALUE" in text


def test_odd_segment_length_is_refused_before_any_work(pipe):
    result, text = cli("retrain", "--segment-len", "31")
    assert result.exit_code == 1 and "--segment-len must be even" in text


def test_holdout_not_shorter_than_the_training_window_is_refused(pipe):
    result, text = cli("retrain", "--train-window", "1h", "--holdout", "2h",
                       "--end", W1.isoformat())
    assert result.exit_code == 1 and "must be shorter than --train-window" in text


def test_unknown_model_version_names_the_command_that_lists_versions(pipe):
    result, text = cli("score", "--at", END.isoformat(), "--version", "999")
    assert result.exit_code == 1 and "no version '999'" in text and "cricket models list" in text


# ---------------------------------------------------------------- the model artifact


def _bundle_dir(p: Pipeline) -> Path:
    from cricket.registry import Registry

    reg = Registry(p.settings)
    uri = reg.client.get_model_version_download_uri(reg.name, p.version)
    root = Path(uri.removeprefix("file://"))
    found = [x.parent for x in root.rglob("bundle.json")] or [x.parent for x in root.rglob("*.json")]
    assert found, f"no bundle under {root}"
    return found[0]


def test_future_model_format_in_the_registry_is_refused_with_retrain_advice(pipe):
    d = _bundle_dir(pipe)
    path = next(d.glob("*.json"))
    saved = path.read_text()
    doc = json.loads(saved)
    doc["format_version"] = 99
    path.write_text(json.dumps(doc))
    raw = raw_count(pipe.settings)
    try:
        result, text = cli("score", "--at", (W1 - pd.Timedelta(hours=2)).isoformat())
    finally:
        path.write_text(saved)
    assert result.exit_code == 1 and "99" in text and "retrain" in text.lower()
    assert raw_count(pipe.settings) == raw
    assert score_rows(pipe.settings, W1 - pd.Timedelta(hours=3), W1 - pd.Timedelta(hours=2)).empty


def test_corrupted_model_artifact_in_the_registry_is_refused_and_nothing_is_written(pipe):
    d = _bundle_dir(pipe)
    arrays = sorted(d.glob("*.npz"))
    assert arrays, list(d.iterdir())
    saved = arrays[0].read_bytes()
    arrays[0].write_bytes(saved[: len(saved) // 3])
    try:
        result, text = cli("score", "--at", (W1 - pd.Timedelta(hours=2)).isoformat())
    finally:
        arrays[0].write_bytes(saved)
    assert result.exit_code == 1 and "retrain" in text.lower(), text
    assert score_rows(pipe.settings, W1 - pd.Timedelta(hours=3), W1 - pd.Timedelta(hours=2)).empty


# ---------------------------------------------------------------- settings


def test_unreachable_url_fails_naming_the_url_and_how_to_start_a_server(pipe, monkeypatch):
    from cricket.influx.server import find_free_port

    url = f"http://127.0.0.1:{find_free_port()}"
    monkeypatch.setenv("CRICKET_INFLUX_URL", url)
    monkeypatch.setenv("CRICKET_INFLUX_TIMEOUT_S", "2")
    result, text = cli("score", "--at", END.isoformat())
    assert result.exit_code == 1 and url in text and "attempts" in text
    assert "cricket influx start" in text or "CRICKET_INFLUX_URL" in text


def test_database_that_does_not_exist_fails_naming_it_and_the_fix(pipe, monkeypatch):
    monkeypatch.setenv("CRICKET_INFLUX_DATABASE", "no_such_db")
    result, text = cli("score", "--at", END.isoformat())
    assert result.exit_code == 1 and "'no_such_db' does not exist" in text
    assert "CREATE DATABASE" in text


def test_a_setting_that_cannot_be_used_is_one_line_naming_the_variable(tmp_path):
    """Through the installed ``cricket`` command (the entry point, not the test runner):
    any command, not only the flows, says which variable is wrong and never its value."""
    env = {**os.environ, "CRICKET_STATE_DIR": str(tmp_path), "CRICKET_MODEL_CACHE_VERSIONS": "-1",
           "CRICKET_INFLUX_TIMEOUT_S": "soon", "CRICKET_INFLUX_PASSWORD": "right-horse-battery"}
    cricket = Path(sys.executable).with_name("cricket")
    done = subprocess.run([str(cricket), "models", "list"], env=env, capture_output=True,
                          text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in out, out
    assert len(out.strip().splitlines()) == 1, out
    assert "CRICKET_MODEL_CACHE_VERSIONS" in out and "CRICKET_INFLUX_TIMEOUT_S" in out
    assert "cricket.toml" in out and "right-horse-battery" not in out and "soon" not in out


def test_flux_source_without_a_token_is_refused_naming_the_setting(pipe, monkeypatch):
    monkeypatch.setenv("CRICKET_INFLUX_SOURCE", "flux")
    monkeypatch.delenv("CRICKET_INFLUX_TOKEN", raising=False)
    result, text = cli("score", "--at", END.isoformat())
    assert result.exit_code == 1 and "CRICKET_INFLUX_TOKEN" in text


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    srv = KillableInflux(tmp_path_factory.mktemp("auth-influx"), auth=True)
    srv.start(timeout=60)
    import httpx

    r = httpx.post(f"{srv.url}/query", params={
        "q": "CREATE USER admin WITH PASSWORD 'right-horse-battery' WITH ALL PRIVILEGES"})
    assert r.status_code == 200, r.text
    yield srv
    srv.stop()


def test_wrong_password_is_refused_naming_the_settings_to_check(pipe, auth_server):
    from pydantic import SecretStr

    bad = pipe.settings.model_copy(update={
        "influx_url": auth_server.url, "influx_username": "admin",
        "influx_password": SecretStr("wrong-pw-SENTINEL-42")})
    with InfluxQLSource(bad) as src, pytest.raises(InfluxError) as info:
        src.discover(SELECTOR)
    text = str(info.value)
    assert "refused the credentials" in text and "CRICKET_INFLUX_USERNAME/PASSWORD" in text
    assert "SENTINEL" not in text
    good = bad.model_copy(update={"influx_password": SecretStr("right-horse-battery")})
    with InfluxQLSource(good) as src:  # accepted with the right password
        assert src.client.query("SHOW DATABASES") is not None


def test_missing_credentials_on_a_server_with_auth_are_refused(pipe, auth_server):
    bare = pipe.settings.model_copy(update={"influx_url": auth_server.url})
    with InfluxQLSource(bare) as src, pytest.raises(InfluxError, match="refused the credentials"):
        src.discover(SELECTOR)


def test_none_of_the_bad_inputs_changed_the_stored_raw_data(pipe, hour):
    """Runs last in this module: the raw series are exactly what was written."""
    with InfluxQLSource(pipe.settings) as src:
        got = src.read(SELECTOR.model_copy(update={"tags": {"host": "cricket002"}}),
                       END - pd.Timedelta(hours=6), END)
    np.testing.assert_allclose(got[_key("cricket002")].to_numpy(),
                               pipe.fleet.series[_key("cricket002")].to_numpy())
