"""Reads decoded straight into arrays give exactly what msgpack's own decoding gives.

``cricket.influx.msgpack_points.decode_points`` decodes a MessagePack /query answer
without an object per point; the reference is ``msgpack.Unpacker`` (``use_list=False``),
which the read used before. Checked on hand-made answers (every row layout, cut answers,
odd types) and on real influxd answers (float, integer, string and boolean fields, nulls
from GROUP BY time, series split over many chunks), and ``InfluxQLSource.read`` with
the arrays equals ``read`` with msgpack's rows.
"""

from __future__ import annotations

import struct

import httpx
import msgpack
import numpy as np
import pandas as pd
import pytest

import cricket.influx.influxql as iq
from cricket.config import SeriesSelector
from cricket.influx.influxql import InfluxQLClient, InfluxQLSource
from cricket.influx.msgpack_points import Points, decode_points

T0 = 1704067200 * 10**9


def _plain(obj):  # noqa: ANN001, ANN202
    """``obj`` with every Points as the tuple of row tuples msgpack gives."""
    if isinstance(obj, Points):
        return tuple(obj.rows())
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if type(obj) in (tuple, list):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _reference(buf: bytes) -> list:
    unpacker = msgpack.Unpacker(use_list=False, raw=False)
    unpacker.feed(buf)
    return list(unpacker)


def _same(got: list, ref: list) -> None:
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        a = _plain(a)
        assert a == b
        # same Python types all the way down (an int time stays an int, a float a float)
        assert repr(a) == repr(b)


def _float_rows(times, values) -> bytes:  # noqa: ANN001
    """Rows as InfluxDB writes a float field: fixarray 2, int64 time, float64 value."""
    n = len(times)
    head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
    return head + b"".join(b"\x92\xd3" + struct.pack(">q", t) + b"\xcb" + struct.pack(">d", v)
                           for t, v in zip(times, values, strict=True))


def _doc(host: str, rows: bytes, partial: bool | None = None) -> bytes:
    series = {"name": "m", "tags": {"host": host}, "columns": ["time", "value"]}
    body = msgpack.packb(series)
    body = bytes([body[0] + 1]) + body[1:] + msgpack.packb("values") + rows  # fixmap +1 entry
    result = {"statement_id": 0}
    res = msgpack.packb(result)
    n_res = 2 + (partial is not None)
    res = bytes([0x80 | n_res]) + res[1:] + msgpack.packb("series") + b"\x91" + body
    if partial is not None:
        res += msgpack.packb("partial") + msgpack.packb(partial)
    return b"\x81" + msgpack.packb("results") + b"\x91" + res


def test_float_rows_become_arrays_equal_to_msgpack():
    rng = np.random.default_rng(1)
    times = T0 + np.arange(40) * 10**10 + rng.integers(0, 10**10, 40)
    values = rng.normal(size=40)
    values[3] = -0.0
    values[5] = np.inf
    buf = (_doc("a", _float_rows(times[:20].tolist(), values[:20].tolist()), partial=True)
           + _doc("a", _float_rows(times[20:].tolist(), values[20:].tolist()))
           + _doc("b", _float_rows([], [])))
    got = decode_points(buf)
    _same(got, _reference(buf))
    pts = got[0]["results"][0]["series"][0]["values"]
    assert isinstance(pts, Points)  # the fast path was taken
    assert pts.times.dtype == np.int64 and pts.values.dtype == np.float64
    np.testing.assert_array_equal(pts.times, times[:20])
    assert np.signbit(pts.values[3])


@pytest.mark.parametrize("rows", [
    [(T0, None), (T0 + 1, 1.5)],  # a null (GROUP BY time, empty bucket)
    [(T0, 3), (T0 + 1, 2**40)],  # an integer field
    [(T0, "x"), (T0 + 1, "y")],  # a string field
    [(T0, True), (T0 + 1, False)],  # a boolean field
    [(5, 1.0), (T0, 2.0)],  # a time small enough to pack in one byte
    [(T0, 1.0, 2.0)],  # three columns
])
def test_other_rows_are_decoded_by_msgpack(rows):
    buf = _doc("a", msgpack.packb(rows)) + _doc("b", _float_rows([T0], [1.0]))
    got = decode_points(buf)
    _same(got, _reference(buf))
    assert not isinstance(got[0]["results"][0]["series"][0]["values"], Points)
    assert isinstance(got[1]["results"][0]["series"][0]["values"], Points)


def test_odd_documents_match_msgpack():
    docs = [
        {"error": "database not found: x"},
        {"results": [{"statement_id": 0, "error": "boom"}]},
        {"results": [{"statement_id": 0}]},
        {"s8": "é" * 40, "s16": "x" * 300, "bin": b"\x00\x01", "neg": -5, "i8": -100,
         "i16": -3000, "i32": -(2**20), "u8": 200, "u16": 60000, "u32": 2**31, "u64": 2**63,
         "f": 1.25, "nil": None, "t": True, "big": list(range(20)),
         "many": {str(i): i for i in range(20)}},
        [1, 2, 3],
    ]
    buf = b"".join(msgpack.packb(d) for d in docs)
    buf += msgpack.packb({"ext": msgpack.ExtType(1, b"ab")})  # an ext type: msgpack's turn
    buf += msgpack.packb(3.5, use_single_float=True)
    _same(decode_points(buf), _reference(buf))


