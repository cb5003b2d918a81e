"""The README's main job, trimmed: `cricket demo` in a fresh state folder starts its own
influxd, runs write -> retrain -> score -> backfill, and finds every injected anomaly.
Run as a subprocess, the way a newcomer runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cricket.influx.server import find_free_port

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "cricket.cli"]


def run(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def demo_env(tmp_path: Path, prefect_api: None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRICKET_")}
    env["CRICKET_STATE_DIR"] = str(tmp_path / "state")
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    yield env
    run(["influx", "stop"], env, timeout=60)


def test_demo_finds_every_injected_anomaly_and_can_run_twice(demo_env):
    port = str(find_free_port())
    first = run(["demo", "--hosts", "5", "--days", "1.5", "--n-clusters", "64",
                 "--port", port, "--json"], demo_env)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["series"] == 5
    assert summary["injected"] >= 5
    assert summary["missed"] == [], summary["missed"]
    assert len(summary["found"]) == summary["injected"]
    assert Path(summary["report"]).is_file()
    assert summary["model_version"] == "1" and summary["promoted"] is True
    # The summary's suggestion to answer an event works as printed.
    assert len(summary["found_refs"]) == summary["injected"]
    answered = run(["feedback", "anomaly", summary["found_refs"][0], "--reason", "demo"],
                   {**demo_env, "CRICKET_INFLUX_URL": f"http://127.0.0.1:{port}"})
    assert answered.returncode == 0 and "as anomaly" in answered.stdout, answered.stderr[-2000:]

    # The second run resets its database and registers a new version against the champion.
    second = run(["demo", "--hosts", "5", "--days", "1.5", "--n-clusters", "64",
                  "--port", port, "--json"], demo_env)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert again["model_version"] == "2"
    assert again["missed"] == []
    assert again["points_written"] == summary["points_written"]


def test_the_ui_hint_names_the_prefect_api_in_use_and_ports_in_use_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the demo, the hint points at the Prefect UI the runs went to (a configured
    PREFECT_API_URL, its password not shown), not at a fixed :4200; and a UI port that is
    taken is replaced by a free one."""
    import socket

    from cricket.cli.demo import _free_port, print_summary
    from cricket.config import Settings

    monkeypatch.setenv("CRICKET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PREFECT_API_URL", "http://ops:hunter2@prefect.example:4300/api")
    summary = {
        "seconds": {"total": 1, "write": 0, "retrain": 0, "backfill": 0, "score": 0},
        "series": 1, "points_written": 10, "model_version": "1", "promoted": True,
        "decision": "first version", "events": 0, "injected": 0, "found": [], "missed": [],
        "false_events": [], "report": "r.html", "hourly_report": "h.html",
        "scored_window": ["2026-12-01T10:00", "2026-12-01T11:00"],
        "backfill_range": ["2026-12-01T00:00", "2026-12-01T10:00"], "prefect_api": "",
    }
    print_summary(summary, Settings(), {})
    out = capsys.readouterr().out
    assert "prefect.example:4300" in out and "(the demo's runs are there)" in out
    assert "hunter2" not in out and ":4200" not in out

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        other = _free_port(taken)
        assert other != taken and other > 0
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", other))  # it really is free
