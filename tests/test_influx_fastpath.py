"""The I/O fast paths give exactly what the plain paths give.

* reads: raw points (one per bucket) stand in for GROUP BY time; checked against the
  forced GROUP BY path on awkward data (offsets inside buckets, -0.0, integers, gaps,
  unaligned start, chunk edges) and the switch back on sub-step data.
* writes: column-at-a-time number formatting is byte-identical to ``repr``/``str``.
"""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from cricket.config import SeriesSelector
from cricket.influx import lineprotocol as lp
from cricket.influx.influxql import InfluxQLSource
from cricket.series import SeriesKey

T0 = 1704067200 * 10**9
AGGS = ("mean", "sum", "max", "min", "first", "last", "median")


def _write(settings, lines: list[str]) -> None:  # noqa: ANN001
    r = httpx.post(
        f"{settings.influx_url}/write",
        params={"db": settings.influx_database},
        content="\n".join(lines).encode(),
    )
    assert r.status_code == 204, r.text


def _read_both(settings, sel: SeriesSelector, start, stop, monkeypatch):  # noqa: ANN001, ANN202
    with InfluxQLSource(settings) as src:
        fast = src.read(sel, start, stop)
    with monkeypatch.context() as m:  # force GROUP BY time
        m.setattr(InfluxQLSource, "_one_per_bucket", staticmethod(lambda *a: False))
        with InfluxQLSource(settings) as src:
            ref = src.read(sel, start, stop)
    return fast, ref


def _assert_same(fast: dict, ref: dict) -> None:
    assert fast.keys() == ref.keys()
    for k in fast:
        a, b = fast[k].to_numpy(), ref[k].to_numpy()
        assert fast[k].index.equals(ref[k].index)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.signbit(np.nan_to_num(a, nan=1)), np.signbit(np.nan_to_num(b, nan=1)))


def test_raw_read_equals_group_by_for_every_aggregate(influx_settings, monkeypatch):
    rng = np.random.default_rng(3)
    lines = []
    for i in range(400):  # one point per 10 s bucket, anywhere inside it; some -0.0
        v = -0.0 if i % 40 == 0 else float(rng.normal())
        lines.append(f"m,host=a v={v!r} {T0 + i * 10**10 + int(rng.integers(0, 10**10))}")
    for i in range(0, 400, 3):  # integers with gaps
        lines.append(f"mi,host=b v={i}i {T0 + i * 10**10 + 5}")
    _write(influx_settings, lines)
    settings = influx_settings.model_copy(update={"influx_read_chunk": pd.Timedelta("17min")})
    stop = pd.Timestamp(T0 + 4100 * 10**9, tz="UTC")
    raw_calls = []
    orig = InfluxQLSource.__dict__["_one_per_bucket"].__func__

    def spy(*a):  # noqa: ANN002, ANN202
        raw_calls.append(orig(*a))
        return raw_calls[-1]

    for m in ("m", "mi"):
        for agg in AGGS:
            sel = SeriesSelector(measurement=m, field="v", group_by=["host"], every="10s", aggregate=agg)
            for start in (T0, T0 + 123_456_789):
                with monkeypatch.context() as mp:
                    mp.setattr(InfluxQLSource, "_one_per_bucket", staticmethod(spy))
                    with InfluxQLSource(settings) as src:
                        fast = src.read(sel, pd.Timestamp(start, tz="UTC"), stop)
                _, ref = _read_both(settings, sel, pd.Timestamp(start, tz="UTC"), stop, monkeypatch)
                _assert_same(fast, ref)
    assert raw_calls and all(raw_calls)  # the raw path really was taken


def test_sub_step_data_switches_to_group_by(influx_settings, monkeypatch):
    rng = np.random.default_rng(4)
    _write(influx_settings, [f"m2,host=c v={float(rng.normal())!r} {T0 + i * 2 * 10**9}" for i in range(900)])
    stop = pd.Timestamp(T0 + 1800 * 10**9, tz="UTC")
    for agg in ("mean", "max", "median"):
        sel = SeriesSelector(measurement="m2", field="v", group_by=["host"], every="10s", aggregate=agg)
        fast, ref = _read_both(influx_settings, sel, pd.Timestamp(T0, tz="UTC"), stop, monkeypatch)
        _assert_same(fast, ref)
        (s,) = fast.values()
        assert s.notna().sum() == 180  # five points per bucket were aggregated, not dropped


@pytest.mark.parametrize("scale", [1e-30, 1e-5, 1e-4, 1.0, 1e15, 1e16, 1e300, "mixed"])
def test_line_numbers_are_byte_identical_to_repr(scale):
    mixed = scale == "mixed"  # mostly ordinary numbers, a few tiny and huge ones
    scale = 1.0 if mixed else scale
    rng = np.random.default_rng(int(-np.log10(scale) * 7) % 1000)
    n = 300
    cols = {c: rng.normal(size=n) * scale for c in lp.SCORE_FIELDS}
    if mixed:
        for c in lp.SCORE_FIELDS:
            cols[c][5::41] *= 1e-9
            cols[c][7::53] *= 1e20
            cols[c][9::61] = np.inf
    cols["value"][::17] = np.nan
    cols["error"][::23] = -0.0
    idx = pd.date_range("2024-01-01", periods=n, freq="10s", tz="UTC")
    frame = pd.DataFrame({**cols, "anomalous": rng.random(n) > 0.5}, index=idx)
    key = SeriesKey.make("waveform", "value", {"host": "a b"})
    got = lp.score_lines(key, frame, "7")
    prefix = lp.series_prefix(lp.SCORE_MEASUREMENT, lp.result_tags(key, "7"))
    ts = lp.to_ns(idx).tolist()
    want = []
    for j in range(n):
        parts = [f"{c}={float(cols[c][j])!r}" for c in lp.SCORE_FIELDS if np.isfinite(cols[c][j])]
        parts.append(f"anomalous={int(frame['anomalous'].iloc[j])}i")
        want.append(f"{prefix} {','.join(parts)} {ts[j]}")
    assert got == want
