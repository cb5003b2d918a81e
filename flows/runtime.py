"""What every flow needs at run time: settings, the run's scheduled time, the task runner."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import TypeAdapter

from cricket.config import Settings
from cricket.windows import floor_time, score_window, utc

T = TypeVar("T")


def scheduled_time() -> datetime:
    """The scheduled start of this flow run (re-running a past run gives the same time);
    now, for a run started by hand."""
    from prefect.runtime import flow_run

    return utc(flow_run.scheduled_start_time)


def _time(value: Any) -> datetime:
    """A run parameter as a UTC datetime: a datetime from a call, an ISO string from a
    deployment."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return utc(value)


def _span(value: Any) -> timedelta:
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    return TypeAdapter(timedelta).validate_python(value)


def describe_run(kind: str, params: dict[str, Any]) -> str:
    """What a run does, in a few words: the window it scores, the range it backfills,
    where its training ends (times in UTC; a pinned model version at the end)."""
    version = f" v{params['model_version']}" if params.get("model_version") else ""
    if kind == "score":
        at = params.get("at")
        start, end = score_window(
            _time(at) if at else scheduled_time(), _span(params.get("window", "PT1H"))
        )
        return f"score {start:%Y-%m-%d %H:%M} to {end:%H:%M}{version}"
    if kind == "points-score":
        end = params.get("end")
        return f"{kind} to {(_time(end) if end else scheduled_time()):%Y-%m-%d %H:%M}{version}"
    if kind.endswith("backfill"):
        start, end = _time(params["start"]), _time(params["end"])
        return f"{kind} {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}{version}"
    if kind.endswith("retrain"):
        end = params.get("end")
        end = _time(end) if end else floor_time(scheduled_time(), timedelta(hours=1))
        return f"{kind} to {end:%Y-%m-%d %H:%M}"
    return kind


def run_name(kind: str) -> Callable[[], str]:
    """For ``@flow(flow_run_name=run_name(kind))``: name each run with
    :func:`describe_run`, so the Prefect UI's run list reads as a log. Parameters it
    cannot read give Prefect's usual generated name: naming never fails a run."""

    def name() -> str:
        from prefect.runtime import flow_run
        from prefect.utilities.names import generate_slug

        try:
            return describe_run(kind, dict(flow_run.parameters or {}))
        except Exception:  # noqa: BLE001 - a name is never worth a failed run
            return generate_slug(2)

    return name


def default_workers() -> int:
    """Threads of the local task runner: one per core, at least 2 (a batch waiting on
    InfluxDB overlaps one that computes), at most 8."""
    return max(2, min(8, os.cpu_count() or 2))


def resolve_task_runner(settings: Settings | None = None, address: str | None = None,
                        threads: int | None = None) -> TaskRunner:
    """Dask on ``address`` (default ``settings.dask_address``, i.e. ``CRICKET_DASK_ADDRESS``)
    when set; else, on this machine, threads (``threads``, default one per core) or
    (``CRICKET_TASK_RUNNER=processes``) a pool of processes that the flow run starts."""
    settings = settings or Settings()
    address = address or settings.dask_address
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    if settings.task_runner == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=default_workers())
    return ThreadPoolTaskRunner(max_workers=threads or default_workers())


def workers_api_url() -> str | None:
    """The Prefect API that Dask workers must report to when none is configured: the
    temporary server this process started (Prefect's ephemeral API; the CLI's and
    ``fleet.py``'s default). Workers do not inherit it: without its URL in the settings
    sent with each task, every worker starts a temporary server of its own on its first
    task (25-40 s each on 2 busy cores, several servers on one database). None when
    ``PREFECT_API_URL`` is set (workers get it) or no temporary server runs here."""
    import sys

    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    server_module = sys.modules.get("prefect.server.api.server")  # imported once started
    if server_module is None:
        return None
    server = server_module.SubprocessASGIServer._instances.get(None)
    if server is None or not server.running or server.server_process is None:
        return None
    return server.api_url


