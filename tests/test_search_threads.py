"""BLAS thread limits across worker threads (``cricket.search``).

OpenBLAS' thread count is one setting for the process and threadpoolctl lets one thread
at a time change it, while scikit-learn's own limit around Lloyd's iterations restores
what it read on entry: with per-call limits only, two workers fitting at once left BLAS
at 2 threads (and spin-waiting) most of the time. ``blas_held_at_one`` held from the
flow's thread keeps it at one for every worker, and gives it back afterwards.
"""

from __future__ import annotations

import threading

import numpy as np
from threadpoolctl import threadpool_info

from cricket.search import blas_held_at_one
from cricket.shapes import ShapeLibrary


def _blas_threads() -> set[int]:
    return {d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}


def test_blas_stays_at_one_thread_for_workers_fitting_at_once():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(6000) / 7.0) + 0.1 * rng.normal(size=6000)
    before = _blas_threads()
    seen: list[set[int]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(2):  # each fit enters and leaves scikit-learn's own limit
                ShapeLibrary(n_clusters=20, holdout_fraction=0.0).fit(x)
                seen.append(_blas_threads())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with blas_held_at_one():
        workers = [threading.Thread(target=work) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        inside = _blas_threads()
    assert not errors
    assert seen and all(s == {1} for s in seen) and inside == {1}
    assert _blas_threads() == before  # given back
