"""`cricket demo`: the whole pipeline on a synthetic fleet, in one command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cricket.cli import app
from cricket.cli.common import console, fail, quiet_prefect
from cricket.errors import redact


@app.command()
def demo(
    hosts: Annotated[int, typer.Option(help="hosts in the synthetic fleet")] = 12,
    days: Annotated[float, typer.Option(help="days of history to write")] = 3.0,
    n_clusters: Annotated[
        int | None, typer.Option(help="shapes in each library  [default: DetectorSpec's]")
    ] = None,
    ui: Annotated[bool, typer.Option(help="also start the Prefect and MLflow UIs")] = False,
    port: Annotated[int | None, typer.Option(help="port of the local InfluxDB")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show the runs' logs (they always go to the Prefect UI)")
    ] = False,
) -> None:
    """Start a local InfluxDB, write a synthetic fleet with anomalies, retrain, score the
    latest hour, backfill the hours before it, and print what was found. It uses the same
    settings as every other command (database, MLflow store, state folder), so
    `cricket score`, `cricket models list` and `cricket backfill` work on its data after."""
    quiet_prefect(verbose)
    from cricket.config import Settings
    from cricket.influx.server import InfluxServer

    settings = Settings()
    local = not (os.environ.get("CRICKET_INFLUX_URL") or os.environ.get("INFLUXDB_V2_URL"))
    if local:
        try:
            server = InfluxServer(port=port).start()
        except Exception as exc:  # noqa: BLE001 - the launcher's message says what to do
            fail(str(exc))
        if server.url != settings.influx_url.rstrip("/"):
            # another port than the default: the other commands need to be told
            os.environ["CRICKET_INFLUX_URL"] = server.url
        console.print(f"local InfluxDB running at {server.url} (stop it: cricket influx stop)")
        settings = Settings()
    urls = start_uis(settings) if ui else {}

    from cricket.cli.common import run_flow
    from cricket.flows.demo import demo as demo_flow

    summary = run_flow(
        "the demo pipeline (write, retrain, backfill, score)", demo_flow,
        hosts=hosts, days=days, n_clusters=n_clusters, reset_database=local,
    )
    summary["influx_url"] = settings.influx_url
    if as_json:
        import json

        print(json.dumps(summary, default=str))
        return
    print_summary(summary, settings, urls)


def print_summary(summary: dict, settings, urls: dict[str, str]) -> None:  # noqa: ANN001
    s = summary["seconds"]
    console.print()
    console.print("[bold]Cricket demo[/]")
    console.print(f"  series:          {summary['series']} ({summary['points_written']:,} points written)")
    console.print(
        f"  model version:   {summary['model_version']} of {settings.model_name} "
        f"({'champion' if summary['promoted'] else 'not promoted'}: {summary['decision']})",
        markup=False,
    )
    n_inj, n_found = summary["injected"], len(summary["found"])
    colour = "green" if n_found == n_inj else "yellow"
    console.print(
        f"  anomalies found: [{colour}]{n_found} of {n_inj} injected[/], "
        f"{len(summary['false_events'])} false events, {summary['events']} events in all"
    )
    for line in summary["found"]:
        console.print(f"    found   {line}", markup=False)
    for line in summary["missed"]:
        console.print(f"    missed  {line}", markup=False)
    for line in summary["false_events"][:10]:
        console.print(f"    false   {line}", markup=False)
    if summary.get("data_missing"):
        console.print(f"  data missing:    {summary['data_missing']} series", markup=False)
    console.print(f"  report:          {summary['report']}", markup=False)
    console.print(f"  latest hour:     {summary['hourly_report']}", markup=False)
    console.print(
        f"  time:            {s['total']} s (write {s['write']}, retrain {s['retrain']}, "
        f"backfill {s['backfill']}, score {s['score']})"
    )
    console.print(f"  state:           {settings.state_dir}", markup=False)
    console.print(f"  data:            database {settings.influx_database!r} at "
                  f"{redact(settings.influx_url)}", markup=False)
    console.print(f"  [dim]{escape(summary.get('prefect_api', ''))}[/]")
    console.print()
    console.print("Try, from any directory:")
    console.print("  cricket models list", markup=False)
    console.print(f"  cricket score --at {summary['scored_window'][1][:16]}", markup=False)
    start, end = summary["backfill_range"]
    console.print(f"  cricket backfill --start {start[:16]} --end {end[:16]} --redo", markup=False)
    if summary.get("found_refs"):
        console.print(f"  cricket feedback anomaly '{summary['found_refs'][0]}' --reason 'injected "
                      "by the demo'   (answer an event: the next retrain learns from it)",
                      markup=False)
    console.print()
    if urls:
        console.print(f"Prefect UI: {urls['prefect']}   MLflow UI: {urls['mlflow']}")
        return
    console.print("Look at the runs and the model versions:")
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        console.print(f"  Prefect UI:  {redact(configured.rstrip('/').removesuffix('/api'))}"
                      "   (the demo's runs are there)", markup=False)
    else:
        from cricket.flows.server import local_server_url

        ui = local_server_url().removesuffix("/api")
        console.print(f"  Prefect UI:  .venv/bin/prefect server start   (then {ui};"
                      " the next commands find it and their runs show there)", markup=False)
    console.print(
        f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} "
        "--port 5000",
        markup=False,
    )
    console.print("  or run:      .venv/bin/cricket demo --ui")


def _free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there on 127.0.0.1, else a free port."""
    import socket

    from cricket.influx.server import port_free

    if port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_uis(settings) -> dict[str, str]:  # noqa: ANN001
    """Start the Prefect server and the MLflow UI in the background; return their URLs.
    The demo's flow runs then go to that Prefect server, so they show up there. A Prefect
    API already configured (PREFECT_API_URL) or already answering on Prefect's local
    port is used as it is; otherwise each UI takes its usual port (4200, 5000) when free,
    else a free one, and the URLs printed say which."""
    from cricket.flows.server import api_answers, local_server_url

    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    prefect = shutil.which("prefect", path=str(bindir)) or "prefect"
    mlflow = shutil.which("mlflow", path=str(bindir)) or "mlflow"
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    api = os.environ.get("PREFECT_API_URL") or local_server_url()
    if not api_answers(api):
        port = _free_port(4200)
        subprocess.Popen(  # noqa: S603
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=open(logs / "prefect-server.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        api = f"http://127.0.0.1:{port}/api"
    # another store's MLflow UI may hold 5000: this one always shows the demo's store
    mlflow_port = _free_port(5000)
    subprocess.Popen(  # noqa: S603
        [mlflow, "ui", "--backend-store-uri", settings.tracking_uri, "--host", "127.0.0.1",
         "--port", str(mlflow_port)],
        stdout=open(logs / "mlflow-ui.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait_http(api.rstrip("/") + "/health", 90)
    os.environ["PREFECT_API_URL"] = api
    return {"prefect": redact(api.rstrip("/").removesuffix("/api")),
            "mlflow": f"http://127.0.0.1:{mlflow_port}"}


def _wait_http(url: str, timeout: float) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    fail(f"the UI at {url} did not start in {timeout:.0f} s: see the logs under <state dir>/logs")
