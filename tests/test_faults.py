"""Faults against the real services (issue 8): influxd SIGKILLed and restarted during
extraction and write-back, MLflow's store corrupted or moved mid-run, a backfill process
killed mid-way, two hourly runs at once. Nothing may be lost or doubled.

Each test uses a dedicated influxd (tests/reliability_support.KillableInflux) that it may
kill; the task retry *counts* are the production ones, the delays are shortened
(``fast_retries``) so "down longer than the retries" takes seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from fixtures.pipeline import apply_env, settings_env
from reliability_support import (
    END,
    SELECTOR,
    KillableInflux,
    OnRequest,
    Pipeline,
    clear_results,
    duplicates,
    fast_retries,
    pipeline_settings_for,
    raw_count,
    retrain,
    score_rows,
    tiny_pipeline,
)

from cricket.influx import ledger
from cricket.registry import Registry

pytestmark = pytest.mark.slow

W1 = END - pd.Timedelta(hours=1)  # the last scored hour: [W1, END)
W2 = END - pd.Timedelta(hours=2)  # the hour before: [W2, W1)
POINTS_PER_HOUR = 3 * 360  # 3 hosts, 10 s steps


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> KillableInflux:
    srv = KillableInflux(tmp_path_factory.mktemp("killable-influx"))
    srv.start(timeout=60)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory, prefect_api) -> Pipeline:
    mp = pytest.MonkeyPatch()
    p = tiny_pipeline(pipeline_settings_for(server, tmp_path_factory.mktemp("faults")), mp)
    yield p
    mp.undo()


@pytest.fixture
def pipe(trained: Pipeline, server: KillableInflux, monkeypatch) -> Pipeline:
    """The trained pipeline, its server up and its environment applied."""
    server.ensure_up()
    clear_results(trained.settings)
    apply_env(monkeypatch, trained.settings)
    fast_retries(monkeypatch)
    yield trained
    server.ensure_up()


def _score(at: pd.Timestamp) -> dict:
    from cricket.flows.score import hourly_score

    return hourly_score(selector=SELECTOR, at=at.to_pydatetime())


def _comparable(summary: dict) -> dict:
    """The summary less what differs between two runs of one hour (times, paths, and the
    alerts: the second run of an hour announces nothing new)."""
    skip = ("seconds", "report", "timings", "mlflow_run", "alerts")
    return {k: v for k, v in summary.items() if k not in skip}


def test_influx_killed_during_extraction_and_restarted_within_retries_gives_the_same_result(
    pipe, server, monkeypatch
):
    raw = raw_count(pipe.settings)
    calm = _score(END)
    calm_rows = score_rows(pipe.settings, W1, END)
    assert calm["scored"] == 3 and len(calm_rows) == POINTS_PER_HOUR

    def kill_and_restart() -> None:
        server.kill()
        server.restart_after(0.3)

    fault = OnRequest(monkeypatch, "/query", kill_and_restart, contains=None)
    hit = _score(END)
    assert fault.fired, "the fault never happened"
    assert _comparable(hit) == _comparable(calm)
    assert hit["alerts"]["opened"] == 0, "a re-run of the hour announced an incident again"
    rows = score_rows(pipe.settings, W1, END)
    cols = ["value", "score", "anomalous", "series", "model_version"]
    pd.testing.assert_frame_equal(rows[cols], calm_rows[cols])
    assert duplicates(rows) == 0 and raw_count(pipe.settings) == raw


def test_influx_down_longer_than_retries_fails_naming_the_server_writes_nothing_then_next_run_scores(
    pipe, server, monkeypatch
):
    before = len(score_rows(pipe.settings, W2, W1))
    OnRequest(monkeypatch, "/query", server.kill, contains=None)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        _score(W1)
    message = str(info.value)
    assert pipe.settings.influx_url in message and "attempts" in message
    assert "cricket influx start" in message or "CRICKET_INFLUX_URL" in message
    assert time.monotonic() - t0 < 60
    server.start(timeout=60)
    monkeypatch.undo()
    apply_env(monkeypatch, pipe.settings)
    fast_retries(monkeypatch)
    assert len(score_rows(pipe.settings, W2, W1)) == before == 0, "a failed run left scores"
    again = _score(W1)
    rows = score_rows(pipe.settings, W2, W1)
    assert again["scored"] == 3 and len(rows) == POINTS_PER_HOUR and duplicates(rows) == 0


def test_influx_down_during_a_backfill_marks_only_finished_chunks_and_the_rerun_scores_the_rest(
    pipe, server, monkeypatch
):
    from cricket.flows.backfill import backfill

    start, end = W2, END
    # 4 chunks of 30 min; 2 batches (reads) per chunk: the 5th read is chunk 3's first.
    OnRequest(monkeypatch, "/query", server.kill, nth=5, contains=None)
    with pytest.raises(Exception, match="attempts"):
        backfill(start=start.to_pydatetime(), end=end.to_pydatetime(),
                 chunk=pd.Timedelta(minutes=30).to_pytimedelta(), selector=SELECTOR,
                 model_version=pipe.version)
    server.start(timeout=60)
    monkeypatch.undo()
    apply_env(monkeypatch, pipe.settings)
    fast_retries(monkeypatch)
    scope = SELECTOR.model_dump_json()
    done = ledger.done_chunks(pipe.settings, pipe.version, scope, start, end)
    assert done == {start.to_pydatetime(), (start + pd.Timedelta(minutes=30)).to_pydatetime()}
    rerun = backfill(start=start.to_pydatetime(), end=end.to_pydatetime(),
                     chunk=pd.Timedelta(minutes=30).to_pytimedelta(), selector=SELECTOR,
                     model_version=pipe.version)
    assert rerun["skipped"] == 2 and rerun["scored"] == 2
    rows = score_rows(pipe.settings, start, end)
    assert len(rows) == 2 * POINTS_PER_HOUR and duplicates(rows) == 0


def test_influx_killed_during_write_back_then_rerun_leaves_exactly_one_copy(
    pipe, server, monkeypatch
):
    monkeypatch.setenv("CRICKET_INFLUX_WRITE_BATCH", "100")
    OnRequest(monkeypatch, "/write", server.kill, nth=3)
    with pytest.raises(Exception, match="were not written") as info:
        _score(END)
    assert pipe.settings.influx_url in str(info.value)
    server.start(timeout=60)
    partial = score_rows(pipe.settings, W1, END)
    assert 0 < len(partial) < POINTS_PER_HOUR, "the kill should have cut the write short"
    again = _score(END)
    rows = score_rows(pipe.settings, W1, END)
    assert again["points_written"] >= POINTS_PER_HOUR
    assert len(rows) == POINTS_PER_HOUR and duplicates(rows) == 0


def _db_path(settings) -> Path:
    return Path(settings.tracking_uri.removeprefix("sqlite:///"))


def _corrupt(path: Path) -> None:
    """Overwrite the SQLite header in place: every connection now sees garbage."""
    with open(path, "r+b") as f:
        f.write(b"this is not a database, it is a fault injected by test_faults " * 64)


def test_mlflow_store_corrupted_during_scoring_is_a_clear_failure_and_writes_nothing(
    pipe, monkeypatch, tmp_path
):
    db = _db_path(pipe.settings)
    backup = tmp_path / "mlflow.db.bak"
    shutil.copyfile(db, backup)
    window = (W2 - pd.Timedelta(hours=1), W2)
    try:
        _corrupt(db)
        with pytest.raises(Exception) as info:
            _score(W2)
    finally:
        shutil.copyfile(backup, db)
    message = str(info.value)
    assert "MLflow" in message and str(db) in message, message
    assert len(score_rows(pipe.settings, *window)) == 0
    assert Registry(pipe.settings).alias_version("champion") == pipe.version


def test_mlflow_store_corrupted_between_register_and_promote_keeps_the_champion(
    pipe, monkeypatch, tmp_path
):
    db = _db_path(pipe.settings)
    backup = tmp_path / "mlflow.db.bak"
    reg = Registry(pipe.settings)
    champion = reg.alias_version("champion")
    original = Registry.evaluate_and_promote
    snapshot: dict[str, str] = {}

    def corrupt_then_promote(self, version, *a, **kw):  # noqa: ANN001, ANN202
        if not snapshot:
            snapshot["version"] = str(version)
            shutil.copyfile(db, backup)  # the store as it was after registering
            _corrupt(db)
        return original(self, version, *a, **kw)

    monkeypatch.setattr(Registry, "evaluate_and_promote", corrupt_then_promote)
    try:
        with pytest.raises(Exception) as info:
            retrain(pipe.settings)
    finally:
        if backup.exists():
            shutil.copyfile(backup, db)
    assert "MLflow" in str(info.value) and str(db) in str(info.value), str(info.value)
    new = snapshot["version"]
    assert new != champion
    reg = Registry(pipe.settings)
    assert reg.alias_version("champion") == champion
    assert reg.client.get_model_version(reg.name, new).aliases in ([], ["challenger"])


def test_mlflow_store_corrupted_before_register_registers_nothing(pipe, monkeypatch, tmp_path):
    db = _db_path(pipe.settings)
    backup = tmp_path / "mlflow.db.bak"
    reg = Registry(pipe.settings)
    versions = len(reg.list_versions())
    original = Registry.log_training_run

    def corrupt_then_log(self, *a, **kw):  # noqa: ANN001, ANN202
        if not backup.exists():
            shutil.copyfile(db, backup)
            _corrupt(db)
        return original(self, *a, **kw)

    monkeypatch.setattr(Registry, "log_training_run", corrupt_then_log)
    try:
        with pytest.raises(Exception, match="MLflow"):
            retrain(pipe.settings)
    finally:
        if backup.exists():
            shutil.copyfile(backup, db)
    reg = Registry(pipe.settings)
    assert len(reg.list_versions()) == versions
    assert reg.alias_version("champion") == pipe.version


def _chunks_in_ledger(settings, version: str, start, end) -> pd.DataFrame:
    from cricket.influx.influxql import InfluxQLClient

    with InfluxQLClient(settings) as c:
        series = c.query(
            'SELECT points FROM "cricket_chunk" WHERE model_version = $v AND time >= $a '
            "AND time < $b",
            params={"v": version, "a": int(pd.Timestamp(start).value),
                    "b": int(pd.Timestamp(end).value)},
            database=settings.score_database,
        )
    rows = series[0]["values"] if series else []
    return pd.DataFrame(rows, columns=["time", "points"])


def test_backfill_process_killed_midway_then_rerun_scores_every_chunk_exactly_once(
    pipe, tmp_path
):
    from prefect.settings import PREFECT_API_URL

    start, end = W2, END
    n_chunks = 12  # 10 min each
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRICKET_")}
    env.update(settings_env(pipe.settings))
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), CRICKET_INFLUX_WRITE_BATCH="5000",
               CRICKET_CONFIG=str(tmp_path / "none.toml"))
    cmd = [str(Path(sys.executable).parent / "cricket"), "backfill", "--start",
           start.isoformat(), "--end", end.isoformat(), "--chunk", "10min",
           "--version", pipe.version, "--json"]
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    killed_at = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = _chunks_in_ledger(pipe.settings, pipe.version, start, end)
            if len(done) >= 1:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = len(done)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()
    assert killed_at is not None, (tmp_path / "first.log").read_text()[-2000:]
    done_before = len(_chunks_in_ledger(pipe.settings, pipe.version, start, end))
    assert 1 <= done_before < n_chunks, "the backfill should have been cut short"

    import json

    from typer.testing import CliRunner

    from cricket.cli import app

    second = CliRunner().invoke(app, cmd[1:])  # the same command, in this process
    assert second.exit_code == 0, second.output[-2000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == done_before
    assert summary["scored"] == n_chunks - done_before
    ledger_rows = _chunks_in_ledger(pipe.settings, pipe.version, start, end)
    assert len(ledger_rows) == n_chunks and ledger_rows["time"].is_unique
    rows = score_rows(pipe.settings, start, end)
    assert len(rows) == 2 * POINTS_PER_HOUR and duplicates(rows) == 0


def test_two_hourly_runs_at_once_write_nothing_twice(pipe):
    results: list[dict] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(_score(END))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 2
    rows = score_rows(pipe.settings, W1, END)
    assert len(rows) == POINTS_PER_HOUR and duplicates(rows) == 0


def test_hourly_deployment_keeps_one_run_at_a_time():
    """The concurrency itself is the deployment's: limit 1, CANCEL_NEW (checked against
    the server by tests/test_deployments.py); here: both definitions agree on it."""
    import yaml
    from cricket.deployments.serve import build_deployments

    doc = yaml.safe_load((Path(__file__).parents[1] / "deployments" / "prefect.yaml").read_text())
    hourly = next(d for d in doc["deployments"] if d["name"] == "hourly-score")
    assert hourly["concurrency_limit"]["limit"] == 1
    assert hourly["concurrency_limit"]["collision_strategy"] == "CANCEL_NEW"
    served = next(d for d in build_deployments() if d.name == "hourly-score")
    assert served.concurrency_limit == 1
    assert served.concurrency_options.collision_strategy.value == "CANCEL_NEW"
