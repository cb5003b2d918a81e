"""Flows for the warm-start tests and a program that serves them the way `cricket serve`
serves Cricket's deployments (``cricket.deployments.serve.serve_flows`` under
``warm_starts``): a run that reports where it ran, one that runs until cancelled, and one
whose process dies. Run as ``python warm_serve_support.py`` with this folder on the path."""

from __future__ import annotations

import json
import os
import sys
import time

from prefect import flow, get_run_logger, task

#: set by a run in its own process: a later run must not see it
MARK: list[int] = []


@task
def where() -> dict:
    return {"pid": os.getpid(), "ppid": os.getppid()}


@flow(name="warm-probe")
def probe(tag: str = "") -> None:
    """Logs (as JSON) where the run ran, what its process had imported before it
    started, and whether a run before it left anything behind in the process."""
    preloaded = {m: m in sys.modules for m in ("mlflow", "sklearn.cluster")}
    seen = list(MARK)
    MARK.append(os.getpid())
    info = where()
    import numpy as np

    draw = float(np.random.random())  # NumPy's global generator, as the fork server left it
    get_run_logger().info("probe %s ran: %s", tag, json.dumps(
        {**info, "preloaded": preloaded, "mark_before": seen, "draw": draw}))


@flow(name="warm-sleeper")
def sleeper(seconds: float = 300.0) -> None:
    get_run_logger().info("sleeper running in process %s", os.getpid())
    time.sleep(seconds)


@flow(name="warm-crasher")
def crasher() -> None:
    os._exit(9)


ENTRYPOINTS = [f"warm_serve_support:{name}" for name in ("probe", "sleeper", "crasher")]


def main() -> None:
    from cricket.deployments.serve import serve_flows
    from cricket.deployments.warm_starts import load_flow, warm_starts

    with warm_starts(ENTRYPOINTS) as forked:
        assert forked, "this Prefect does not allow warm starts"
        serve_flows([(load_flow(e), {"name": e.rsplit(":", 1)[1]}) for e in ENTRYPOINTS])


if __name__ == "__main__":
    main()
