"""A bundle written detector by detector, and read detector by detector (the retrain's
bounded-memory path): the same format and the same detectors as ``save``/``load``."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cricket.tasks.score import sub_bundle
from test_model_bundle import KEYS, assert_same_state, bundle  # noqa: F401 - fixture

from cricket.bundle_parts import BundleWriter
from cricket.model import ARRAYS_NPZ, BUNDLE_JSON, ModelBundle, ModelFormatError, score_dataframe
from cricket.training import TailStore


def test_a_bundle_written_in_parts_in_any_order_loads_as_the_saved_one(
    bundle: ModelBundle, tmp_path: Path  # noqa: F811
) -> None:
    saved = bundle.save(tmp_path / "saved")
    writer = BundleWriter(tmp_path / "parts")
    for key in reversed(KEYS):  # batches finish in any order
        writer.add(key, bundle.detectors[key])
    with pytest.raises(ValueError, match="already holds"):
        writer.add(KEYS[0], bundle.detectors[KEYS[0]])
    parts = writer.close(bundle.fleet, bundle.fields())
    loaded = ModelBundle.load(parts)
    assert loaded.series_keys == KEYS
    for key in KEYS:
        assert_same_state(loaded.detectors[key], bundle.detectors[key])
    assert_same_state(loaded.fleet, bundle.fleet)
    a = json.loads((saved / BUNDLE_JSON).read_text())
    b = json.loads((parts / BUNDLE_JSON).read_text())
    # the same document but for where each detector's arrays sit in the archive
    for doc in (a, b):
        for entry in [*doc["detectors"], doc["fleet"]]:
            entry.pop("index")
    assert a == b


def test_an_opened_bundle_reads_each_detector_when_asked(
    bundle: ModelBundle, tmp_path: Path  # noqa: F811
) -> None:
    path = bundle.save(tmp_path / "b")
    opened = ModelBundle.open(path)
    assert len(opened.detectors) == 2 and list(opened.detectors) == KEYS
    assert KEYS[0] in opened.detectors and "nope" not in opened.detectors
    assert opened.series_keys == KEYS and opened.extra == bundle.extra
    assert opened.detectors[KEYS[0]] is not opened.detectors[KEYS[0]]  # not kept
    for key in KEYS:
        assert_same_state(opened.detectors[key], bundle.detectors[key])
    assert_same_state(opened.fleet, bundle.fleet)
    assert opened.detector_for("waveform.value{host=zz}")[1] == "fleet"
    rows = score_dataframe(bundle, _frame())
    again = score_dataframe(opened, _frame())
    np.testing.assert_array_equal(rows["score"].to_numpy(), again["score"].to_numpy())
    # what a batch task gets is a plain sub-bundle; the opened one is never shipped
    part = sub_bundle(opened, [KEYS[1]])
    assert list(part.detectors) == [KEYS[1]]
    pickle.dumps(part)
    with pytest.raises(TypeError, match="sub-bundle"):
        pickle.dumps(opened)


def test_an_opened_bundle_refuses_a_damaged_detector_when_it_is_read(
    bundle: ModelBundle, tmp_path: Path  # noqa: F811
) -> None:
    path = bundle.save(tmp_path / "b")
    doc = json.loads((path / BUNDLE_JSON).read_text())
    gone = f"d{doc['detectors'][1]['index']}/{doc['detectors'][1]['arrays'][0]}.npy"
    src = zipfile.ZipFile(path / ARRAYS_NPZ)
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as out:
        for item in src.namelist():
            if item != gone:
                out.writestr(item, src.read(item))
    src.close()
    (tmp_path / "x.npz").replace(path / ARRAYS_NPZ)
    with pytest.raises(ModelFormatError, match="missing"):
        ModelBundle.load(path)
    opened = ModelBundle.open(path)  # the fleet and the first series are sound
    assert_same_state(opened.detectors[KEYS[0]], bundle.detectors[KEYS[0]])
    with pytest.raises(ModelFormatError, match="missing"):
        opened.detectors[KEYS[1]]
    with pytest.raises(ModelFormatError, match="not a model bundle folder"):
        ModelBundle.open(tmp_path / "nowhere")


def test_tails_kept_on_disk_read_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first = {"a": rng.normal(size=100), "b{host=x}": np.r_[np.nan, rng.normal(size=7)]}
    second = {"c": rng.normal(size=1)}
    store = TailStore(tmp_path)
    store.add(first)
    store.add({})
    store.add(second)
    assert sorted(store) == ["a", "b{host=x}", "c"] and len(store) == 3 and "c" in store
    for key, values in {**first, **second}.items():
        np.testing.assert_array_equal(store[key], values)


def _frame():  # noqa: ANN202
    import pandas as pd

    t = pd.date_range("2024-01-09", periods=300, freq="10s", tz="UTC")
    rng = np.random.default_rng(5)
    rows = []
    for key in [*KEYS, "waveform.value{host=zz}"]:
        rows.append(pd.DataFrame({"series": key, "time": t,
                                  "value": 10 + 3 * np.sin(np.arange(300) / 6)
                                  + rng.normal(0, 0.05, 300)}))
    return pd.concat(rows, ignore_index=True)


def test_a_batch_taken_in_lets_go_of_its_detectors_and_data(
    bundle: ModelBundle, tmp_path: Path  # noqa: F811
) -> None:
    """Prefect keeps a finished task's result alive (its future sits in a reference
    cycle) until the cyclic garbage collector runs; the retrain's memory stays flat
    only because taking a batch in empties it."""
    import copy
    import gc
    import weakref

    import pandas as pd
    from cricket.tasks.train import StreamedRun, TrainBatch

    from cricket.training import TrainedSeries

    det = copy.deepcopy(bundle.detectors[KEYS[0]])
    tail = np.arange(100.0)
    batch = TrainBatch([TrainedSeries(KEYS[0], det, {"n_train": 1.0})],
                       {KEYS[0]: pd.Series(tail)}, np.ones(10), tails={KEYS[0]: tail})
    kept = [batch]  # as Prefect's future keeps it
    alive = weakref.ref(det)
    del det, tail
    run = StreamedRun(tmp_path, bundle.spec, bundle.selector)
    gc.disable()  # the cyclic collector must not be what frees it
    try:
        run.add(0, batch)
        del batch
        assert alive() is None
    finally:
        gc.enable()
    assert kept[0].trained == [] and kept[0].tails == {} and kept[0].fleet_sample.size == 0
    assert run.fleet_samples()[0].size == 10 and KEYS[0] in run.tails
