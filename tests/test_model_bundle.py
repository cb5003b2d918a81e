"""ModelBundle: exact save/load round trip, and refusal of anything that is not ours.

Loading must never execute code: a pickle placed where an array is expected is refused
and its payload (which would create a marker file) never runs.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cricket.config import DetectorSpec, SeriesSelector
from cricket.detector import WaveformDetector
from cricket.model import (
    ARRAYS_NPZ,
    BUNDLE_JSON,
    FORMAT_VERSION,
    ModelBundle,
    ModelFormatError,
    UnknownSeriesError,
    score_dataframe,
)

SPEC = DetectorSpec(segment_len=16, train_slide=2, n_clusters=12, threshold_quantile=0.99)
KEYS = ["waveform.value{host=a}", "waveform.value{host=b}"]


def wave(n: int, period: float, seed: int, phase: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 10 + 3 * np.sin(2 * np.pi * t / period + phase) + rng.normal(0, 0.05, n)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    dets = {
        KEYS[0]: WaveformDetector(SPEC).fit(wave(1200, 40, 1)),
        KEYS[1]: WaveformDetector(SPEC).fit(wave(1200, 25, 2, phase=1.0)),
    }
    fleet = WaveformDetector(SPEC, per_series_scaling=True).fit(
        np.r_[wave(600, 40, 3), wave(600, 25, 4)]
    )
    return ModelBundle(
        detectors=dets,
        fleet=fleet,
        spec=SPEC,
        selector=SeriesSelector(measurement="waveform", tags={"dc": "x"}),
        trained_from=datetime(2024, 1, 1, tzinfo=UTC),
        trained_to=datetime(2024, 1, 8, tzinfo=UTC),
        extra={"skipped": {"waveform.value{host=c}": "too little history"}},
    )


def assert_same_state(a: WaveformDetector, b: WaveformDetector) -> None:
    meta_a, arrays_a = a.get_state()
    meta_b, arrays_b = b.get_state()
    assert meta_a == meta_b
    assert sorted(arrays_a) == sorted(arrays_b)
    for name in arrays_a:
        assert arrays_a[name].dtype == arrays_b[name].dtype, name
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


def test_round_trip_is_exact(bundle: ModelBundle, tmp_path: Path) -> None:
    path = bundle.save(tmp_path / "b")
    assert sorted(p.name for p in path.iterdir()) == [ARRAYS_NPZ, BUNDLE_JSON]
    loaded = ModelBundle.load(path)
    assert loaded.series_keys == KEYS
    assert loaded.spec == bundle.spec and loaded.selector == bundle.selector
    assert (loaded.trained_from, loaded.trained_to) == (bundle.trained_from, bundle.trained_to)
    assert loaded.created_at == bundle.created_at
    assert loaded.extra == bundle.extra
    for key in KEYS:
        assert_same_state(bundle.detectors[key], loaded.detectors[key])
    assert loaded.fleet is not None and bundle.fleet is not None
    assert_same_state(bundle.fleet, loaded.fleet)
    # The loaded model scores new data bit for bit like the one in memory.
    probe = wave(300, 40, 9)
    probe[150:170] += 4  # an anomaly, so scores are not all small
    a = bundle.detectors[KEYS[0]].score(probe)
    b = loaded.detectors[KEYS[0]].score(probe)
    for name in ("reconstruction", "error", "score", "anomalous"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.anomalous.any()


def test_saved_files_hold_no_pickles(bundle: ModelBundle, tmp_path: Path) -> None:
    path = bundle.save(tmp_path / "b")
    doc = json.loads((path / BUNDLE_JSON).read_text())
    assert doc["format_version"] == FORMAT_VERSION
    assert [d["key"] for d in doc["detectors"]] == KEYS
    with zipfile.ZipFile(path / ARRAYS_NPZ) as zf:
        names = zf.namelist()
        assert names and all(n.endswith(".npy") for n in names)
        for name in names:
            with zf.open(name) as fh:  # raises if any member needs unpickling
                arr = np.lib.format.read_array(fh, allow_pickle=False)
            assert not arr.dtype.hasobject


def test_detector_for_falls_back_to_fleet(bundle: ModelBundle) -> None:
    det, source = bundle.detector_for(KEYS[1])
    assert det is bundle.detectors[KEYS[1]] and source == "series"
    det, source = bundle.detector_for("waveform.value{host=new}")
    assert det is bundle.fleet and source == "fleet"
    no_fleet = ModelBundle(dict(bundle.detectors), None, SPEC, SeriesSelector())
    with pytest.raises(UnknownSeriesError, match=r"no detector for series 'waveform.value\{host=new\}'"):
        no_fleet.detector_for("waveform.value{host=new}")


def test_score_dataframe_per_series(bundle: ModelBundle) -> None:
    times = pd.date_range("2024-02-01", periods=200, freq="10s", tz="UTC")
    frame = pd.concat(
        [
            pd.DataFrame({"series": KEYS[0], "time": times, "value": wave(200, 40, 5)}),
            pd.DataFrame({"series": "waveform.value{host=new}", "time": times, "value": wave(200, 25, 6)}),
        ]
    ).sample(frac=1.0, random_state=0)  # shuffled: scoring must sort by time itself
    out = score_dataframe(bundle, frame)
    assert list(out.columns[:7]) == ["series", "time", "value", "reconstruction", "error", "score", "anomalous"]
    first = out[out.series == KEYS[0]]
    assert first.time.is_monotonic_increasing and len(first) == 200
    direct = bundle.detectors[KEYS[0]].score(wave(200, 40, 5))
    np.testing.assert_array_equal(first.score.to_numpy(), direct.score)
    assert set(out.loc[out.series == "waveform.value{host=new}", "detector"]) == {"fleet"}


@pytest.mark.parametrize("found", [FORMAT_VERSION + 1, 0, None, "1"])
def test_wrong_or_future_format_version(bundle: ModelBundle, tmp_path: Path, found: object) -> None:
    path = bundle.save(tmp_path / "b")
    doc = json.loads((path / BUNDLE_JSON).read_text())
    doc["format_version"] = found
    (path / BUNDLE_JSON).write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError) as info:
        ModelBundle.load(path)
    msg = str(info.value)
    assert f"format version {found!r} found" in msg
    assert f"supports version {FORMAT_VERSION}" in msg
    assert "retrain with this version of cricket" in msg


def test_corrupted_npz_is_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    path = bundle.save(tmp_path / "b")
    data = (path / ARRAYS_NPZ).read_bytes()
    (path / ARRAYS_NPZ).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="corrupted or not an .npz archive"):
        ModelBundle.load(path)
    (path / ARRAYS_NPZ).write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(ModelFormatError, match="retrain"):
        ModelBundle.load(path)


def test_missing_array_and_damaged_json(bundle: ModelBundle, tmp_path: Path) -> None:
    path = bundle.save(tmp_path / "b")
    with np.load(path / ARRAYS_NPZ) as npz:
        arrays = {k: npz[k] for k in npz.files}
    dropped = sorted(arrays)[0]
    del arrays[dropped]
    np.savez_compressed(path / ARRAYS_NPZ, **arrays)
    with pytest.raises(ModelFormatError, match=f"array '{dropped}' is missing"):
        ModelBundle.load(path)
    (path / BUNDLE_JSON).write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        ModelBundle.load(path)


class Bomb:
    """Unpickling this calls open(marker, "w"): it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


