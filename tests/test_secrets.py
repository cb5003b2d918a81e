"""Secrets never leak (issue 8): the whole pipeline (retrain, hourly score, backfill, a
failing run) runs with a recognisable token and password, and every output is searched
for them: Python logs (caplog), stdout/stderr, Prefect flow/task logs and artifacts read
back through the Prefect API, MLflow params, tags, metrics and artifact files, the HTML
reports and every file under the state folder, and the failures' messages.

InfluxDB 1.x with auth off ignores the ``Authorization: Token`` header (checked here), so
the token really travels on every request while the server accepts it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fixtures.pipeline import apply_env
from pydantic import SecretStr
from reliability_support import (
    END,
    SELECTOR,
    TRAIN_END,
    fast_retries,
    pipeline_settings_for,
    tiny_pipeline,
)

pytestmark = pytest.mark.slow

TOKEN = f"tok-SECRET-{uuid.uuid4().hex[:12]}"
HOOK = f"hook-SECRET-{uuid.uuid4().hex[:12]}"  # the alert webhook URL's path (a secret)
PASSWORD = f"pw-SECRET-{uuid.uuid4().hex[:12]}"


def _search_files(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p}: {n}" for n in needles if n.encode() in data]
    return hits


def test_token_and_password_appear_in_no_output(
    influx_server, tmp_path, monkeypatch, caplog, capfd, prefect_api
):
    import logging

    caplog.set_level(logging.DEBUG)
    r = httpx.get(f"{influx_server.url}/query", params={"q": "SHOW DATABASES"},
                  headers={"Authorization": f"Token {TOKEN}"})
    assert r.status_code == 200, "influxd should ignore the token header with auth off"

    settings = pipeline_settings_for(
        influx_server, tmp_path, influx_token=SecretStr(TOKEN), influx_username="cricket",
        influx_password=SecretStr(PASSWORD), model_name="cricket-secrets",
    )
    monkeypatch.setenv("CRICKET_INFLUX_PASSWORD", PASSWORD)
    monkeypatch.setenv("CRICKET_INFLUX_USERNAME", "cricket")
    fast_retries(monkeypatch)
    tiny_pipeline(settings, monkeypatch, hosts=2)
    from receiver_support import Receiver

    receiver = Receiver()
    monkeypatch.setenv("CRICKET_ALERT_WEBHOOK_URL", f"{receiver.url}/{HOOK}")
    monkeypatch.setenv("CRICKET_INFLUX_PASSWORD", PASSWORD)
    monkeypatch.setenv("CRICKET_INFLUX_USERNAME", "cricket")
    import os

    assert os.environ["CRICKET_INFLUX_TOKEN"] == TOKEN  # the flows really use it

    from cricket.flows.backfill import backfill
    from cricket.flows.score import hourly_score

    score = hourly_score(selector=SELECTOR, at=END.to_pydatetime())
    assert score["scored"] == 2 and score["points_written"] > 0
    backfill(start=TRAIN_END.to_pydatetime(), end=(TRAIN_END + timedelta(minutes=30)).to_pydatetime(),
             chunk=timedelta(minutes=30), selector=SELECTOR)

    # failures carry messages too: an unreachable server and a refused write
    failures: list[str] = []
    monkeypatch.setenv("CRICKET_INFLUX_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CRICKET_INFLUX_TIMEOUT_S", "1")
    with pytest.raises(Exception) as info:
        hourly_score(selector=SELECTOR, at=END.to_pydatetime())
    failures += [str(info.value), repr(info.value)]
    apply_env(monkeypatch, settings)
    # an alert webhook that does not answer: its failure names no URL
    from cricket.webhook import AlertDeliveryError, post_json

    with pytest.raises(AlertDeliveryError) as hook_info:
        post_json(f"http://127.0.0.1:9/{HOOK}", {"x": 1}, timeout_s=1, retries=0)
    failures.append(str(hook_info.value))
    receiver.close()
    from typer.testing import CliRunner

    from cricket.cli import app

    cli = CliRunner().invoke(app, ["score", "--at", END.isoformat(), "--version", "999"])
    failures.append(cli.output)
    failures.append(repr(settings))
    failures.append(str(settings.public_dict()))

    needles = [TOKEN, PASSWORD, HOOK]
    leaks: list[str] = []
    texts = {"caplog": caplog.text, "failures": "\n".join(failures)}
    out, err = capfd.readouterr()
    texts["stdout"], texts["stderr"] = out, err

    # Prefect: every log line and artifact of this session's runs
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter

    with get_client(sync_client=True) as client:
        logs = []
        while batch := client.read_logs(log_filter=LogFilter(), limit=200, offset=len(logs)):
            logs += batch
        texts["prefect logs"] = "\n".join(log.message for log in logs)
        arts = client.read_artifacts(limit=200)
        texts["prefect artifacts"] = "\n".join(
            f"{a.key} {a.description} {a.data}" for a in arts)
        runs = client.read_flow_runs(limit=200)
        texts["prefect runs"] = "\n".join(
            f"{r.name} {r.parameters} {r.state.message if r.state else ''}" for r in runs)
    assert len(logs) > 20 and len(arts) > 0

    # MLflow: params, tags, metrics of every run; model and version tags
    from cricket.registry import Registry

    reg = Registry(settings)
    mlflow_text = []
    for exp in reg.client.search_experiments():
        for run in reg.client.search_runs([exp.experiment_id]):
            mlflow_text.append(str(run.data.params) + str(run.data.tags) + str(run.data.metrics))
    for m in reg.client.search_registered_models():
        mlflow_text.append(str(m.tags))
        for v in reg.client.search_model_versions(f"name='{m.name}'"):
            mlflow_text.append(str(v.tags) + str(v.description))
    texts["mlflow"] = "\n".join(mlflow_text)
    assert "selector" in texts["mlflow"]

    for where, text in texts.items():
        leaks += [f"{where}: {n}" for n in needles if n in text]
    # every file: MLflow's database and artifacts, reports, anything else in state
    leaks += _search_files(tmp_path, needles)
    reports = list(Path(settings.reports_path).glob("*.html"))
    assert reports, "the hourly run should have written a report"
    assert leaks == [], leaks
    assert pd.Timestamp(score["window_end"]) == END
