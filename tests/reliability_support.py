"""Helpers for the fault, bad-input, hostile-input and secrets tests (issue 8).

- :class:`KillableInflux`: a dedicated influxd (the project's own launcher) that a test
  may SIGKILL and restart on the same port and data folder, optionally with auth on.
- :func:`tiny_pipeline`: a 3-host synthetic fleet of a few hours written to a fresh
  database and trained once (n_clusters 8), so each test pays seconds, not minutes.
- :func:`fast_retries`: the flows' own Prefect tasks with the same retry *counts* but
  sub-second delays, so "down longer than the retries" takes seconds in a test.
- :class:`OnRequest`: run a callback (kill the server...) just before the Nth HTTP
  request that matches, inside the real client: the fault hits the real server at a
  known point of the run. Nothing is mocked: requests still go to the real influxd.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fixtures.influx import settings_for

from cricket.config import DetectorSpec, SeriesSelector, Settings
from cricket.influx.influxql import InfluxQLClient, InfluxQLSource
from cricket.influx.server import InfluxServer, find_free_port

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
SPEC = DetectorSpec(n_clusters=8, segment_len=16, min_event_gap=8)
END = pd.Timestamp("2026-11-20T00:00:00Z")
HOURS = 6  # of data: 4 h train (1.5 h held out), 2 h scored with anomalies
TRAIN_END = END - pd.Timedelta(hours=2)


class KillableInflux(InfluxServer):
    """An influxd of the test's own; ``kill()`` is SIGKILL (no clean shutdown)."""

    def __init__(self, data_dir: Path, auth: bool = False) -> None:
        super().__init__(port=find_free_port(), data_dir=data_dir)
        self.auth = auth

    def config_text(self) -> str:
        text = super().config_text()
        return text.replace("auth-enabled = false", "auth-enabled = true") if self.auth else text

    def kill(self) -> None:
        proc = self._our_process()
        assert proc is not None, "influxd is not running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if self._proc is not None:
            self._proc.poll()
        self._forget()

    def ensure_up(self) -> None:
        if self._our_process() is None or not self._ping():
            self.start(timeout=60)

    def restart_after(self, seconds: float) -> threading.Thread:
        """Start the server again ``seconds`` from now, in a background thread."""

        def later() -> None:
            time.sleep(seconds)
            self.start(timeout=60)

        t = threading.Thread(target=later, daemon=True)
        t.start()
        return t


@dataclass
class Pipeline:
    settings: Settings
    fleet: Any
    retrain: dict
    version: str


def pipeline_settings_for(server: InfluxServer, tmp: Path, **overrides: Any) -> Settings:
    db = f"rel_{uuid.uuid4().hex[:10]}"
    values = dict(
        mlflow_tracking_uri=f"sqlite:///{(tmp / 'mlflow.db').absolute()}",
        model_name="cricket-reliability",
        report_dir=tmp / "reports",
        batch_size=2,
    )
    values.update(overrides)
    settings = settings_for(server, db, tmp, **values)
    with InfluxQLClient(settings) as client:
        client.ensure_database(db)
    return settings


def tiny_pipeline(settings: Settings, monkeypatch: pytest.MonkeyPatch, hosts: int = 3) -> Pipeline:
    """Write a tiny fleet (anomalies in the last 2 h) and train on the hours before."""
    from fixtures.pipeline import apply_env

    from cricket.synth import make_fleet, write_fleet

    start = END - pd.Timedelta(hours=HOURS)
    fleet = make_fleet(hosts=hosts, days=HOURS / 24, step="10s", start=start, seed=5,
                       anomaly_window=(TRAIN_END, END))
    write_fleet(fleet, settings)
    apply_env(monkeypatch, settings)
    summary = retrain(settings)
    return Pipeline(settings, fleet, summary, summary["model_version"])


def retrain(settings: Settings) -> dict:
    from cricket.flows.retrain import nightly_retrain

    return nightly_retrain(
        selector=SELECTOR, spec=SPEC, train_window=timedelta(hours=4),
        holdout=timedelta(hours=1, minutes=30), end=TRAIN_END.to_pydatetime(),
        min_history_points=200,
    )


def fast_retries(monkeypatch: pytest.MonkeyPatch, delay: float = 0.2) -> None:
    """Same retry counts, shorter delays, for every task the flows call."""
    import cricket.flows.backfill
    import cricket.flows.retrain
    import cricket.flows.score
    import cricket.tasks.score
    import cricket.tasks.train

    for module in (cricket.flows.score, cricket.flows.retrain, cricket.flows.backfill, cricket.tasks.score, cricket.tasks.train):
        for name in ("discover_series", "score_batch", "write_results", "load_model",
                     "publish_report", "train_batch", "log_and_register",
                     "evaluate_and_promote", "done_chunks", "mark_chunk_done"):
            t = getattr(module, name, None)
            if t is not None and hasattr(t, "with_options"):
                monkeypatch.setattr(module, name, t.with_options(retry_delay_seconds=delay,
                                                                 retry_jitter_factor=None))


class OnRequest:
    """Call ``action`` once, just before the ``nth`` request whose path is ``path``
    (``/query`` or ``/write``) and whose query text contains ``contains`` (or, when
    ``contains`` is None, is a read of the raw metric: ``SELECT ... FROM "waveform"``,
    whichever form the source chose: raw points or GROUP BY time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: str, action: Callable[[], None],
                 nth: int = 1, contains: str | None = "") -> None:
        self.seen = 0
        self.fired = False
        original = InfluxQLClient.request
        me = self

        def request(client: InfluxQLClient, method: str, p: str, **kw: Any):  # noqa: ANN202
            q = (kw.get("params") or kw.get("data") or {}).get("q", "")
            hit = (
                q.startswith("SELECT") and 'FROM "waveform"' in q
                if contains is None
                else contains in q
            )
            if p == path and hit and not me.fired:
                me.seen += 1
                if me.seen == nth:
                    me.fired = True
                    action()
            return original(client, method, p, **kw)

        monkeypatch.setattr(InfluxQLClient, "request", request)


def score_rows(settings: Settings, start: Any, end: Any) -> pd.DataFrame:
    with InfluxQLSource(settings) as src:
        return src.read_scores(SELECTOR, pd.Timestamp(start), pd.Timestamp(end))


def raw_count(settings: Settings) -> int:
    """How many raw metric points the source database holds (must never change)."""
    with InfluxQLClient(settings) as c:
        series = c.query('SELECT count("value") FROM "waveform"')
    return int(series[0]["values"][0][1]) if series else 0


def duplicates(rows: pd.DataFrame) -> int:
    if rows.empty:
        return 0
    return int(rows.reset_index().duplicated(subset=["time", "series", "model_version"]).sum())


def clear_results(settings: Settings) -> None:
    """Drop every score, event and ledger point (a clean slate for one test)."""
    with InfluxQLClient(settings) as c:
        for m in ("cricket_score", "cricket_event", "cricket_chunk"):
            try:
                c.query(f'DROP MEASUREMENT "{m}"', method="POST", database=settings.score_database)
            except Exception as exc:  # noqa: BLE001 - absent measurement
                if "not found" not in str(exc):
                    raise