def test_cut_answers_keep_the_whole_documents_like_msgpack():
    buf = (_doc("a", _float_rows([T0, T0 + 10], [1.0, 2.0]), partial=True)
           + _doc("a", msgpack.packb([(T0 + 20, None)])))
    for cut in range(len(buf) + 1):
        _same(decode_points(buf[:cut]), _reference(buf[:cut]))


def test_bad_bytes_raise_as_msgpack_does():
    with pytest.raises(ValueError):
        _reference(b"\xc1")
    with pytest.raises(ValueError):
        decode_points(b"\xc1")


# ------------------------------------------------------------------ real influxd answers
def _write(settings, lines: list[str]) -> None:  # noqa: ANN001
    r = httpx.post(f"{settings.influx_url}/write", params={"db": settings.influx_database},
                   content="\n".join(lines).encode())
    assert r.status_code == 204, r.text


def _rows_listed(series: list[dict]) -> list[dict]:
    """Each series with its rows as a list of tuples (a joined series is a list, a
    series in one piece a tuple, either way)."""
    return [dict(s, values=list(_plain(s["values"]))) for s in series]


def _plain_reads(monkeypatch):  # noqa: ANN001, ANN202
    """The read as it was: every document decoded by msgpack (rows as tuples)."""
    monkeypatch.setattr(iq, "decode_points", lambda buf: _reference(buf))


def test_influxd_answers_decode_like_msgpack(influx_settings, monkeypatch):
    rng = np.random.default_rng(7)
    lines = []
    for h in range(5):
        for i in range(0, 300, 1 + h % 3):  # gaps: GROUP BY time answers nulls
            lines.append(f"w,host=h{h} v={rng.normal()!r},n={i}i,s=\"x{i}\",b={'true' if i % 2 else 'false'} "
                         f"{T0 + i * 10**10 + int(rng.integers(0, 10**10))}")
    _write(influx_settings, lines)
    monkeypatch.setattr(iq, "CHUNK_ROWS", 7)  # series split over many documents
    stop = T0 + 3000 * 10**10
    queries = [
        f'SELECT "v" FROM "w" WHERE time >= {T0} AND time < {stop} GROUP BY "host"',
        f'SELECT mean("v") FROM "w" WHERE time >= {T0} AND time < {stop} GROUP BY time(20s), "host"',
        f'SELECT "n" FROM "w" WHERE time >= {T0} AND time < {stop} GROUP BY "host"',
        f'SELECT "s" FROM "w" WHERE time >= {T0} AND time < {stop} GROUP BY "host"',
        f'SELECT "b" FROM "w" WHERE time >= {T0} AND time < {stop} GROUP BY "host"',
        f'SELECT "v" FROM "w" WHERE time >= {stop} GROUP BY "host"',  # nothing
        'SELECT "v" FROM "nowhere"',
    ]
    with InfluxQLClient(influx_settings) as c:
        for q in queries:
            got = _rows_listed(c.query_points(q))
            ref = _rows_listed(c.query(q))
            assert got == ref and repr(got) == repr(ref)
        assert isinstance(c.query_points(queries[0])[0]["values"], Points)
        with pytest.raises(iq.InfluxError, match="rejected a query"):
            c.query_points('SELECT "v" FROM "w" WHERE time >>> 3')


@pytest.mark.parametrize("field,agg", [("v", "mean"), ("v", "max"), ("n", "mean"), ("n", "sum")])
def test_read_with_arrays_equals_read_with_msgpack_rows(influx_settings, monkeypatch, field, agg):
    rng = np.random.default_rng(11)
    lines = []
    for h in range(6):
        for i in range(500):
            if rng.random() < 0.05:
                continue  # missing steps
            v = -0.0 if i % 50 == 0 else float(rng.normal())
            t = T0 + i * 10**10 + (int(rng.integers(0, 10**10)) if h % 2 else 0)
            lines.append(f"w,host=h{h} v={v!r},n={i}i {t}")
    for i in range(100):  # two points per bucket for h9: the GROUP BY path
        lines.append(f"w,host=h9 v={float(i)!r},n={i}i {T0 + i * 5 * 10**9}")
    _write(influx_settings, lines)
    settings = influx_settings.model_copy(update={"influx_read_chunk": pd.Timedelta("23min")})
    sel = SeriesSelector(measurement="w", field=field, group_by=["host"], every="10s", aggregate=agg)
    start, stop = pd.Timestamp(T0 + 10**9, tz="UTC"), pd.Timestamp(T0 + 5000 * 10**9, tz="UTC")
    for keys in (None, "h0-h5"):
        with InfluxQLSource(settings) as src:
            ks = None if keys is None else [k for k in src.discover(sel) if k.tag_dict["host"] != "h9"]
            fast = src.read(sel, start, stop, keys=ks)
        with monkeypatch.context() as m:
            _plain_reads(m)
            with InfluxQLSource(settings) as src:
                ref = src.read(sel, start, stop, keys=ks)
        assert fast.keys() == ref.keys() and len(fast) >= 6
        for k in fast:
            a, b = fast[k], ref[k]
            assert a.index.equals(b.index) and a.name == b.name and a.dtype == b.dtype
            np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
            np.testing.assert_array_equal(np.signbit(a.fillna(1).to_numpy()),
                                          np.signbit(b.fillna(1).to_numpy()))
