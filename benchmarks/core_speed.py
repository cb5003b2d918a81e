"""Speed and memory of the shape-library engine on a 1,000,000-point waveform.

Measures, in one run and on the same data:
- reconstruct + score (one reconstruction pass, per-point scores, threshold, events)
  of the engine with a fitted 150-centroid library;
- the notebook's per-segment loop (fixed to run: integer slide, a copy per segment,
  one ``predict`` call per segment), timed on a prefix and extrapolated linearly to
  the whole series (it is linear in the number of segments; the output says so);
- the compute bound: one numpy matrix product of the same shapes
  (segments x segment_len) @ (segment_len x centroids);
- fit time of KMeans and of MiniBatchKMeans on the same series;
- peak resident memory of the process.

Run: ``.venv/bin/python benchmarks/core_speed.py [--points N] [--loop-points N]``.
The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable

import numpy as np

from cricket.scoring import events_from_mask
from cricket.segments import window
from cricket.shapes import ShapeLibrary


def waveform(n_points: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_points)
    return (
        50.0
        + 10 * np.sin(2 * np.pi * t / 64)
        + 5 * np.sin(2 * np.pi * t / 23.7)
        + rng.standard_normal(n_points)
    )


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def notebook_loop(data: np.ndarray, clusterer, segment_len: int) -> np.ndarray:
    """The notebook's reconstruct(), fixed: integer slide, no in-place windowing,
    2-D input to predict, absolute error."""
    w = window(segment_len)
    slide_len = segment_len // 2
    reconstructed = np.zeros(len(data))
    for segment_n, pos in enumerate(range(0, len(data) - segment_len + 1, slide_len)):
        segment = data[pos : pos + segment_len] * w
        nearest_idx = clusterer.predict(segment.reshape(1, -1))[0]
        nearest = np.copy(clusterer.cluster_centers_[nearest_idx])
        p = segment_n * slide_len
        reconstructed[p : p + segment_len] += nearest
    return np.abs(reconstructed - data)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--loop-points", type=int, default=50_000)
    ap.add_argument("--clusters", type=int, default=150)
    ap.add_argument("--skip-kmeans", action="store_true", help="skip the full KMeans fit")
    args = ap.parse_args()
    from sklearn.cluster import KMeans

    n = 32
    x = waveform(args.points)
    out: dict[str, object] = {"points": args.points, "segment_len": n, "clusters": args.clusters}

    # -- fit: MiniBatchKMeans (what "auto" picks at this size), then full KMeans
    t0 = time.perf_counter()
    lib = ShapeLibrary(
        n_clusters=args.clusters, algorithm="minibatch", random_state=0, holdout_fraction=0.2
    ).fit(x)
    out["fit_seconds_minibatch"] = time.perf_counter() - t0
    out["train_segments"] = lib.n_train_segments_
    print(f"MiniBatchKMeans fit: {out['fit_seconds_minibatch']:.1f} s", file=sys.stderr)
    if not args.skip_kmeans:
        t0 = time.perf_counter()
        ShapeLibrary(
            n_clusters=args.clusters, algorithm="kmeans", random_state=0, holdout_fraction=0.2
        ).fit(x)
        out["fit_seconds_kmeans"] = time.perf_counter() - t0
        print(f"KMeans fit: {out['fit_seconds_kmeans']:.1f} s", file=sys.stderr)

    # -- engine: one reconstruction pass, scores, threshold, events
    def engine() -> object:
        a = lib.analyze(x)
        return events_from_mask(a.score > lib.threshold_, a.score, 16)

    engine()  # warm up
    t_engine = best_of(engine, 5)
    out["engine_seconds"] = t_engine

    # -- compute bound: one matrix product of the same shapes
    m = len(x) // (n // 2) + 1
    rng = np.random.default_rng(1)
    segs = rng.standard_normal((m, n))
    c_t = np.ascontiguousarray(lib.centroids_.T)
    t_matmul = best_of(lambda: segs @ c_t, 5)
    out["matmul_seconds"] = t_matmul
    out["fraction_of_matmul_bound"] = t_matmul / t_engine

    # -- the notebook's loop, on a prefix, extrapolated by the number of segments
    clusterer = KMeans(n_clusters=lib.n_clusters_, init=lib.centroids_, n_init=1, max_iter=1)
    clusterer.fit(lib.centroids_)  # each centroid its own cluster: centres unchanged
    assert np.allclose(clusterer.cluster_centers_, lib.centroids_)
    loop_pts = min(args.loop_points, len(x))
    t0 = time.perf_counter()
    notebook_loop(x[:loop_pts], clusterer, n)
    t_loop_part = time.perf_counter() - t0
    seg_part = (loop_pts - n) // (n // 2) + 1
    seg_full = (len(x) - n) // (n // 2) + 1
    t_loop = t_loop_part * seg_full / seg_part
    out["notebook_loop_seconds_measured"] = t_loop_part
    out["notebook_loop_points_measured"] = loop_pts
    out["notebook_loop_seconds_extrapolated"] = t_loop
    out["ratio_vs_notebook_loop"] = t_loop / t_engine
    out["peak_rss_mb"] = peak_rss_mb()

    print(
        f"engine reconstruct+score of {len(x):,} points: {t_engine * 1e3:.1f} ms\n"
        f"matmul bound ({m}x{n} @ {n}x{lib.n_clusters_}): {t_matmul * 1e3:.1f} ms "
        f"-> fraction of bound {out['fraction_of_matmul_bound']:.2f}\n"
        f"notebook loop: {t_loop_part:.2f} s on the first {loop_pts:,} points, "
        f"extrapolated to {t_loop:.1f} s for all {len(x):,} (linear in segments) "
        f"-> ratio {out['ratio_vs_notebook_loop']:.0f}x\n"
        f"peak RSS {out['peak_rss_mb']:.0f} MB",
        file=sys.stderr,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