class SettingsTaskRunner(TaskRunner):
    """The flows' task runner: it reads ``CRICKET_DASK_ADDRESS`` (Settings) when a flow
    run starts, not when the flow module is imported, then hands every submission to a
    ``DaskTaskRunner`` on that scheduler or to a local ``ThreadPoolTaskRunner``.

    ``address`` fixes the scheduler (``flow.with_options(task_runner=
    SettingsTaskRunner("tcp://host:8786"))``) regardless of the environment. ``threads``:
    the local thread pool's size (default one per core)."""

    def __init__(self, address: str | None = None, threads: int | None = None) -> None:
        self.address = address
        self.threads = threads
        self.inner: TaskRunner | None = None
        self.api_url: str | None = None  # for Dask workers, see workers_api_url
        super().__init__()

    @property
    def name(self) -> str:
        inner = getattr(self, "inner", None)
        return inner.name if inner is not None else "settings"

    def duplicate(self) -> SettingsTaskRunner:
        return type(self)(self.address, self.threads)

    def __enter__(self) -> SettingsTaskRunner:
        inner = resolve_task_runner(address=self.address, threads=self.threads)
        inner.__enter__()
        self.inner = inner
        self.api_url = workers_api_url() if not isinstance(inner, ThreadPoolTaskRunner) else None
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        inner, self.inner = self.inner, None
        try:
            if inner is not None:
                inner.__exit__(*exc)
        finally:
            super().__exit__(*exc)

    def _started_inner(self) -> TaskRunner:
        if self.inner is None:
            raise RuntimeError("The task runner must be started before submitting work.")
        return self.inner

    def submit(  # type: ignore[override]
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> Any:
        inner = self._started_inner()
        if self.api_url is None:
            return inner.submit(task, parameters, wait_for, dependencies)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # the settings sent with the task name this process's temporary API
        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            return inner.submit(task, parameters, wait_for, dependencies)

    def map(self, task: Any, parameters: dict[str, Any], wait_for: Iterable[Any] | None = None) -> Any:  # type: ignore[override]
        return self._started_inner().map(task, parameters, wait_for)

    def cancel_all(self) -> None:
        inner = self.inner
        if inner is not None and hasattr(inner, "cancel_all"):
            inner.cancel_all()


def task_runner(settings: Settings | None = None, threads: int | None = None) -> TaskRunner:
    """For ``@flow(task_runner=task_runner())``: a runner that decides between Dask and
    local threads when each flow run starts. Given ``settings``, the runner they name now.
    ``threads``: local threads (default one per core)."""
    if settings is None:
        return SettingsTaskRunner(threads=threads)
    return resolve_task_runner(settings, threads=threads)


def waiting_threads() -> int:
    """Local threads for a flow whose batch tasks mostly wait on processes of their own
    (``cricket.tasks.score_processes``): the batches kept in flight plus one writer per
    core, so a finished batch is written at once instead of after the next batch."""
    return in_flight_limit_local() + default_workers()


def in_flight_limit_local() -> int:
    """Batch tasks a flow keeps in flight on local threads (see ``in_flight_limit``)."""
    return default_workers() + 1


def on_local_threads() -> bool:
    """Whether the current flow run's tasks run on this process's threads (not on Dask
    or in a pool of processes)."""
    from prefect.context import FlowRunContext

    runner = getattr(FlowRunContext.get(), "task_runner", None)
    runner = getattr(runner, "inner", None) or runner
    return isinstance(runner, ThreadPoolTaskRunner)


def in_flight_limit(settings: Settings) -> int:
    """How many batch tasks a flow keeps submitted at once: enough to keep every worker
    busy with one more queued, few enough that finished batches are written (and their
    memory freed) while later ones are still being read. On Dask: two per worker thread
    of the cluster (64 when its size cannot be read): each submitted batch holds its
    sub-bundle (~23 MB per 100 series) in the scheduler until it runs."""
    if settings.dask_address:
        threads = cluster_threads()
        return 2 * threads if threads else 64
    return in_flight_limit_local()


def cluster_threads() -> int | None:
    """Worker threads of the Dask cluster the current flow run's task runner uses (None
    outside a flow run on Dask, or when the scheduler does not say)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None)
    runner = getattr(runner, "inner", None) or runner
    if runner is None or not hasattr(runner, "client"):
        return None
    try:
        return sum(runner.client.nthreads().values()) or None
    except Exception:  # noqa: BLE001 - a limit is never worth a failed run
        return None


def pipelined(
    submit: Callable[[T], PrefectFuture[Any]], items: Iterable[T], limit: int
) -> Iterator[tuple[int, T, PrefectFuture[Any]]]:
    """Submit ``submit(item)`` for each item, at most ``limit`` in flight, and yield
    ``(index, item, future)`` as each finishes (completion order), so the caller can
    start the next stage (e.g. writing) of a batch while later batches still run."""
    from prefect.futures import as_completed

    todo = iter(enumerate(items))
    running: dict[PrefectFuture[Any], tuple[int, T]] = {}

    def top_up() -> None:
        while len(running) < max(1, limit):
            nxt = next(todo, None)
            if nxt is None:
                return
            running[submit(nxt[1])] = nxt

    top_up()
    while running:
        done = next(as_completed(list(running)))
        index, item = running.pop(done)
        top_up()
        yield index, item, done



def release_freed_memory() -> None:
    """Hand the memory this process has freed back to the system, where the C library
    allows it (glibc's ``malloc_trim``; elsewhere nothing happens).

    A batch task's arrays are allocated and freed in its worker thread, whose malloc
    arena keeps the freed pages for reuse; numpy's larger arrays join it once glibc
    raises its mmap threshold (it does on the first free of a large block). Batch after
    batch the arenas fragment, and freed memory is not reused as fast as new batches
    ask for more: a 1,000-series retrain grew ~1 MB per series trained although the
    flow held ~15 KB of it. Called by a flow after each finished batch is taken in
    (cost: a few milliseconds)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def batch_size_for(settings: Settings, n_series: int) -> int:
    """Series per batch task: ``settings.batch_size`` at most, but on this machine no more
    than an even share per worker thread, so a small fleet still uses every core. On Dask
    the setting is used as is (the cluster's size is not known here)."""
    size = settings.batch_size
    if settings.dask_address or n_series <= 0:
        return size
    return max(1, min(size, -(-n_series // default_workers())))
