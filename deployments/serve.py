"""Serve the deployments of ``deployments/prefect.yaml`` from one long-running process.

Single-machine alternative to ``prefect deploy`` + a work pool: no worker, no pool; the
process that calls :func:`serve` polls the Prefect API and runs the flows itself.
``cricket serve`` calls it; so does ``python -m cricket.deployments.serve``.

The deployments are written once, in ``prefect.yaml`` (names, entrypoints,
schedules, parameters, tags, concurrency); this module reads that file and builds the
same deployments in code, leaving out only the work pool and the pull steps, which a
served deployment does not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")


def deployment_configs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The ``deployments`` of ``prefect.yaml`` (YAML anchors resolved)."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        return list(yaml.safe_load(fh)["deployments"])


def _flow(entrypoint: str) -> Any:
    """The flow object of a module entrypoint such as ``cricket.flows.score:hourly_score``."""
    module, _, name = entrypoint.partition(":")
    return getattr(importlib.import_module(module), name)


def deployment_specs(*, schedules: bool = True) -> list[tuple[Any, dict[str, Any]]]:
    """Each deployment of ``prefect.yaml`` as its flow and the keyword arguments that
    make it a served deployment (``Flow.to_deployment``, ``Runner.add_flow``).

    ``schedules=False`` leaves the cron schedules off (runs only when started by hand).
    """
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    specs = []
    for cfg in deployment_configs():
        limit = cfg.get("concurrency_limit")
        if isinstance(limit, dict):
            limit = ConcurrencyLimitConfig(
                limit=limit["limit"],
                collision_strategy=ConcurrencyLimitStrategy(limit["collision_strategy"]),
            )
        crons = [
            DeploymentScheduleCreate(
                schedule=CronSchedule(cron=s["cron"], timezone=s.get("timezone", "UTC")),
                active=s.get("active", True),
            )
            for s in (cfg.get("schedules") or [])
            if schedules
        ]
        specs.append((_flow(cfg["entrypoint"]), dict(
            name=cfg["name"],
            description=cfg.get("description"),
            schedules=crons or None,
            parameters=cfg.get("parameters") or {},
            tags=cfg.get("tags") or [],
            concurrency_limit=limit,
            # Module entrypoints (cricket.flows.score:hourly_score): runs import the installed
            # project, whatever the serving process' working directory is.
            entrypoint_type=EntrypointType.MODULE_PATH,
        )))
    return specs


def build_deployments(*, schedules: bool = True) -> list[RunnerDeployment]:
    """Build every deployment of ``prefect.yaml`` for serving.

    ``schedules=False`` leaves the cron schedules off (runs only when started by hand).
    Nothing is sent to the Prefect API until the deployments are served or applied.
    """
    return [flow.to_deployment(**kwargs) for flow, kwargs in deployment_specs(schedules=schedules)]


def api_url_configured() -> bool:
    """Whether a Prefect API is configured (``PREFECT_API_URL`` in the environment or
    in the Prefect profile); without one, ``serve`` runs against a temporary server."""
    import os

    from prefect.settings import PREFECT_API_URL

    return bool(os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value())


def serve(*, limit: int | None = None, schedules: bool = True, dask_workers: int = 0,
          warm: bool = True) -> None:
    """Register the deployments and run their flows from this process until stopped.

    ``limit`` caps how many flow runs this process runs at once (default: no cap beyond
    the per-deployment concurrency limits). ``dask_workers``: start a Dask LocalCluster
    of that many worker processes (one thread each) here, held warm while serving, and
    point every served run at it (``CRICKET_DASK_ADDRESS``, inherited by the run's
    process): batch tasks then run in processes that have imported Cricket once, not
    per run. ``warm``: start each run's process by forking a process that has imported
    the flows once (``cricket.deployments.warm_starts``), not by spawning a new
    interpreter that imports everything again. Blocks; stop with Ctrl-C (schedules are paused on shutdown so runs do not
    pile up while nothing serves them).
    """
    from cricket.deployments.warm_starts import warm_starts

    entrypoints = [cfg["entrypoint"] for cfg in deployment_configs()]
    # the fork server starts after the cluster: runs forked from it inherit its address
    with local_cluster(dask_workers), warm_starts(entrypoints, enabled=warm) as forked:
        if forked:
            serve_flows(deployment_specs(schedules=schedules), limit=limit)
        else:
            from prefect import serve as prefect_serve

            prefect_serve(*build_deployments(schedules=schedules), limit=limit)


def serve_flows(specs: list[tuple[Any, dict[str, Any]]], *, limit: int | None = None) -> None:
    """Serve ``specs`` (flow, deployment options) as ``prefect.serve`` serves deployments,
    but with the flow objects given to the runner (``Runner.add_flow``): the runner then
    starts each run from the flow object in a child process (``run_flow_in_subprocess``,
    forked from the warm process), instead of a new ``python -m prefect.engine`` that
    loads the flow from its entrypoint. Blocks until stopped."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.logging import get_logger
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True, limit=limit)
    names = []
    for flow, kwargs in specs:
        runner.add_flow(flow, **kwargs)
        names.append(f"{flow.name}/{kwargs['name']}")
    print("Serving (runs start from a warm process): " + ", ".join(names), flush=True)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        get_logger("cricket.serve").info("Received %s, shutting down...", type(exc).__name__)


@contextmanager
def local_cluster(workers: int) -> Iterator[str | None]:
    """With ``workers`` > 0: a Dask LocalCluster of that many processes, warmed (each has
    imported the flows' modules), its address in ``CRICKET_DASK_ADDRESS`` for this
    process and the runs it starts; yields the address. With 0: nothing (None)."""
    import os

    if workers <= 0:
        yield None
        return
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(_import_flows)
        before = os.environ.get("CRICKET_DASK_ADDRESS")
        os.environ["CRICKET_DASK_ADDRESS"] = cluster.scheduler_address
        try:
            yield cluster.scheduler_address
        finally:
            if before is None:
                os.environ.pop("CRICKET_DASK_ADDRESS", None)
            else:
                os.environ["CRICKET_DASK_ADDRESS"] = before


def _import_flows() -> None:
    for cfg in deployment_configs():
        importlib.import_module(cfg["entrypoint"].partition(":")[0])


if __name__ == "__main__":
    serve()
