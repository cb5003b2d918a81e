"""The three Cricket deployments as code, served from one long-running process.

Single-machine alternative to ``prefect.yaml`` + a work pool: no worker, no pool; the
process that calls :func:`serve` polls the Prefect API and runs the flows itself.
``cricket serve`` calls it; so does ``python -m deployments.serve``.

The deployments here must match ``deployments/prefect.yaml`` (names, schedules,
parameters, tags, concurrency); ``tests/test_deployments.py`` checks that they do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

#: Schedules run in this timezone (an IANA name); change it here and in prefect.yaml.
TIMEZONE = "UTC"

#: The selector all three deployments share (same as the ``selector`` anchor in prefect.yaml).
SELECTOR: dict[str, Any] = {
    "measurement": "waveform",
    "field": "value",
    "tags": {},
    "group_by": ["host"],
    "every": "PT10S",
    "aggregate": "mean",
}


def build_deployments(*, schedules: bool = True) -> list[RunnerDeployment]:
    """Build the ``nightly-retrain``, ``hourly-score`` and ``backfill`` deployments.

    ``schedules=False`` leaves the cron schedules off (runs only when started by hand).
    Nothing is sent to the Prefect API until the deployments are served or applied.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    from flows.backfill import backfill
    from flows.retrain import nightly_retrain
    from flows.score import hourly_score

    def cron(expr: str) -> list[CronSchedule] | None:
        return [CronSchedule(cron=expr, timezone=TIMEZONE)] if schedules else None

    # Module entrypoints (flows.score:hourly_score): runs import the installed project,
    # whatever the serving process' working directory is.
    module = EntrypointType.MODULE_PATH
    retrain = nightly_retrain.to_deployment(
        name="nightly-retrain",
        description="Learn each series' normal shapes from the last 7 days, register a "
        "new model version in MLflow and promote it to champion when it is not worse.",
        schedules=cron("0 2 * * *"),
        parameters={
            "selector": SELECTOR,
            "spec": {},
            "train_window": "P7D",
            "holdout": "PT24H",
            "end": None,
        },
        tags=["cricket", "retrain", "nightly"],
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        entrypoint_type=module,
    )
    score = hourly_score.to_deployment(
        name="hourly-score",
        description="Score the last complete hour with the champion model and write "
        "scores and events back to InfluxDB.",
        schedules=cron("5 * * * *"),
        parameters={"selector": SELECTOR, "window": "PT1H", "at": None, "model_version": None},
        tags=["cricket", "score", "hourly"],
        # One run at a time; a run that finds one still going is cancelled rather than
        # queued, so a stuck run never builds a backlog (backfill recovers the hour).
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        ),
        entrypoint_type=module,
    )
    back = backfill.to_deployment(
        name="backfill",
        description="Score a past range chunk by chunk (start and end are entered when "
        "the run is created). Writing the same window twice overwrites, never duplicates.",
        parameters={"chunk": "PT1H", "model_version": None, "selector": SELECTOR},
        tags=["cricket", "score", "backfill"],
        entrypoint_type=module,
    )
    return [retrain, score, back]


def serve(*, limit: int | None = None, schedules: bool = True) -> None:
    """Register the three deployments and run their flows from this process until stopped.

    ``limit`` caps how many flow runs this process runs at once (default: no cap beyond
    the per-deployment concurrency limits). Blocks; stop with Ctrl-C (schedules are
    paused on shutdown so runs do not pile up while nothing serves them).
    """
    from prefect import serve as prefect_serve

    prefect_serve(*build_deployments(schedules=schedules), limit=limit)


if __name__ == "__main__":
    serve()
