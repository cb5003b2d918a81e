"""`cricket evaluate nab` end to end on a tiny NAB-layout folder (two short files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from cricket.cli import app
from cricket.evaluate.nab import probation_length


def _make_corpus(root: Path) -> None:
    rng = np.random.default_rng(0)
    labels = {}
    for k in range(2):
        n = 1200
        ts = pd.date_range("2015-01-01", periods=n, freq="5min")
        t = np.arange(n)
        v = 10 + np.sin(2 * np.pi * t / 48) + 0.05 * rng.standard_normal(n)
        v[900:930] += 6.0  # a level burst in the labelled window
        if k == 1:  # irregular sampling and a duplicate timestamp
            ts = ts.delete([100, 101, 500]).insert(200, ts[200])
            v = np.r_[v[:100], v[102:201], v[200], v[201:500], v[501:]]
        d = root / "data" / "synthetic"
        d.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "value": v}).to_csv(
            d / f"wave{k}.csv", index=False
        )
        labels[f"synthetic/wave{k}.csv"] = [[str(ts[880]) + ".000000", str(ts[960]) + ".000000"]]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))


def test_evaluate_nab_writes_results_and_scores(tmp_path: Path) -> None:
    data, out = tmp_path / "nab", tmp_path / "out"
    _make_corpus(data)
    res = CliRunner().invoke(
        app, ["evaluate", "nab", "--data", str(data), "--out", str(out), "--processes", "1"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert set(summary) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate", "seconds"}
    assert summary["standard"] > 50  # the bursts are found
    for k in range(2):
        f = out / "cricket" / "synthetic" / f"cricket_wave{k}.csv"
        df = pd.read_csv(f)
        src = pd.read_csv(data / "data" / "synthetic" / f"wave{k}.csv")
        assert list(df.columns) == ["timestamp", "value", "anomaly_score", "label"]
        assert len(df) == len(src)
        assert df.anomaly_score.between(0, 1).all()
        assert (df.anomaly_score[: probation_length(len(df))] == 0).all()  # history only
        assert df.label.sum() > 0


def test_evaluate_nab_refuses_bad_input(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["evaluate", "nab", "--data", str(tmp_path), "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "layout" in r.output
    _make_corpus(tmp_path / "nab")
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            "nab",
            "--data",
            str(tmp_path / "nab"),
            "--out",
            str(tmp_path),
            "--name",
            "a_b",
        ],
    )
    assert r.exit_code != 0
