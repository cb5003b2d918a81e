"""Publishing against the real services: a real InfluxDB (scores and events written,
re-publishing duplicates nothing) and a real Prefect API (table, markdown and link
artifacts; no secret in any of them or in the report)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cricket.tasks.publish import _artifact_key, publish_results
from fixtures.report_data import HOSTILE_KEY, HOSTILE_TAG, START, fleet_report
from prefect import flow

from cricket.config import Settings
from cricket.influx.influxql import InfluxQLSource
from cricket.series import SeriesKey

SECRET = "pw-S3CRET-7c1f0e-do-not-leak"


def _read_artifacts(keys: list[str]) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    latest: dict[str, object] = {}
    for a in sorted(arts, key=lambda a: a.created):
        latest[a.key] = a
    return latest


def test_publish_writes_influx_artifacts_and_report(
    influx_settings: Settings, prefect_api: None, tmp_path: Path
) -> None:
    settings = influx_settings.model_copy(
        update={"report_dir": tmp_path / "reports", "influx_username": "cricket"}
    )
    # InfluxDB 1.x here runs without auth and ignores credentials; the password is only
    # a recognisable marker that must not reach any output.
    from pydantic import SecretStr

    settings = settings.model_copy(update={"influx_password": SecretStr(SECRET)})
    report = fleet_report(n_series=4, every=2, notes=["note <b>x</b>"])
    hostile = report.results[-1]
    assert hostile.key == HOSTILE_KEY
    hostile.series_key = SeriesKey.make("waveform", "value", {"host": HOSTILE_TAG})

    @flow(name="publish-test")
    def run() -> dict:
        return publish_results(report.results, report, settings, "7")

    first = run()
    second = run()  # the same window again: overwrites, never duplicates
    assert first["points_written"] == second["points_written"]
    n_points = sum(len(r.frame) for r in report.results)
    assert first["points_written"] == n_points + report.n_events == 5 * 360 + 3
    assert first["events"] == 3 and first["series"] == 5

    src = InfluxQLSource(settings)
    try:
        end = START + (report.window_end - report.window_start)
        for r in report.results:
            scores = src.read_scores(r.sink_key(), START, end, "7")
            assert len(scores) == len(r.frame), r.key
            events = src.read_events(r.sink_key(), START, end, "7")
            assert len(events) == r.n_events, r.key
        hostile_scores = src.read_scores(hostile.series_key, START, end, "7")
        assert set(hostile_scores["series"]) == {str(hostile.series_key)}
    finally:
        src.close()

    path = Path(first["report"])
    assert path.parent == (tmp_path / "reports").absolute()
    assert path.name == "score-20240501T1000-v3.html"
    html = path.read_text(encoding="utf-8")
    assert "<script" not in html and SECRET not in html

    keys = [_artifact_key("score", w) for w in ("events", "summary")]
    arts = _read_artifacts(keys)
    assert set(arts) == set(keys)
    table = arts[keys[0]]
    import json

    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [row["series"] for row in rows][:1] == [HOSTILE_KEY]
    assert len(rows) == 3 and set(rows[0]) == {"series", "start", "end", "peak score", "duration",
                                               "severity", "fired", "looks like",
                                               "answer with"}
    assert rows[0]["answer with"].startswith(f"{HOSTILE_KEY}@")
    md = arts[keys[1]].data
    assert "- events: 3" in md and "<b>" not in md and "<img" not in md
    # no file:// link (browsers refuse it); the link comes with the MLflow run
    old_links = _read_artifacts([_artifact_key("score", "report")]).values()
    assert all("file://" not in str(a.data) for a in old_links)
    for a in arts.values():
        blob = json.dumps(a.data) + (a.description or "")
        assert SECRET not in blob and "password" not in blob.lower()


def test_publish_empty_window(influx_settings: Settings, prefect_api: None, tmp_path: Path) -> None:
    settings = influx_settings.model_copy(update={"report_dir": tmp_path / "r"})
    report = fleet_report(n_series=0, hostile=False, kind="backfill",
                          notes=["no data between 2024-05-01 10:00 and 11:00 UTC"])

    @flow(name="publish-empty-test")
    def run() -> dict:
        return publish_results([], report, settings, "7")

    out = run()
    assert out["points_written"] == 0 and out["events"] == 0
    text = Path(out["report"]).read_text(encoding="utf-8")
    assert "no data between" in text
    arts = _read_artifacts([_artifact_key("backfill", "events")])
    assert arts, "an empty events table is still attached"


@pytest.mark.parametrize("kind,what,key", [("score", "events", "cricket-score-events"),
                                           ("Back Fill!", "x", "cricket-back-fill-x")])
def test_artifact_keys_are_valid(kind: str, what: str, key: str) -> None:
    assert _artifact_key(kind, what) == key
