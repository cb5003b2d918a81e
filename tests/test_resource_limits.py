"""Resource limits (issue 17): extreme but legal parameters end in a one-line refusal
before any work, very long tag values and odd characters in paths run through, and a
report folder that cannot be created fails before any score is written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.pipeline import apply_env
from hostile_support import END, TRAIN_END, retrain, write_clean
from reliability_support import pipeline_settings_for
from test_bad_input import cli

from cricket.config import SeriesSelector
from cricket.influx.influxql import InfluxQLSource
from cricket.limits import MAX_CHUNKS, MAX_STEPS_PER_SERIES
from cricket.series import SeriesKey

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
AT = TRAIN_END + pd.Timedelta(hours=1)
#: a 40 kB tag value: its series fits InfluxDB's 64 kB key, its results' key (the value
#: twice: tag and ``series`` tag) does not
HUGE = "h" * 40_000
LONG = "l" * 12_000
KEYS = [SeriesKey.make("waveform", "value", {"host": h}) for h in ("a", LONG, HUGE)]


@pytest.fixture(scope="module")
def odd(influx_server, tmp_path_factory, prefect_api):
    """A trained model whose state, MLflow store and reports live under a folder with
    spaces, unicode and shell/URL characters in its name."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("limits") / "odd dir ü ☃ #&' %20"
    root.mkdir()
    settings = pipeline_settings_for(influx_server, root, state_dir=root / "state")
    apply_env(mp, settings)
    write_clean(settings, KEYS)
    trained = retrain(SELECTOR)
    yield settings, trained
    mp.undo()


@pytest.fixture
def env(odd, monkeypatch):
    apply_env(monkeypatch, odd[0])
    return odd


def _scores(settings) -> pd.DataFrame:
    with InfluxQLSource(settings) as src:
        return src.read_scores(SELECTOR, TRAIN_END, END)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["retrain", "--every", "1ms", "--train-window", "7d", "--holdout", "1d"], "points per series"),
        (["score", "--every", "1ms", "--window", "1d", "--at", AT.isoformat()], "points per series"),
        (["backfill", "--start", "2025-01-01T00:00", "--end", "2026-01-01T00:00", "--chunk", "1s",
          "--every", "1s"], "chunks"),
        (["backfill", "--start", TRAIN_END.isoformat(), "--end", AT.isoformat(), "--chunk", "1ms"],
         "shorter than one step"),
    ],
)
def test_extreme_steps_windows_and_chunks_are_refused_in_one_line_before_any_work(env, args, says):
    settings, _ = env
    before = _scores(settings)
    result, text = cli(*args)
    assert result.exit_code == 1 and says in text, text
    assert "Traceback" not in text and text.startswith("error:")
    assert len(_scores(settings)) == len(before)
    assert MAX_STEPS_PER_SERIES and MAX_CHUNKS  # the documented bounds exist


def test_long_tag_values_and_odd_paths_are_scored_or_skipped_with_a_note(env):
    settings, trained = env
    assert trained["series"] == 3 and "☃" in str(settings.tracking_uri)
    result, text = cli("score", "--at", AT.isoformat())
    assert result.exit_code == 0 and "1 series skipped" in text, text
    rows = _scores(settings)
    assert set(rows["host"]) == {"a", LONG}  # the 12 kB value read (POST) and written
    assert np.isfinite(rows["score"]).all()
    reports = list((settings.reports_path).glob("score-*.html"))
    assert reports and "☃" in str(reports[0])


def test_a_report_folder_that_cannot_be_created_fails_before_any_score_is_written(env, tmp_path,
                                                                                   monkeypatch):
    settings, _ = env
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CRICKET_REPORT_DIR", str(blocker / "reports"))
    before = len(_scores(settings))
    for args in (["score", "--at", (AT + pd.Timedelta(hours=1)).isoformat()],
                 ["backfill", "--start", AT.isoformat(), "--end", END.isoformat()]):
        result, text = cli(*args)
        assert result.exit_code == 1 and "cannot write reports" in text, text
        assert str(blocker) in text and "CRICKET_REPORT_DIR" in text
    assert len(_scores(settings)) == before


@pytest.mark.parametrize("magnitude", [1e-300, 1e300, 1e308])
def test_extreme_magnitudes_score_finite_find_the_anomaly_and_render_a_report(magnitude):
    from cricket.config import DetectorSpec
    from cricket.detector import WaveformDetector
    from cricket.report import Report, render_html
    from cricket.scoring import score_series

    spec = DetectorSpec(n_clusters=8, segment_len=16)
    x = np.sin(np.arange(6000) / 10) + 0.1 * np.random.default_rng(0).normal(size=6000)
    y = x * magnitude
    det = WaveformDetector(spec).fit(y[:4000], holdout=y[4000:4600])
    z = y[4600:].copy()
    z[1000:1010] *= 1.5
    idx = pd.date_range("2026-01-01", periods=len(z), freq="10s", tz="UTC")
    r = score_series("m.f{h=a}", pd.Series(z, index=idx), det, "series",
                     idx[200].to_pydatetime(), spec)
    assert np.isfinite(r.frame["score"]).all()
    assert any(e.start <= idx[1010] and e.end >= idx[1000] for e in r.events.itertuples())
    html = render_html(Report(title="t", kind="score", window_start=idx[200].to_pydatetime(),
                              window_end=idx[-1].to_pydatetime(), model_name="m",
                              model_version="1", results=[r], notes=[]))
    assert "<html" in html.lower()
