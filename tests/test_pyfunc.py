"""The MLflow-served model scores exactly as the pipeline does.

A bundle trained by the pipeline's own steps (one series with a detector of its own, a
fleet library for the rest) is logged to a real MLflow SQLite store, registered, loaded
back with ``mlflow.pyfunc.load_model`` and asked to score a DataFrame. Its scores,
reconstructions and errors must equal what ``score_series`` (the hourly flow's step)
gives, for the series-served series and for a fleet-served one in units the fleet never
saw (the fleet library is learned in per-series scaled units).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cricket.config import DetectorSpec, SeriesSelector, Settings
from cricket.model import SCORE_COLUMNS, ModelBundle
from cricket.registry import Registry
from cricket.scoring import score_series
from cricket.training import fleet_training_values, split_holdout, train_fleet, train_series

SPEC = DetectorSpec(segment_len=16, n_clusters=12, period_scale=False)
OWN = "waveform.value{host=a}"
FLEET_SERVED = "waveform.value{host=new}"
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def wave(n: int, seed: int, level: float, amplitude: float) -> pd.Series:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = np.sin(2 * np.pi * t / 40) + 0.3 * np.sin(2 * np.pi * t / 9) + 0.05 * rng.normal(size=n)
    return pd.Series(level + amplitude * x, index=pd.date_range(T0, periods=n, freq="10s"))


def test_pyfunc_scores_equal_the_pipelines_for_series_and_fleet(mlflow_settings: Settings) -> None:
    history = {OWN: wave(3000, 1, 10.0, 3.0), "waveform.value{host=b}": wave(3000, 2, -4.0, 0.5)}
    cut = history[OWN].index[2100]
    trained = {
        key: train_series(key, s[s.index < cut], s[s.index >= cut], SPEC, min_points=500)
        for key, s in history.items()
    }
    sample = fleet_training_values([s[s.index < cut] for s in history.values()], SPEC, 4000)
    bundle = ModelBundle(
        detectors={k: t.detector for k, t in trained.items()},
        fleet=train_fleet(sample, SPEC),
        spec=SPEC,
        selector=SeriesSelector(),
    )
    registry = Registry(mlflow_settings)
    held = {k: split_holdout(s[s.index >= cut])[1] for k, s in history.items()}
    version = registry.register(registry.log_training_run(bundle, held_out=held))
    registry.promote(version)
    model = registry.load_pyfunc()  # mlflow.pyfunc.load_model("models:/NAME/VERSION")

    # New data: the fleet-served series is in units far from any training series, with
    # a stretch where it jumped out of its range.
    fresh = {OWN: wave(600, 5, 10.0, 3.0), FLEET_SERVED: wave(600, 6, 1500.0, 200.0)}
    fresh[FLEET_SERVED].iloc[400:440] += 800.0
    frame = pd.concat(
        pd.DataFrame({"series": k, "time": s.index, "value": s.to_numpy()}) for k, s in fresh.items()
    )
    out = model.predict(frame)

    for key, source in ((OWN, "series"), (FLEET_SERVED, "fleet")):
        det, got_source = bundle.detector_for(key)
        assert got_source == source
        s = fresh[key]
        want = score_series(key, s, det, source, s.index[0], SPEC).frame
        mine = out[out.series == key].set_index("time")
        assert set(mine.detector) == {source}
        mine = mine.loc[want.index]
        for column in ("score", "reconstruction", "error"):
            np.testing.assert_array_equal(
                mine[column].to_numpy(), want[column].to_numpy(), err_msg=f"{key} {column}"
            )
        np.testing.assert_array_equal(mine.anomalous.to_numpy(), want.anomalous.to_numpy())
        # In the series' own units: the reconstruction follows the data.
        assert np.nanmedian(np.abs(want.error / s.std())) < 0.5
    fleet_flags = out[out.series == FLEET_SERVED].anomalous.to_numpy()
    assert fleet_flags[400:460].any() and not fleet_flags[:380].any()

    # The version page in the MLflow UI shows the columns (the model's signature)...
    assert model.metadata.get_input_schema().input_names() == ["series", "time", "value"]
    assert model.metadata.get_output_schema().input_names() == [*SCORE_COLUMNS, "detector"]
    assert list(out.columns) == [*SCORE_COLUMNS, "detector"]
    # ... and its schema enforcement refuses none of what score_dataframe accepts:
    # integer series names and integer values (a counter), time zone-aware times.
    counter = pd.DataFrame({"series": 7, "time": fresh[OWN].index,
                            "value": np.round(fresh[OWN].to_numpy() * 100).astype(np.int64)})
    served = model.predict(counter)
    assert set(served.series) == {"7"} and set(served.detector) == {"fleet"}
    assert len(served) == len(counter) and np.isfinite(served.score.to_numpy()).any()
