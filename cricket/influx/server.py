"""Launch the project's own InfluxDB 1.x server (the Debian package's ``influxd``).

The server gets a config of its own (reporting off, loopback only, quiet logs) and keeps
its data, meta and WAL folders, its config, log and pid file under one folder: by default
``<state_dir>/influxdb``. ``stop`` ends only the process this launcher started: the pid
file's process must be an ``influxd`` running with this folder's config.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from cricket.influx.base import InfluxError

INFLUXD_MISSING = (
    "influxd (InfluxDB 1.x) is not installed. Install the Debian package with "
    "`sudo apt-get install influxdb` (what `make setup` runs via infra/install-system-deps.sh), "
    "or run InfluxDB from infra/compose.yaml (`docker compose -f infra/compose.yaml up -d influxdb`) "
    "and point CRICKET_INFLUX_URL at it."
)

CONFIG_TEMPLATE = """\
# Written by cricket (cricket/influx/server.py); regenerated on every start.
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{meta_dir}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{data_dir}"
  wal-dir = "{wal_dir}"
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  pprof-enabled = false
  max-row-limit = 0
  max-body-size = 0

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  log-enabled = false
  enabled = true

[ifql]
  enabled = false
"""


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port``. SO_REUSEADDR as influxd itself binds, so the
    TIME_WAIT connections a killed server leaves behind do not read as "in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def find_free_port() -> int:
    """A loopback port that is free, and whose successor (the RPC port) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535 and port_free(port + 1):
            return port
    raise InfluxError("no free pair of loopback ports found for influxd")


def influxd_path() -> str:
    """Path of the influxd binary, or an InfluxError that says how to install it."""
    found = shutil.which("influxd") or (
        "/usr/bin/influxd" if os.access("/usr/bin/influxd", os.X_OK) else None
    )
    if not found:
        raise InfluxError(INFLUXD_MISSING)
    return found


def _default_dir() -> Path:
    from cricket.config import Settings

    return Settings().state_dir / "influxdb"


def _default_port() -> int:
    from urllib.parse import urlparse

    from cricket.config import Settings

    url = urlparse(Settings().influx_url)
    return url.port or 8086


class InfluxServer:
    """One influxd process with a folder of its own.

    ``InfluxServer(port, data_dir).start()`` writes the config, starts influxd in its own
    session (it outlives the CLI), waits for ``/ping`` and records the pid. A later
    ``InfluxServer(data_dir=same).stop()`` finds it through the pid file.
    """

    def __init__(self, port: int | None = None, data_dir: Path | None = None) -> None:
        self.data_dir = Path(data_dir).absolute() if data_dir else _default_dir()
        recorded = self._read_state()
        if port is None:
            port = int(recorded["port"]) if recorded.get("port") else _default_port()
        self.port = int(port)
        self.pid: int | None = recorded.get("pid") if recorded.get("port") == self.port else None
        self._proc: subprocess.Popen[bytes] | None = None

    # paths -----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.data_dir / "influxdb.conf"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "influxd.pid"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "server.json"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "influxd.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.data_dir / "server.json").read_text())
        except (OSError, ValueError):
            return {}

    def config_text(self) -> str:
        return CONFIG_TEMPLATE.format(
            port=self.port,
            rpc_port=self.port + 1,
            meta_dir=self.data_dir / "meta",
            data_dir=self.data_dir / "data",
            wal_dir=self.data_dir / "wal",
        )

    # lifecycle -------------------------------------------------------------------------
    def _ping(self, timeout: float = 1.0) -> bool:
        try:
            r = httpx.get(f"{self.url}/ping", timeout=timeout)
        except httpx.HTTPError:
            return False
        return r.status_code == 204

    def _our_process(self) -> Any | None:
        """The psutil.Process from the pid file when it is our influxd, else None."""
        import psutil

        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            cmd = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        if not cmd or Path(cmd[0]).name != "influxd" or str(self.config_path) not in cmd:
            return None
        return proc

    def start(self, timeout: float = 30) -> InfluxServer:
        """Start influxd (or adopt the one already running from this folder) and wait for /ping."""
        binary = influxd_path()
        running = self._our_process()
        if running is not None:
            self.pid = running.pid
            state = self._read_state()
            self.port = int(state.get("port", self.port))
            if self._ping():
                return self
        if not port_free(self.port) or not port_free(self.port + 1):
            raise InfluxError(
                f"port {self.port} or {self.port + 1} on 127.0.0.1 is already in use: "
                "stop what runs there, or pick another with `cricket influx start --port P` "
                f"and set CRICKET_INFLUX_URL=http://127.0.0.1:P"
            )
        for sub in ("meta", "data", "wal"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [binary, "run", "-config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self.pid = self._proc.pid
        self.pid_path.write_text(f"{self.pid}\n")
        self.state_path.write_text(
            json.dumps({"pid": self.pid, "port": self.port, "url": self.url,
                        "config": str(self.config_path)})
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self._forget()
                raise InfluxError(
                    f"influxd exited with code {self._proc.returncode} while starting on "
                    f"{self.url}; its log ({self.log_path}) ends with:\n{tail}"
                )
            if self._ping(0.5):
                return self
            time.sleep(0.1)
        self.stop()
        raise InfluxError(
            f"influxd did not answer {self.url}/ping within {timeout:.0f}s; "
            f"see {self.log_path}:\n{self._log_tail()}"
        )

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _forget(self) -> None:
        for p in (self.pid_path, self.state_path):
            p.unlink(missing_ok=True)
        self.pid = None

    def stop(self, timeout: float = 15) -> bool:
        """Stop the influxd this folder's pid file names. Returns False when none ran."""
        import psutil

        proc = self._our_process()
        if proc is None:
            self._forget()
            return False
        try:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        except psutil.NoSuchProcess:
            pass
        if self._proc is not None:
            self._proc.poll()  # reap our child
        self._forget()
        return True

    def status(self) -> dict[str, Any]:
        """running, pid, url, port, data_dir, answering (/ping)."""
        proc = self._our_process()
        state = self._read_state()
        port = int(state.get("port", self.port))
        url = f"http://127.0.0.1:{port}"
        return {
            "running": proc is not None,
            "pid": proc.pid if proc is not None else None,
            "url": url,
            "port": port,
            "data_dir": str(self.data_dir),
            "answering": proc is not None and self._ping(),
        }

    def __enter__(self) -> InfluxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
