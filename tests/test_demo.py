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

    # The second run resets its database and registers a new version against the champion.
    second = run(["demo", "--hosts", "5", "--days", "1.5", "--n-clusters", "64",
                  "--port", port, "--json"], demo_env)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert again["model_version"] == "2"
    assert again["missed"] == []
    assert again["points_written"] == summary["points_written"]