def test_pickle_bomb_in_npz_is_refused_without_running(bundle: ModelBundle, tmp_path: Path) -> None:
    path = bundle.save(tmp_path / "b")
    marker = tmp_path / "BOOM"
    with np.load(path / ARRAYS_NPZ) as npz:
        arrays = {k: npz[k] for k in npz.files}
    victim = sorted(arrays)[0]
    arrays[victim] = np.array([Bomb(marker)], dtype=object)
    np.savez(path / ARRAYS_NPZ, **arrays)  # numpy pickles the object array
    with pytest.raises(ModelFormatError, match="never hold pickled data"):
        ModelBundle.load(path)
    assert not marker.exists()
    # The bomb is live: loading it the unsafe way would have run it.
    with np.load(path / ARRAYS_NPZ, allow_pickle=True) as npz:
        npz[victim]
    assert marker.exists()


def test_raw_pickle_and_stray_pkl_are_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    marker = tmp_path / "BOOM"
    path = bundle.save(tmp_path / "b")
    (path / ARRAYS_NPZ).write_bytes(pickle.dumps(Bomb(marker)))
    with pytest.raises(ModelFormatError, match="pickled data"):
        ModelBundle.load(path)
    assert not marker.exists()

    other = bundle.save(tmp_path / "c")
    (other / "model.pkl").write_bytes(pickle.dumps(Bomb(marker)))
    with pytest.raises(ModelFormatError, match=r"unexpected file\(s\) model.pkl"):
        ModelBundle.load(other)
    assert not marker.exists()


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="does not exist"):
        ModelBundle.load(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / BUNDLE_JSON).write_text("{}")
    with pytest.raises(ModelFormatError, match=f"missing {ARRAYS_NPZ}"):
        ModelBundle.load(tmp_path / "half")
