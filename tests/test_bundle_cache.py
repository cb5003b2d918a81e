"""The cache of decoded bundles: a load from the cache gives the very detectors a load of
the bundle gives (every array equal, dtype and layout included); an entry is used only
for the files it was made from; a damaged entry is a miss; a damaged bundle is refused
whether or not an entry of its sound files exists, and nothing of it is cached."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from cricket import bundle_cache
from cricket.bundle_cache import BLOB, INDEX, bundle_digest, entry_path, load_cached
from cricket.config import DetectorSpec, SeriesSelector
from cricket.detector import WaveformDetector
from cricket.detector_state import detector_state
from cricket.model import ModelBundle, ModelFormatError

SPEC = DetectorSpec(segment_len=16, train_slide=2, n_clusters=12, threshold_quantile=0.99)


def wave(n: int, period: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 10 + 3 * np.sin(2 * np.pi * np.arange(n) / period) + rng.normal(0, 0.05, n)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dets = {f"waveform.value{{host={h}}}": WaveformDetector(SPEC).fit(wave(1200, p, s))
            for h, p, s in (("a", 40, 1), ("b", 25, 2))}
    fleet = WaveformDetector(SPEC, per_series_scaling=True).fit(wave(1200, 30, 3))
    bundle = ModelBundle(detectors=dets, fleet=fleet, spec=SPEC,
                         selector=SeriesSelector(measurement="waveform"),
                         trained_from=datetime(2024, 1, 1, tzinfo=UTC),
                         trained_to=datetime(2024, 1, 8, tzinfo=UTC))
    return bundle.save(tmp_path_factory.mktemp("bundle") / "b")


def assert_same_bundle(a: ModelBundle, b: ModelBundle) -> None:
    assert list(a.detectors) == list(b.detectors)
    pairs = [*((a.detectors[k], b.detectors[k]) for k in a.detectors), (a.fleet, b.fleet)]
    for x, y in pairs:
        mx, ax = detector_state(x)
        my, ay = detector_state(y)
        assert mx == my and list(ax) == list(ay)
        for name in ax:
            assert ax[name].dtype == ay[name].dtype and ax[name].shape == ay[name].shape
            assert ax[name].flags.c_contiguous == ay[name].flags.c_contiguous
            assert np.array_equal(ax[name], ay[name], equal_nan=True), name
    assert (a.spec, a.selector, a.trained_from, a.trained_to) == (
        b.spec, b.selector, b.trained_from, b.trained_to)


def test_a_cached_load_is_the_bundle_and_scores_the_same(saved: Path, tmp_path: Path) -> None:
    plain = ModelBundle.load(saved)
    first = load_cached(saved, tmp_path, "m-v1")  # a miss: loads, then writes the entry
    entry = entry_path(tmp_path, "m-v1", bundle_digest(saved))
    assert (entry / INDEX).is_file() and (entry / BLOB).is_file()
    read = []
    real = bundle_cache.read_npz
    bundle_cache.read_npz = lambda *a, **k: read.append(a) or real(*a, **k)  # type: ignore[assignment]
    try:
        second = load_cached(saved, tmp_path, "m-v1")  # a hit: the .npz is not decoded
    finally:
        bundle_cache.read_npz = real  # type: ignore[assignment]
    assert read == []
    assert_same_bundle(plain, first)
    assert_same_bundle(plain, second)
    x = wave(600, 40, 9)
    x[300:340] += 5
    key = "waveform.value{host=a}"
    s1, s2 = plain.detectors[key].score(x), second.detectors[key].score(x)
    assert np.array_equal(s1.score, s2.score, equal_nan=True)
    assert np.array_equal(s1.reconstruction, s2.reconstruction, equal_nan=True)


def test_a_damaged_entry_is_a_miss_and_is_made_again(saved: Path, tmp_path: Path) -> None:
    load_cached(saved, tmp_path, "m-v1")
    entry = entry_path(tmp_path, "m-v1", bundle_digest(saved))
    blob = bytearray((entry / BLOB).read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte: the CRC finds it
    (entry / BLOB).write_bytes(bytes(blob))
    assert bundle_cache.read_entry(entry) is None
    assert not entry.exists()  # removed
    assert_same_bundle(ModelBundle.load(saved), load_cached(saved, tmp_path, "m-v1"))
    assert bundle_cache.read_entry(entry) is not None  # written again, sound
    (entry / BLOB).write_bytes((entry / BLOB).read_bytes()[:-8])  # torn
    assert bundle_cache.read_entry(entry) is None


def test_a_damaged_bundle_is_refused_though_its_sound_files_are_cached(
    saved: Path, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "bundle"
    shutil.copytree(saved, folder)
    cache = tmp_path / "cache"
    load_cached(folder, cache, "m-v1")  # the sound files, cached
    doc = json.loads((folder / "bundle.json").read_text())
    doc["detectors"][0]["meta"]["threshold"] = float("nan")
    (folder / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError, match="non-finite threshold"):
        load_cached(folder, cache, "m-v1")
    assert len(list(cache.iterdir())) == 1  # only the sound files' entry: nothing new


def test_only_the_most_recently_used_entries_stay(saved: Path, tmp_path: Path) -> None:
    for v in range(bundle_cache.KEEP + 2):
        load_cached(saved, tmp_path, f"m-v{v}")
    names = sorted(p.name.split("-")[1] for p in tmp_path.iterdir())
    assert len(names) == bundle_cache.KEEP
    assert names == sorted(f"v{v}" for v in range(2, bundle_cache.KEEP + 2))


def test_a_cache_that_cannot_be_written_is_no_cache(saved: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert_same_bundle(ModelBundle.load(saved), load_cached(saved, blocked / "cache", "m-v1"))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert_same_bundle(ModelBundle.load(saved), load_cached(saved, ro, "m-v1"))


def test_the_setting_says_how_many_entries_stay_and_0_turns_the_cache_off(
    saved: Path, tmp_path: Path
) -> None:
    for v in range(3):
        load_cached(saved, tmp_path, f"m-v{v}", keep=2)
    assert sorted(p.name.split("-")[1] for p in tmp_path.iterdir()) == ["v1", "v2"]
    load_cached(saved, tmp_path, "m-v2", keep=1)  # a hit under a lowered setting frees at once
    assert [p.name.split("-")[1] for p in tmp_path.iterdir()] == ["v2"]
    assert_same_bundle(ModelBundle.load(saved), load_cached(saved, tmp_path, "m-v3", keep=0))
    assert list(tmp_path.iterdir()) == []
