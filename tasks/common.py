"""Task options shared by the pipeline's tasks.

I/O tasks retry with backoff; no task caches its (large) inputs or results by hashing
them, and results are not persisted: the data lives in InfluxDB and MLflow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from prefect.cache_policies import NO_CACHE

from cricket.errors import is_retryable

IO_RETRIES = 3
IO_BACKOFF = [2, 5, 15]


def retry_if_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry what can heal (a server that did not answer,
    an HTTP 5xx after the client's own retries, a locked store); fail at once on what
    cannot (a missing database or store, an unknown version, refused credentials, bad
    input): see ``cricket.errors.is_retryable``."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failed run's own exception
        return is_retryable(exc)
    return True


#: options for tasks that talk to InfluxDB or MLflow
IO_TASK = dict(
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_retryable,
    cache_policy=NO_CACHE,
    persist_result=False,
)

#: options for CPU-bound tasks (fitting, scoring) that should not be retried blindly
CPU_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


class _ThreadTimeoutNotice(logging.Filter):
    """Prefect warns on every task with a timeout that runs in a worker thread (the
    default task runner) that the timeout cannot interrupt blocking I/O. Cricket's I/O
    is bounded by its own HTTP timeouts and retry counts, and the task timeouts still
    apply once the call returns (and fully on Dask), so the notice is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeouts in worker threads" not in record.getMessage()


logging.getLogger("prefect.task_runs").addFilter(_ThreadTimeoutNotice())


class Stopwatch:
    """Seconds per stage of a flow run, for its summary: ``lap(name)`` records the time
    since the previous lap under ``name`` (no name: just restart the lap);
    ``add_from(results, *names)`` adds the ``seconds`` the tasks measured themselves."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self._laps: dict[str, float] = {}

    def lap(self, name: str | None = None) -> None:
        now = time.perf_counter()
        if name is not None:
            self._laps[name] = self._laps.get(name, 0.0) + now - self._last
        self._last = now

    def add_from(self, results: Iterable[Any], *names: str) -> None:
        results = list(results)
        for name in names:
            self._laps[name] = self._laps.get(name, 0.0) + sum(
                r.seconds.get(name, 0.0) for r in results
            )

    def timings(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self._laps.items()}

    def total(self) -> float:
        return round(time.perf_counter() - self._start, 2)
