"""Served flow runs forked from a warm process instead of started cold.

Prefect's runner starts every served flow run in a new Python process
(``multiprocessing`` "spawn"): the process imports Prefect, pandas, scikit-learn,
MLflow and the flow's modules before the run can move to Running, 4-15 s on a busy
2-core machine, paid again by every hourly run. ``cricket serve`` instead starts one
*fork server* (Python's ``multiprocessing`` "forkserver") when it starts serving: a
single-threaded process that imports those modules once and then forks a child per flow
run. The child is the same kind of process the runner would have spawned: the same
Prefect code runs the flow run in it (``prefect.flow_engine.run_flow_in_subprocess``,
only its process context changes), with the run's own environment and settings applied
on start, so

- every run is still a real Prefect flow run in a process of its own, with its states,
  task runs, logs and artifacts in the API and the UI;
- the runner still tracks the child by its process id: cancelling a run signals that
  process (the control channel first, then SIGTERM/SIGKILL), and a child that dies
  (a crash, the kernel's OOM killer) is reported Crashed from its exit code;
- memory is still given back when a run ends: each run is a process that exits.

What a warm start gives up: the fork server holds the modules as they were when
``cricket serve`` started, so a new version of Cricket installed while serving runs
from the next ``cricket serve`` start, not from the next run (restart the server after
an upgrade, as for the deployments' definitions); and a module that reads the
environment when imported sees the server's environment at that time (each run's
environment is set before the flow runs, as with spawn). ``cricket serve
--cold-starts`` keeps Prefect's own spawn.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

#: imported by the runs but not by the flows' modules: the serving program's command line
#: (each forked run runs the program's main script as ``__mp_main__``, and Python 3.11's
#: fork server does not preload it), and what tasks import inside functions: the model
#: registry (MLflow and its SQL stores), k-means, the Dask task runner
LAZY_IMPORTS = (
    "cricket.cli",
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "sklearn.cluster",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect_dask",
)

_lock = threading.Lock()


class _ForkserverModule:
    """Stands in for the ``multiprocessing`` module inside ``prefect.flow_engine`` while
    it starts a run: its ``get_context("spawn")`` gives the fork server's context."""

    def get_context(self, method: str | None = None) -> Any:
        return multiprocessing.get_context("forkserver")

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)


def _hook_points() -> tuple[Any, Any] | None:
    """Prefect's modules this relies on (``prefect.runner._starter_direct`` calls
    ``run_flow_in_subprocess``, which takes its process context from the ``multiprocessing``
    module of ``prefect.flow_engine``), or None when this Prefect is laid out otherwise."""
    try:
        import prefect.flow_engine as engine
        import prefect.runner._starter_direct as starter
    except ImportError:
        return None
    if getattr(starter, "run_flow_in_subprocess", None) is not engine.run_flow_in_subprocess:
        return None
    if getattr(engine, "multiprocessing", None) is not multiprocessing:
        return None
    return engine, starter


def supported() -> bool:
    """Whether the installed Prefect can start served runs from the fork server."""
    return _hook_points() is not None and "forkserver" in multiprocessing.get_all_start_methods()


def preload_modules(entrypoints: Iterable[str]) -> list[str]:
    """What the fork server imports: the serving program (so a run does not import it
    again), the flows' modules and what their tasks import lazily."""
    flows = [e.partition(":")[0] for e in entrypoints]
    return ["__main__", *dict.fromkeys(flows), *LAZY_IMPORTS]


def start_fork_server(modules: list[str]) -> float:
    """Start the fork server and have it import ``modules``; returns the seconds it took.
    Runs forked from it start with those modules imported."""
    from multiprocessing import forkserver

    t0 = time.perf_counter()
    multiprocessing.set_forkserver_preload(modules)
    forkserver.ensure_running()
    # the server imports asynchronously: the first fork waits for it, so wait here,
    # where nothing is timed, by starting and joining one empty process
    proc = multiprocessing.get_context("forkserver").Process(target=_nothing)
    proc.start()
    proc.join()
    return time.perf_counter() - t0


def _nothing() -> None:
    return None


class FlowByReference:
    """Pickles as its entrypoint: unpickled, it is the flow object of the run's process
    (already imported by the fork server). Prefect would pickle the flow object by value,
    and a flow function's annotations (``from __future__ import annotations``) would not
    resolve without its module's globals."""

    def __init__(self, entrypoint: str) -> None:
        self.entrypoint = entrypoint

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return flow_in_forked_run, (self.entrypoint,)


def flow_in_forked_run(entrypoint: str) -> Any:
    """The run's flow, in the forked run's process (unpickling the run's payload calls it,
    before the run starts). A forked process inherits the fork server's state where a
    spawned one starts afresh: Python reseeds ``random`` after a fork itself, NumPy's
    global generator is reseeded here, so no two runs draw the same numbers from it."""
    import numpy as np

    np.random.seed()
    return load_flow(entrypoint)


def load_flow(entrypoint: str) -> Any:
    """The flow object at a module entrypoint such as ``cricket.flows.score:hourly_score``."""
    import importlib

    module, _, name = entrypoint.partition(":")
    return getattr(importlib.import_module(module), name)


@contextmanager
def warm_starts(entrypoints: Iterable[str], enabled: bool = True) -> Iterator[bool]:
    """While inside: served runs of this process are forked from a warm fork server
    (started here, with the flows of ``entrypoints`` imported). Yields whether warm
    starts are on (False when disabled or this Prefect does not allow them: runs then
    start as Prefect starts them)."""
    from prefect.logging import get_logger

    logger = get_logger("cricket.serve")
    points = _hook_points() if enabled else None
    if points is None or not supported():
        if enabled:
            logger.warning("this Prefect starts flow runs its own way: served runs start "
                           "cold (a new process that imports everything per run)")
        yield False
        return
    engine, starter = points
    entrypoints = list(entrypoints)
    by_flow = {id(load_flow(e)): FlowByReference(e) for e in entrypoints}
    seconds = start_fork_server(preload_modules(entrypoints))
    logger.info("flow runs start from a warm process (imports done once: %.1f s)", seconds)
    spawn_in_subprocess = engine.run_flow_in_subprocess

    def run_flow_in_warm_process(flow: Any, *args: Any, **kwargs: Any) -> Any:
        flow = by_flow.get(id(flow), flow)
        with _lock:  # the swap is seen only by this call
            engine.multiprocessing = _ForkserverModule()
            try:
                return spawn_in_subprocess(flow, *args, **kwargs)
            finally:
                engine.multiprocessing = multiprocessing

    starter.run_flow_in_subprocess = run_flow_in_warm_process
    try:
        yield True
    finally:
        starter.run_flow_in_subprocess = spawn_in_subprocess
