"""Speed and memory of the shape-library engine on a 1,000,000-point waveform.

Measures, in one run and on the same data:
- reconstruct + score (one reconstruction pass, per-point scores, threshold, events)
  of the engine with a fitted 150-centroid library;
- the notebook's ``reconstruct(data, window, clusterer)`` (reference/001, "Anomaly
  Detection"), fixed only so that it runs: an integer slide, 2-D input to
  ``predict``. It keeps the notebook's copying chunker and its one ``predict`` call
  per segment. It is timed on a prefix (``--loop-points``) and extrapolated by the
  number of segments (its cost is linear in them; the output says so);
- the compute bound: one numpy matrix product of the same shapes
  (segments x segment_len) @ (segment_len x centroids), in float64 and float32 (the
  engine searches in float32), with numpy's default BLAS threads and with one;
- fit time of KMeans and of MiniBatchKMeans on the same series;
- peak resident memory of the process.

The machine is shared, so the timings are interleaved: each round times the engine,
the matrix products and the notebook loop once, one after the other, and each figure
is the best over the rounds (the ratios use those bests; the median of the per-round
ratios is printed too). The load average before and after is part of the output.

Run: ``.venv/bin/python benchmarks/core_speed.py [--points N] [--loop-points N]
[--rounds N] [--skip-kmeans]``. The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
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


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def sliding_chunker(data: np.ndarray, window_len: int, slide_len: int) -> list[np.ndarray]:
    """The notebook's chunker, as written: a copy per chunk, a short tail dropped."""
    chunks = []
    for pos in range(0, len(data), slide_len):
        chunk = np.copy(data[pos : pos + window_len])
        if len(chunk) != window_len:
            continue
        chunks.append(chunk)
    return chunks


def notebook_reconstruct(data: np.ndarray, window: np.ndarray, clusterer) -> np.ndarray:
    """The notebook's reconstruct(data, window, clusterer), fixed to run: the slide is
    ``window_len // 2`` (the notebook's ``/ 2`` is a float, which cannot index), and
    ``predict`` gets a 2-D row (scikit-learn rejects the 1-D segment)."""
    window_len = len(window)
    slide_len = window_len // 2
    segments = sliding_chunker(data, window_len, slide_len)
    reconstructed_data = np.zeros(len(data))

    for segment_n, segment in enumerate(segments):
        # window the segment so that we can find it in our clusters which were
        # formed from windowed data
        segment *= window
        nearest_match_idx = clusterer.predict(segment.reshape(1, -1))[0]
        nearest_match = np.copy(clusterer.cluster_centers_[nearest_match_idx])

        pos = segment_n * slide_len
        reconstructed_data[pos : pos + window_len] += nearest_match

    return reconstructed_data


