"""`cricket serve`: run the scheduled deployments from one process (no work pool)."""

from __future__ import annotations

import typer

from cricket.cli import app


@app.command("serve")
def serve_command(
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="most flow runs this process runs at once (default: no cap)"
    ),
    schedules: bool = typer.Option(
        True,
        "--schedules/--no-schedules",
        help="keep the nightly and hourly cron schedules (--no-schedules: runs only by hand)",
    ),
    dask_workers: int = typer.Option(
        0, "--dask-workers", min=0,
        help="run the batch tasks on a Dask cluster of this many worker processes, started "
        "here and kept warm between runs (0: threads; ignored when CRICKET_DASK_ADDRESS "
        "names a cluster)",
    ),
    warm: bool = typer.Option(
        True, "--warm-starts/--cold-starts",
        help="start each run by forking a process that imported the flows once (default), "
        "or as Prefect does, in a new interpreter that imports everything per run "
        "(--cold-starts: an upgrade of Cricket takes effect at the next run, not at the "
        "next `cricket serve`)",
    ),
) -> None:
    """Serve nightly-retrain, hourly-score and backfill until stopped (Ctrl-C).

    Registers the deployments with the Prefect API at PREFECT_API_URL and runs them here. Start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api so the UI shows the runs.
    """
    from cricket.cli.common import quiet_prefect

    quiet_prefect(verbose=True)  # a long-running server shows its runs' logs
    from cricket.deployments.serve import api_url_configured, serve

    if not api_url_configured():
        typer.secho(
            "PREFECT_API_URL is not set: serving against a temporary Prefect server that "
            "stops with this process, and no UI sees it. For the UI, run "
            "`prefect server start` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`.",
            fg=typer.colors.YELLOW,
            err=True,
        )
    from cricket.config import Settings

    if dask_workers and Settings().dask_address:
        typer.secho(f"CRICKET_DASK_ADDRESS is set: serving on that cluster, not on "
                    f"{dask_workers} local workers", fg=typer.colors.YELLOW, err=True)
        dask_workers = 0
    serve(limit=limit, schedules=schedules, dask_workers=dask_workers, warm=warm)
