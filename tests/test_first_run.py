"""A new user's first commands, run as they run them: a subprocess with an empty HOME and
an empty Prefect home, Prefect's own default start-up timeout (nothing here raises it),
no PREFECT_API_URL. The first flow command on a machine must work; user errors are one
line before any server starts; a running Prefect server is found and used."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cricket.influx.server import find_free_port

CLI = [sys.executable, "-m", "cricket.cli"]


def user_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user who just installed Cricket: no CRICKET_*, PREFECT_* or
    MLFLOW_* settings at all, empty homes."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("CRICKET_", "PREFECT_", "MLFLOW_", "INFLUXDB_"))
    }
    home = tmp_path / "home"
    home.mkdir()
    env["HOME"] = str(home)
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env.pop("XDG_DATA_HOME", None)
    # nothing may listen where `prefect server start` would, or the command would use it
    env["PREFECT_SERVER_API_PORT"] = str(find_free_port())
    return env


def cricket(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 600):
    t0 = time.perf_counter()
    r = subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, check=False)
    return r, time.perf_counter() - t0


def test_first_flow_command_on_a_fresh_machine_runs_and_keeps_its_run(tmp_path):
    env = user_env(tmp_path)
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in env
    r, _ = cricket(["score"], env, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert "Timed out" not in out and "Traceback" not in out, out[-3000:]
    # The flow ran (there is no model yet, so it stops at loading one, with one line).
    assert r.returncode == 1, out[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) <= 3, r.stderr
    assert "run the nightly retrain first" in r.stderr
    # State went to the one documented place, not the working directory.
    assert not (tmp_path / ".cricket").exists()
    # The run and its logs are kept in Prefect's database (what the UI shows).
    db = Path(env["PREFECT_HOME"]) / "prefect.db"
    with sqlite3.connect(db) as con:
        runs = con.execute(
            "select flow_run.state_type from flow_run join flow on flow.id = flow_run.flow_id "
            "where flow.name = 'hourly-score'"
        ).fetchall()
        logs = con.execute("select count(*) from log where level >= 20").fetchone()[0]
        attempts = con.execute(
            "select run_count from task_run where name like 'load-model%'"
        ).fetchall()
    assert runs == [("FAILED",)]
    assert logs > 0
    # A store that does not exist cannot heal: tried once, not retried with backoff.
    assert attempts == [(1,)]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["score", "--window", "0s"], "--window"),
        (["score", "--window", "5x"], "cannot read '5x' as a duration"),
        (["backfill", "--start", "2026-11-21", "--end", "2026-11-20"], "not before end"),
        (["retrain", "--segment-len", "33"], "--segment-len must be even"),
        (["retrain", "--holdout", "8d"], "--holdout"),
        (["score", "--at", "2999-01-01"], "in the future"),
    ],
)
def test_user_errors_are_one_line_before_anything_starts(tmp_path, args, says):
    env = user_env(tmp_path)
    r, seconds = cricket(args, env, cwd=tmp_path, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert says in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr
    assert "Traceback" not in r.stderr
    # No Prefect server was started for it: its database was never created.
    assert not (Path(env["PREFECT_HOME"]) / "prefect.db").exists()


def test_unreachable_prefect_api_and_bad_config_are_one_line(tmp_path):
    env = user_env(tmp_path)
    env["PREFECT_API_URL"] = f"http://user:s3cret@127.0.0.1:{find_free_port()}/api"
    r, seconds = cricket(["score"], env, cwd=tmp_path, timeout=120)
    assert r.returncode == 1
    assert "does not answer" in r.stderr and "s3cret" not in r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr
    del env["PREFECT_API_URL"]
    (tmp_path / "cricket.toml").write_text('influx_url = "http://x\nmodel_name = 1\n')
    r, _ = cricket(["models", "list"], env, cwd=tmp_path, timeout=120)
    assert r.returncode == 1
    assert "cricket.toml" in r.stderr and "line 1" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr


def test_version_and_state_dir_in_help(tmp_path):
    env = user_env(tmp_path)
    r, _ = cricket(["--version"], env, cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("cricket ")
    r, _ = cricket(["--help"], env, cwd=tmp_path, timeout=60)
    assert "CRICKET_STATE_DIR" in r.stdout and ".local/share/cricket" in r.stdout


def test_a_running_prefect_server_is_found_and_named(tmp_path, prefect_api):
    """Where a Prefect server runs on this machine (here: the test harness's), a flow
    command uses it without PREFECT_API_URL and says so."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    env = user_env(tmp_path)
    env["PREFECT_SERVER_API_PORT"] = str(urlsplit(api).port)
    r, _ = cricket(["score", "-v"], env, cwd=tmp_path, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "run the nightly retrain first" in r.stderr
    # used the running server: no temporary one was started in this Prefect home
    assert not (Path(env["PREFECT_HOME"]) / "prefect.db").exists()
    assert "Starting temporary server" not in r.stdout + r.stderr


def test_only_errors_that_can_heal_are_retried():
    from cricket.errors import CricketValueError, is_retryable
    from cricket.influx.base import InfluxError, InfluxWriteError
    from cricket.registry import RegistryUnavailableError

    assert is_retryable(InfluxError("down after 4 attempts", retryable=True))
    assert is_retryable(InfluxWriteError("wrote 0 of 5"))
    assert is_retryable(RegistryUnavailableError("locked"))
    assert is_retryable(OSError("connection reset"))
    assert not is_retryable(InfluxError("database 'x' does not exist"))
    assert not is_retryable(InfluxError("refused the credentials (HTTP 401)"))
    assert not is_retryable(RegistryUnavailableError("no store", retryable=False))
    assert not is_retryable(CricketValueError("bad duration"))
    assert not is_retryable(KeyError("unknown version"))
