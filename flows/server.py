"""Which Prefect API the command line's flow runs use, found before any run starts.

In order: the API that ``PREFECT_API_URL`` (or the Prefect profile) names, which must
answer; a ``prefect server start`` already running on this machine (its runs then show
in its UI); else a temporary server started here. The temporary server creates and
migrates its SQLite database on the first run on a machine, which takes longer than
Prefect's own 20 s start-up timeout on a small machine: Cricket starts it itself, waits
as long as the start really takes, and fails at once if the server process dies.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from cricket.errors import CricketError, redact

#: the longest a temporary server may take to start (a cold start migrates its database)
STARTUP_LIMIT_S = 600.0


class PrefectAPIError(CricketError):
    """The Prefect API named by the settings does not answer, or none could be started."""


def api_answers(api_url: str, timeout: float = 2.0) -> bool:
    """Whether the Prefect API at ``api_url`` answers its health check within ``timeout``."""
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def local_server_url() -> str:
    """Where ``prefect server start`` listens by default on this machine."""
    from prefect.settings import get_current_settings

    api = get_current_settings().server.api
    host = "127.0.0.1" if api.host in ("0.0.0.0", "", "::") else api.host
    return f"http://{host}:{api.port}/api"


def start_temporary_server(limit_s: float = STARTUP_LIMIT_S) -> str:
    """Start (once per process) the temporary API server that Prefect would start on
    first use, and wait until it answers. Returns its API URL."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's clients use when no URL is set
    if server.running and server.server_process is not None:
        return server.api_url
    server.port = server.find_available_port()
    server.running = True
    server.server_process = server._run_uvicorn_command()
    atexit.register(server.stop)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        code = server.server_process.poll()
        if code == 3:  # the port was taken meanwhile: try another one
            server.port = server.find_available_port()
            server.server_process = server._run_uvicorn_command()
            continue
        if code is not None:
            server.stop()
            raise PrefectAPIError(
                f"the temporary Prefect server exited with code {code} while starting: run "
                "`prefect server start` in another shell and retry (its output says why)"
            )
        if api_answers(server.api_url, timeout=1.0):
            return server.api_url
        time.sleep(0.2)
    server.stop()
    raise PrefectAPIError(
        f"the temporary Prefect server did not answer within {limit_s:.0f} s: run "
        "`prefect server start` in another shell, then retry"
    )


@contextmanager
def prefect_api(announce=None) -> Iterator[str]:  # noqa: ANN001
    """Run the body against a Prefect API that answers; yields a line saying which.
    ``announce(text)`` is told what is being waited for (e.g. a spinner's status)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        if not api_answers(configured, timeout=5.0):
            raise PrefectAPIError(
                f"the Prefect API at {redact(configured)} (PREFECT_API_URL) does not answer: "
                "start it (`prefect server start`) or unset PREFECT_API_URL to let Cricket "
                "start a temporary one"
            )
        yield f"Prefect API: {redact(configured)}"
        return
    local = local_server_url()
    if api_answers(local, timeout=0.5):
        with temporary_settings(updates={PREFECT_API_URL: local}):
            yield f"Prefect API: the local server at {local} (runs show in its UI)"
        return
    if announce is not None:
        announce("starting a temporary Prefect server (the first run on a machine prepares "
                 "its database) ...")
    t0 = time.perf_counter()
    url = start_temporary_server()
    took = time.perf_counter() - t0
    yield (f"Prefect API: a temporary server, started in {took:.1f} s (runs are kept: "
           "`prefect server start` shows them)")
    del url
