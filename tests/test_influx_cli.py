"""`cricket influx start|status|stop` and `cricket synth`, run as a newcomer would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cricket.cli import app
from cricket.influx.server import InfluxServer, find_free_port


def _env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRICKET_")}
    env.update(
        CRICKET_STATE_DIR=str(tmp_path / "state"),
        CRICKET_INFLUX_URL=f"http://127.0.0.1:{port}",
        CRICKET_INFLUX_DATABASE="cli_db",
        CRICKET_CONFIG=str(tmp_path / "none.toml"),
    )
    return env


def _cricket(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from cricket.cli import app; app()", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_start_synth_write_status_stop(tmp_path: Path):
    pytest.importorskip("psutil")
    port = find_free_port()
    env = _env(tmp_path, port)
    try:
        r = _cricket(env, "influx", "start")
        assert r.returncode == 0, r.stderr
        assert f"127.0.0.1:{port}" in r.stdout
        info = json.loads(_cricket(env, "influx", "status").stdout)
        assert info["running"] and info["answering"] and info["port"] == port
        conf = (tmp_path / "state" / "influxdb" / "influxdb.conf").read_text()
        assert "reporting-disabled = true" in conf and f'"127.0.0.1:{port}"' in conf
        r = _cricket(env, "synth", "--hosts", "2", "--days", "0.1", "--write")
        assert r.returncode == 0, r.stderr
        assert "wrote 1,728 points" in r.stdout
        q = httpx.get(f"http://127.0.0.1:{port}/query",
                      params={"db": "cli_db", "q": 'SELECT count("value") FROM "waveform"'})
        assert q.json()["results"][0]["series"][0]["values"][0][1] == 1728
    finally:
        r = _cricket(env, "influx", "stop")
    assert "stopped" in r.stdout
    r = _cricket(env, "influx", "status")
    assert r.returncode == 1 and not json.loads(r.stdout)["running"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1)


def test_stop_leaves_a_foreign_process_alone(tmp_path: Path):
    """A pid file that names some other process (here: a sleep) is not ours to kill."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        server = InfluxServer(port=find_free_port(), data_dir=tmp_path)
        server.pid_path.write_text(f"{proc.pid}\n")
        assert server.stop() is False
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_missing_influxd_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    import cricket.influx.server as server_mod

    monkeypatch.setattr(server_mod.os, "access", lambda *a: False)
    with pytest.raises(server_mod.InfluxError, match="apt-get install influxdb"):
        InfluxServer(port=find_free_port(), data_dir=tmp_path).start()


def test_synth_summary_without_write():
    r = CliRunner().invoke(app, ["synth", "--hosts", "3", "--days", "1", "--start", "2024-01-01"])
    assert r.exit_code == 0, r.output
    assert "3 hosts" in r.output and "25,920 points" in r.output
    assert "--write" in r.output