def notebook_loop(data: np.ndarray, window: np.ndarray, clusterer) -> np.ndarray:
    """The notebook's reconstruction and its error (as a per-point magnitude)."""
    return np.abs(notebook_reconstruct(data, window, clusterer) - data)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def blas_info() -> list[dict[str, object]]:
    from threadpoolctl import threadpool_info

    keys = ("internal_api", "version", "num_threads", "architecture", "threading_layer")
    return [{k: d.get(k) for k in keys} for d in threadpool_info()]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--loop-points", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--clusters", type=int, default=150)
    ap.add_argument("--skip-kmeans", action="store_true", help="skip the full KMeans fit")
    args = ap.parse_args()
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    n = 32
    x = waveform(args.points)
    out: dict[str, object] = {
        "points": args.points,
        "segment_len": n,
        "clusters": args.clusters,
        "cpus": os.cpu_count(),
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
        "blas": blas_info(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }

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

    # -- compute bound: one matrix product of the same shapes
    m = len(x) // (n // 2) + 1
    rng = np.random.default_rng(1)
    segs64 = rng.standard_normal((m, n))
    ct64 = np.ascontiguousarray(lib.centroids_.T)
    segs32 = segs64.astype(np.float32)
    ct32 = ct64.astype(np.float32)

    def matmul_one_thread(a: np.ndarray, b: np.ndarray) -> None:
        with threadpool_limits(1, user_api="blas"):
            a @ b

    # -- the notebook's loop, on a prefix, extrapolated by the number of segments
    clusterer = KMeans(n_clusters=lib.n_clusters_, init=lib.centroids_, n_init=1, max_iter=1)
    clusterer.fit(lib.centroids_)  # each centroid its own cluster: centres unchanged
    assert np.allclose(clusterer.cluster_centers_, lib.centroids_)
    w = window(n)
    loop_pts = min(args.loop_points, len(x))
    seg_part = (loop_pts - n) // (n // 2) + 1
    seg_full = (len(x) - n) // (n // 2) + 1

    timers: dict[str, Callable[[], object]] = {
        "engine": engine,
        "matmul64": lambda: segs64 @ ct64,
        "matmul32": lambda: segs32 @ ct32,
        "matmul64_1thread": lambda: matmul_one_thread(segs64, ct64),
        "matmul32_1thread": lambda: matmul_one_thread(segs32, ct32),
        "loop": lambda: notebook_loop(x[:loop_pts], w, clusterer),
    }
    for name, fn in timers.items():  # warm up (caches, BLAS threads, sklearn's checks)
        if name != "loop":
            fn()
    notebook_loop(x[: 50 * n], w, clusterer)
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.rounds):
        for name, fn in timers.items():
            times[name].append(timed(fn))
    best = {name: min(v) for name, v in times.items()}

    t_engine = best["engine"]
    t_loop = best["loop"] * seg_full / seg_part
    out["engine_seconds"] = t_engine
    out["engine_seconds_median"] = float(np.median(times["engine"]))
    for name in ("matmul64", "matmul32", "matmul64_1thread", "matmul32_1thread"):
        out[f"{name}_seconds"] = best[name]
    out["fraction_of_matmul_bound"] = best["matmul64"] / t_engine
    out["fraction_of_matmul32_bound"] = best["matmul32"] / t_engine
    out["fraction_of_matmul32_1thread_bound"] = best["matmul32_1thread"] / t_engine
    out["notebook_loop_seconds_measured"] = best["loop"]
    out["notebook_loop_points_measured"] = loop_pts
    out["notebook_loop_segments_measured"] = seg_part
    out["notebook_loop_us_per_segment"] = best["loop"] / seg_part * 1e6
    out["notebook_loop_seconds_extrapolated"] = t_loop
    out["notebook_loop_extrapolation"] = f"linear in segments: x {seg_full}/{seg_part}"
    out["ratio_vs_notebook_loop"] = t_loop / t_engine
    out["ratio_vs_notebook_loop_median_of_rounds"] = float(
        np.median(
            [
                lp * seg_full / seg_part / en
                for lp, en in zip(times["loop"], times["engine"], strict=True)
            ]
        )
    )
    out["rounds"] = args.rounds
    out["peak_rss_mb"] = peak_rss_mb()
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]

    print(
        f"engine reconstruct+score of {len(x):,} points: {t_engine * 1e3:.1f} ms "
        f"(best of {args.rounds} interleaved rounds; median "
        f"{out['engine_seconds_median'] * 1e3:.1f} ms)\n"
        f"matmul bound ({m}x{n} @ {n}x{lib.n_clusters_}): float64 "
        f"{best['matmul64'] * 1e3:.1f} ms, float32 {best['matmul32'] * 1e3:.1f} ms "
        f"(one BLAS thread: {best['matmul64_1thread'] * 1e3:.1f} / "
        f"{best['matmul32_1thread'] * 1e3:.1f} ms) -> fraction of bound "
        f"{out['fraction_of_matmul_bound']:.2f} (float64), "
        f"{out['fraction_of_matmul32_bound']:.2f} (float32)\n"
        f"notebook loop: {best['loop']:.2f} s on the first {loop_pts:,} points "
        f"({out['notebook_loop_us_per_segment']:.0f} us per segment), extrapolated to "
        f"{t_loop:.1f} s for all {len(x):,} (linear in segments) "
        f"-> ratio {out['ratio_vs_notebook_loop']:.0f}x "
        f"(median of rounds {out['ratio_vs_notebook_loop_median_of_rounds']:.0f}x)\n"
        f"peak RSS {out['peak_rss_mb']:.0f} MB; load average "
        f"{out['load_avg_start']} -> {out['load_avg_end']} on {out['cpus']} CPUs",
        file=sys.stderr,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
