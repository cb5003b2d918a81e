"""`cricket influx start|stop|status` (the project's own InfluxDB 1.x) and `cricket synth`
(the synthetic cricket fleet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cricket.cli import app

influx_app = typer.Typer(
    name="influx",
    help="Run the project's own InfluxDB (Debian influxd) on loopback, for the demo.",
    no_args_is_help=True,
)
app.add_typer(influx_app, name="influx")


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _server(port: int | None, data_dir: Path | None):  # noqa: ANN202
    from cricket.influx.server import InfluxServer

    return InfluxServer(port=port, data_dir=data_dir)


@influx_app.command("start")
def start(
    port: int | None = typer.Option(None, help="HTTP port (default: the port of CRICKET_INFLUX_URL, 8086)"),
    data_dir: Annotated[
        Path | None, typer.Option(help="data folder (default: <state dir>/influxdb)")
    ] = None,
    timeout: float = typer.Option(30.0, help="seconds to wait for /ping"),
) -> None:
    """Start influxd with Cricket's config and wait until it answers."""
    from cricket.influx.base import InfluxError

    try:
        server = _server(port, data_dir).start(timeout=timeout)
    except InfluxError as exc:
        _fail(str(exc))
        return
    typer.echo(f"influxd running: {server.url} (pid {server.pid}, data {server.data_dir})")
    from cricket.config import Settings

    if Settings().influx_url.rstrip("/") != server.url:
        typer.echo(f"point Cricket at it: export CRICKET_INFLUX_URL={server.url}")


@influx_app.command("stop")
def stop(
    data_dir: Annotated[
        Path | None, typer.Option(help="data folder the server was started with")
    ] = None,
) -> None:
    """Stop the influxd that `cricket influx start` started (and nothing else)."""
    server = _server(None, data_dir)
    if server.stop():
        typer.echo("influxd stopped")
    else:
        typer.echo(f"no influxd started by cricket is running from {server.data_dir}")


@influx_app.command("status")
def status(
    data_dir: Annotated[
        Path | None, typer.Option(help="data folder the server was started with")
    ] = None,
) -> None:
    """Whether our influxd runs and answers; exit code 1 when it does not."""
    info = _server(None, data_dir).status()
    typer.echo(json.dumps(info, indent=2))
    if not info["answering"]:
        raise typer.Exit(code=1)


@app.command("synth")
def synth(
    hosts: int = typer.Option(8, min=1, help="number of hosts (series)"),
    days: float = typer.Option(3.0, min=0.001, help="days of data, ending about now"),
    step: str | None = typer.Option(None, help="sample interval [default: 10s; multifield 5m]"),
    seed: int = typer.Option(0, help="random seed"),
    start: str | None = typer.Option(None, help="first timestamp (UTC); default: days before now"),
    no_anomalies: bool = typer.Option(False, "--no-anomalies", help="a clean fleet"),
    write: bool = typer.Option(False, "--write", help="write it to the configured InfluxDB"),
    family: str = typer.Option(
        "crickets", help="crickets: one waveform per host; multifield: measurement psu, fields "
        "load/power/temp per device, anomalies that break their correlation with every field "
        "in range (what `cricket points synth` writes)"),
) -> None:
    """The synthetic cricket fleet: print a summary, or write it with --write."""
    if family not in ("crickets", "multifield"):
        _fail(f"--family {family!r} is not a family: give crickets or multifield")
    if family == "multifield":
        if no_anomalies:
            _fail("--no-anomalies is for the crickets family: the multifield family always "
                  "holds its clean devices and its anomalous ones")
        import pandas as pd

        from cricket.cli.points import synth as points_synth

        end = "now" if start is None else (pd.Timestamp(start) + pd.Timedelta(days=days)).isoformat()
        points_synth(devices=hosts, days=days, step=step or "5m", end=end, seed=seed,
                     write=write, as_json=False)
        return
    step = step or "10s"
    from rich.console import Console
    from rich.table import Table

    from cricket.config import Settings
    from cricket.influx.base import InfluxError
    from cricket.synth import make_fleet, write_fleet

    console = Console()
    fleet = make_fleet(hosts=hosts, days=days, step=step, start=start, seed=seed,
                       anomalies=not no_anomalies)
    summ = fleet.summary()
    console.print(
        f"{summ['hosts']} hosts, {summ['points']:,} points, {summ['start']} .. {summ['end']} "
        f"every {fleet.step}; clean hosts: {', '.join(summ['clean_hosts']) or 'none'}"
    )
    table = Table("series", "anomaly", "start", "end")
    for a in fleet.truth:
        table.add_row(str(a.key), a.kind, a.start.isoformat(), a.end.isoformat())
    if fleet.truth:
        console.print(table)
    if not write:
        console.print("(summary only: add --write to write it to InfluxDB)")
        return
    settings = Settings()
    try:
        n = write_fleet(fleet, settings)
    except InfluxError as exc:
        _fail(str(exc))
        return
    console.print(
        f"wrote {n:,} points to database {settings.influx_database!r} at {settings.influx_url}"
    )
