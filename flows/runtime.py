"""What every flow needs at run time: settings, the run's scheduled time, the task runner."""

from __future__ import annotations

from datetime import datetime

from prefect.task_runners import ThreadPoolTaskRunner

from cricket.config import Settings
from cricket.pipeline import utc


def scheduled_time() -> datetime:
    """The scheduled start of this flow run (re-running a past run gives the same time);
    now, for a run started by hand."""
    from prefect.runtime import flow_run

    return utc(flow_run.scheduled_start_time)


def task_runner(settings: Settings | None = None):
    """Dask when ``CRICKET_DASK_ADDRESS`` is set, else threads on this machine."""
    settings = settings or Settings()
    if settings.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=settings.dask_address)
    return ThreadPoolTaskRunner(max_workers=2)
