"""ShapeLibrary: equal to the naive loop, properties, the notebook's scenario, bad input."""

import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.exceptions import NotFittedError

from cricket.persistence import FormatVersionError, load_state, save_state
from cricket.segments import pad_for_reconstruction, window, windowed_segments
from cricket.series import BadSeriesError
from cricket.shapes import ShapeLibrary
from tests import naive


def waveform(n_points: int, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """A regular waveform around a level, like a metric: sum of sines plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_points)
    return (
        10.0
        + np.sin(2 * np.pi * t / 64)
        + 0.5 * np.sin(2 * np.pi * t / 32)
        + noise * rng.standard_normal(n_points)
    )


@pytest.fixture(scope="module")
def small_lib() -> ShapeLibrary:
    return ShapeLibrary(segment_len=16, n_clusters=12, random_state=0).fit(waveform(1500))


@pytest.mark.parametrize("length", [16, 17, 23, 200, 333])
def test_reconstruct_equals_the_naive_loop(small_lib, length):
    rng = np.random.default_rng(length)
    x = np.cumsum(rng.normal(size=length)) * 0.3 + 10  # a random walk: no ties
    rec, idx, dist = naive.reconstruct(x, small_lib.centroids_, 16)
    np.testing.assert_allclose(small_lib.reconstruct(x), rec, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(small_lib.segment_errors(x), dist, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(small_lib.residuals(x), np.abs(x - rec), atol=1e-9)
    np.testing.assert_allclose(
        small_lib.decision_function(x), naive.moving_average(np.abs(x - rec), 8), atol=1e-9
    )
    padded, _ = pad_for_reconstruction(x, 16)
    idx2, _ = small_lib.nearest(windowed_segments(padded, 16, 8))
    np.testing.assert_array_equal(idx2[1:-2], idx[1:-2])  # interior segments


def test_nearest_matches_brute_force(small_lib):
    rng = np.random.default_rng(1)
    segs = rng.normal(size=(5000, 16))
    idx, dist = small_lib.nearest(segs)
    full = np.linalg.norm(segs[:, None, :] - small_lib.centroids_[None], axis=2)
    np.testing.assert_array_equal(idx, full.argmin(axis=1))
    np.testing.assert_allclose(dist, full.min(axis=1), rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.integers(8, 150), elements=st.floats(-1e3, 1e3, width=32)),
    st.sampled_from([4, 8, 16]),
)
def test_a_library_holding_every_segment_rebuilds_exactly(x, n):
    if len(x) < n:
        x = np.resize(x, n)
    padded, _ = pad_for_reconstruction(x, n)
    lib = ShapeLibrary.from_centroids(windowed_segments(padded, n, n // 2), segment_len=n)
    scale = max(1.0, float(np.abs(x).max()))
    np.testing.assert_allclose(lib.reconstruct(x), x, rtol=0, atol=1e-9 * scale)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arrays(np.float64, st.integers(16, 100), elements=st.floats(-100, 100)))
def test_scoring_never_changes_the_callers_array(small_lib, x):
    before = x.copy()
    x.flags.writeable = True
    small_lib.reconstruct(x)
    small_lib.residuals(x)
    small_lib.decision_function(x)
    small_lib.events(x)
    np.testing.assert_array_equal(x, before)


def test_fit_does_not_change_the_callers_array():
    x = waveform(600)
    before = x.copy()
    ShapeLibrary(segment_len=16, n_clusters=5, random_state=0).fit(x)
    np.testing.assert_array_equal(x, before)


def test_the_notebooks_zeroed_samples_are_found_and_clean_data_is_not():
    series = waveform(6000, seed=3)
    lib = ShapeLibrary(n_clusters=60, random_state=0).fit(series[:4000])
    held_out = series[4000:]
    assert lib.events(held_out).empty
    assert lib.predict(held_out).sum() == 0
    anomalous = held_out.copy()
    anomalous[210:315] = 0.0
    ev = lib.events(anomalous)
    assert len(ev) == 1
    row = ev.iloc[0]
    assert row.start_idx <= 315 and row.end_idx >= 210
    assert row.peak > lib.threshold_ and row["mean"] <= row.peak
    assert np.array_equal(held_out, series[4000:])  # the copy was changed, not the data


def test_holdout_is_not_used_for_kmeans():
    x = waveform(1000)
    lib = ShapeLibrary(segment_len=16, n_clusters=8, random_state=0, holdout_fraction=0.25).fit(x)
    assert lib.n_train_points_ == 750 and lib.n_holdout_points_ == 250
    assert lib.n_train_segments_ == (750 - 16) // 2 + 1
    assert lib.threshold_ > 0


def test_threshold_follows_quantile_and_scale():
    x = waveform(1000)
    kw = dict(segment_len=16, n_clusters=8, random_state=0)
    a = ShapeLibrary(threshold_quantile=0.5, threshold_scale=1.0, **kw).fit(x)
    b = ShapeLibrary(threshold_quantile=0.5, threshold_scale=2.0, **kw).fit(x)
    c = ShapeLibrary(threshold_quantile=0.99, threshold_scale=1.0, **kw).fit(x)
    assert b.threshold_ == pytest.approx(2 * a.threshold_)
    assert c.threshold_ > a.threshold_
    tail = x[round(len(x) * (1 - a.holdout_fraction)) :]
    assert a.threshold_ == pytest.approx(np.quantile(a.decision_function(tail), 0.5))


def test_pieces_never_straddle():
    a, b = waveform(300, seed=1), waveform(200, seed=2) + 5
    lib = ShapeLibrary(segment_len=16, n_clusters=4, random_state=0, holdout_fraction=0)
    lib.fit([a, b])
    assert lib.n_train_segments_ == (300 - 16) // 2 + 1 + (200 - 16) // 2 + 1
    # a piece shorter than one segment is skipped, not joined to its neighbour
    lib.fit([a, np.ones(5), b])
    assert lib.n_train_segments_ == (300 - 16) // 2 + 1 + (200 - 16) // 2 + 1


def test_too_many_clusters_is_lowered_with_a_warning():
    x = np.tile([0.0, 1.0, 0.0, -1.0], 100)  # only two distinct segments at slide 2
    with pytest.warns(UserWarning, match="distinct"):
        lib = ShapeLibrary(segment_len=8, n_clusters=50, random_state=0).fit(x)
    assert lib.n_clusters_ == 2 and lib.centroids_.shape == (2, 8)


def test_algorithm_choice():
    x = waveform(800)
    kw = dict(segment_len=16, n_clusters=5, random_state=0)
    assert ShapeLibrary(algorithm="kmeans", **kw).fit(x).algorithm_ == "kmeans"
    assert ShapeLibrary(algorithm="minibatch", **kw).fit(x).algorithm_ == "minibatch"
    assert ShapeLibrary(batch_threshold=100, **kw).fit(x).algorithm_ == "minibatch"
    assert ShapeLibrary(**kw).fit(x).algorithm_ == "kmeans"


def test_save_load_round_trip_is_exact(tmp_path, small_lib):
    path = small_lib.save(tmp_path / "lib")
    assert path.suffix == ".npz"
    loaded = ShapeLibrary.load(path)
    np.testing.assert_array_equal(loaded.centroids_, small_lib.centroids_)
    assert loaded.get_params() == small_lib.get_params()
    for name in ShapeLibrary._FITTED_SCALARS:
        assert getattr(loaded, name) == getattr(small_lib, name)
    x = waveform(500, seed=9)
    np.testing.assert_array_equal(loaded.decision_function(x), small_lib.decision_function(x))
    # the file holds plain arrays: it loads with pickling disabled
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
    meta, arrays = small_lib.get_state()
    json.dumps(meta)
    again = ShapeLibrary.from_state(json.loads(json.dumps(meta)), arrays)
    np.testing.assert_array_equal(again.reconstruct(x), small_lib.reconstruct(x))


def test_another_format_version_is_refused(tmp_path, small_lib):
    meta, arrays = small_lib.get_state()
    meta["format_version"] = 99
    path = save_state(tmp_path / "future.npz", meta, arrays)
    with pytest.raises(FormatVersionError, match="format version 99"):
        ShapeLibrary.load(path)
    np.savez(tmp_path / "foreign.npz", centroids=np.zeros((2, 16)))
    with pytest.raises(FormatVersionError, match="not written by Cricket"):
        load_state(tmp_path / "foreign.npz")
    with pytest.raises(FileNotFoundError, match="check the path"):
        ShapeLibrary.load(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.r_[np.ones(50), np.nan, np.ones(50)], "NaN.*fill or split gaps"),
        (np.r_[np.ones(50), np.inf, np.ones(50)], "infinite.*cricket.series"),
        (np.array(["a", "b"] * 50), "numeric"),
        (np.ones(10), "shorter than one segment"),
        (np.ones((10, 10)), "1-D"),
        (np.ones(100, dtype=bool), "booleans"),
    ],
)
def test_bad_input_is_refused_clearly(small_lib, bad, match):
    with pytest.raises(BadSeriesError, match=match):
        ShapeLibrary(segment_len=16, n_clusters=3).fit(bad)
    if "shorter" in match:
        bad = np.ones(8)
    with pytest.raises(BadSeriesError, match=match):
        small_lib.reconstruct(bad)
    with pytest.raises(BadSeriesError, match=match):
        small_lib.decision_function(bad)


def test_unfitted_model_is_refused():
    lib = ShapeLibrary()
    for call in (lib.reconstruct, lib.decision_function, lib.predict, lib.events):
        with pytest.raises(NotFittedError, match="call fit"):
            call(np.ones(100))
    with pytest.raises(NotFittedError):
        lib.get_state()


def test_bad_parameters_and_too_little_data():
    with pytest.raises(ValueError, match="even"):
        ShapeLibrary(segment_len=15).fit(np.ones(100))
    with pytest.raises(ValueError, match="algorithm"):
        ShapeLibrary(algorithm="fast").fit(np.ones(100))
    with pytest.raises(BadSeriesError, match="holdout_fraction=0"):
        ShapeLibrary(segment_len=16).fit(np.arange(40.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = ShapeLibrary(segment_len=16, n_clusters=3, holdout_fraction=0).fit(np.arange(40.0))
    assert lib.n_holdout_points_ == 0 and np.isfinite(lib.threshold_)


def test_chunked_search_with_near_ties_matches_brute_force():
    # Enough rows for several chunks (and the one-BLAS-thread block). A duplicated
    # centroid makes exact ties (argmin takes the first); two centroids 3e-6 apart
    # make differences float32 cannot see, which the float64 re-check must settle.
    rng = np.random.default_rng(7)
    c = rng.normal(size=(150, 16))
    c[1] = c[0]
    c[7] = c[5] + 3e-6 * rng.normal(size=16)
    lib = ShapeLibrary.from_centroids(c, segment_len=16)
    segs = rng.normal(size=(3000, 16)) * 1.5
    segs[::5] = c[0] + 1e-9 * rng.normal(size=(600, 16))
    frac = rng.choice([0.3, 0.45, 0.55, 0.7], size=(len(segs[1::7]), 1))
    segs[1::7] = c[5] + frac * (c[7] - c[5])
    idx, dist = lib.nearest(segs)
    diff = segs[:, None, :] - c[None]
    full = np.sqrt(np.einsum("mkn,mkn->mk", diff, diff))
    np.testing.assert_array_equal(idx, full.argmin(axis=1))
    np.testing.assert_allclose(dist, full.min(axis=1), rtol=1e-9, atol=1e-12)


def test_search_leaves_blas_threads_as_they_were():
    import threading

    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

    before = blas_threads()
    lib = ShapeLibrary.from_centroids(
        np.random.default_rng(3).normal(size=(150, 16)), segment_len=16
    )
    x = waveform(40_000)
    want = lib.reconstruct(x)
    results = []
    workers = [
        threading.Thread(target=lambda: results.append(lib.reconstruct(x))) for _ in range(3)
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert blas_threads() == before
    assert len(results) == 3 and all(np.array_equal(r, want) for r in results)


def test_training_segments_are_capped_by_a_seeded_subset():
    x = waveform(6000)
    kw = dict(segment_len=16, n_clusters=10, random_state=0, holdout_fraction=0)
    capped = ShapeLibrary(max_train_segments=500, **kw).fit(x)
    assert capped.n_train_segments_ == 500
    again = ShapeLibrary(max_train_segments=500, **kw).fit(x)
    np.testing.assert_array_equal(capped.centroids_, again.centroids_)  # same seed, same subset
    full = ShapeLibrary(max_train_segments=None, **kw).fit(x)
    assert full.n_train_segments_ == (6000 - 16) // 2 + 1
    # The subset learns the same shapes: rebuilding the series is about as good.
    err_full = full.residuals(x).mean()
    assert capped.residuals(x).mean() < 1.2 * err_full
    # A cap above the segment count changes nothing.
    big = ShapeLibrary(max_train_segments=10_000, **kw).fit(x)
    np.testing.assert_array_equal(big.centroids_, full.centroids_)
    # Long segments are sampled more sparsely (a budget of values), but never fewer
    # than 10 per cluster.
    lib = ShapeLibrary(max_train_values=400 * 16, **kw).fit(x)
    assert lib.n_train_segments_ == 400
    lib = ShapeLibrary(max_train_values=16, **kw).fit(x)
    assert lib.n_train_segments_ == 10 * 10
    with pytest.raises(ValueError, match="max_train_segments"):
        ShapeLibrary(max_train_segments=0, **kw).fit(x)
    with pytest.raises(ValueError, match="max_train_values"):
        ShapeLibrary(max_train_values=1.5, **kw).fit(x)


def test_fit_leaves_thread_limits_as_they_were():
    from threadpoolctl import threadpool_info

    def threads() -> list[tuple[str, int]]:
        return sorted((d["user_api"], d["num_threads"]) for d in threadpool_info())

    before = threads()
    ShapeLibrary(segment_len=16, n_clusters=10, random_state=0).fit(waveform(3000))
    assert threads() == before


def test_near_ties_are_settled_as_the_search_over_every_centroid_settles_them(monkeypatch):
    # The float64 re-check of near ties looks only at the centroids within float32
    # reach of the best; it must give exactly what exact_argmin over all centroids
    # gives (the first of equal minima included), on every row it is asked about.
    import cricket.search as search

    rng = np.random.default_rng(11)
    c = rng.normal(size=(250, 32)) * 3 + 136.0  # large values: float32 loses digits
    c[1] = c[0]
    c[9] = c[4]
    c[10] = c[4]
    c[7] = c[5] + 3e-6 * rng.normal(size=32)
    c[20:40] = c[40:60] + 1e-7 * rng.normal(size=(20, 32))
    segs = rng.normal(size=(6000, 32)) * 3 + 136.0
    segs[::4] = c[rng.integers(0, 250, 1500)] + 1e-9 * rng.normal(size=(1500, 32))
    frac = rng.choice([0.3, 0.5, 0.7], size=(len(segs[1::6]), 1))
    segs[1::6] = c[5] + frac * (c[7] - c[5])
    asked = []
    settle = search.settle_near_ties

    def checked(s0, c0, scores, thresh, best):
        out = settle(s0, c0, scores, thresh, best)
        np.testing.assert_array_equal(out, search.exact_argmin(s0, c0))
        asked.append(len(s0))
        return out

    monkeypatch.setattr(search, "settle_near_ties", checked)
    lib = ShapeLibrary.from_centroids(c, segment_len=32)
    idx, _ = lib.nearest(segs)
    assert sum(asked) > 1500  # the duplicates and near copies were all re-checked
    diff = segs[:, None, :] - c[None]
    np.testing.assert_array_equal(idx, np.einsum("mkn,mkn->mk", diff, diff).argmin(axis=1))
    asked.clear()  # windowed rows (the folded product): near ties settled the same way
    search.nearest_rows(lib._tables(), segs, window(32))
    assert sum(asked) > 1000



def test_clusters_are_lowered_to_the_distinct_segments_whatever_one_column_holds():
    # The distinct rows are counted only when one column cannot show k of them: rows
    # that agree in the middle column but differ elsewhere are still counted.
    rng = np.random.default_rng(4)
    base = rng.normal(size=(30, 16))
    base[:, 8] = 1.0  # the middle column alone shows one value
    rows = np.repeat(base, 20, axis=0)
    with pytest.warns(UserWarning, match="only 30 distinct"):
        lib = ShapeLibrary(segment_len=16, train_slide=16, n_clusters=40,
                           holdout_fraction=0, max_train_segments=None).fit(
            [r for r in rows])  # pieces of one segment each
    assert lib.n_clusters_ == 30
    many = ShapeLibrary(segment_len=16, train_slide=16, n_clusters=25, holdout_fraction=0,
                        max_train_segments=None).fit([r for r in rows])
    assert many.n_clusters_ == 25
