"""Segments, window and overlap-add against the naive loops, plus properties."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cricket.segments import (
    overlap_add,
    pad_for_reconstruction,
    sliding_segments,
    window,
    windowed_segments,
)
from tests import naive

even_n = st.integers(1, 64).map(lambda k: 2 * k)


def test_window_is_the_periodic_sin2():
    w = window(32)
    np.testing.assert_allclose(w, naive.window(32), rtol=0, atol=1e-15)
    assert w[0] == 0.0 and w[16] == pytest.approx(1.0)
    assert w[-1] > 0  # periodic form, not the symmetric one that ends in zero


@given(even_n)
def test_windows_sum_to_one_at_half_hop(n):
    w = window(n)
    np.testing.assert_allclose(w[: n // 2] + w[n // 2 :], 1.0, rtol=0, atol=1e-12)


@given(
    arrays(np.float64, st.integers(0, 120), elements=st.floats(-1e6, 1e6)),
    st.integers(2, 20),
    st.integers(1, 7),
)
def test_sliding_and_windowed_segments_match_the_notebook_chunker(x, n, slide):
    before = x.copy()
    segs = sliding_segments(x, n, slide)
    expected = naive.sliding_chunker(x, n, slide)
    assert segs.shape == (len(expected), n)
    if expected:
        np.testing.assert_array_equal(segs, np.array(expected))
        np.testing.assert_allclose(
            windowed_segments(x, n, slide), naive.training_segments(x, n, slide), atol=1e-9
        )
    np.testing.assert_array_equal(x, before)


def test_sliding_segments_is_a_read_only_view():
    x = np.arange(100.0)
    segs = sliding_segments(x, 8, 2)
    assert np.shares_memory(segs, x)
    with pytest.raises(ValueError):
        segs[0, 0] = 5.0
    w = windowed_segments(x, 8, 2)
    assert not np.shares_memory(w, x)
    w[:] = 0
    assert x[5] == 5.0


def test_windowed_segments_keep_float32():
    x = np.arange(64, dtype=np.float32)
    assert windowed_segments(x, 8, 4).dtype == np.float32


@given(st.integers(0, 40), even_n, st.integers(0, 10), st.randoms())
def test_overlap_add_matches_the_loop(m, n, extra, rnd):
    rng = np.random.default_rng(rnd.randint(0, 2**31))
    segs = rng.normal(size=(m, n))
    total = (m + 1) * (n // 2) + extra
    np.testing.assert_allclose(
        overlap_add(segs, n, total), naive.overlap_add(segs, n, total), atol=1e-12
    )


@given(arrays(np.float64, st.integers(1, 200), elements=st.floats(-1e3, 1e3)), even_n)
def test_padding_covers_every_point_twice(x, n):
    padded, left = pad_for_reconstruction(x, n)
    h = n // 2
    assert left == h
    np.testing.assert_array_equal(padded[left : left + len(x)], x)
    assert len(padded) % h == 0 and len(padded) - left - len(x) >= h
    # every real point lies in exactly two segments at hop h, whose windows sum to one
    m = len(padded) // h - 1
    cover = overlap_add(np.tile(window(n), (m, 1)), n, len(padded))
    np.testing.assert_allclose(cover[left : left + len(x)], 1.0, atol=1e-12)


def test_bad_arguments_are_refused():
    x = np.arange(50.0)
    with pytest.raises(ValueError, match="even"):
        pad_for_reconstruction(x, 7)
    with pytest.raises(ValueError, match="even"):
        overlap_add(np.zeros((2, 7)), 7, 20)
    with pytest.raises(ValueError, match="too short"):
        overlap_add(np.zeros((4, 8)), 8, 10)
    with pytest.raises(ValueError, match="slide"):
        sliding_segments(x, 8, 0)
    with pytest.raises(ValueError, match="1-D"):
        sliding_segments(x.reshape(5, 10), 4, 1)
    with pytest.raises(ValueError, match="empty"):
        pad_for_reconstruction(np.array([]), 8)
