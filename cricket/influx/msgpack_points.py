"""InfluxDB's MessagePack /query answers decoded with each series' points as numpy arrays.

A read of 100 series at 10 s for a day is ~860,000 rows. ``msgpack`` decodes every row
into a tuple of an int and a float (~130 bytes of small Python objects per point, in
CPython's own allocator), which the read then copies into numpy. Here only the answer's
structure (results, series, names, tags, columns: a few objects per series) becomes
Python objects; a series' rows, when they all have the layout InfluxDB gives a float
field (a 2-array of an int64 time and a float64 value, 19 bytes), are read as one numpy
view of the answer's bytes into :class:`Points`: no object per point. Any other row
(a null, an integer, string or boolean field, another encoding) sends its whole document
to ``msgpack``, which decodes it exactly as before (rows as tuples).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

#: one row as InfluxDB writes it for a float field: fixarray(2), int64 time, float64 value
ROW = np.dtype([("array", "u1"), ("time_tag", "u1"), ("time", ">i8"),
                ("value_tag", "u1"), ("value", ">f8")])
FIXARRAY_2, INT64, FLOAT64 = 0x92, 0xD3, 0xCB


@dataclass(frozen=True)
class Points:
    """The rows ``(time, value)`` of one series (or one piece of it) as arrays: times in
    integer nanoseconds, values as float64."""

    times: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def rows(self) -> list[tuple[int, float]]:
        """The same rows as ``msgpack`` gives them (an int and a float each)."""
        return list(zip(self.times.tolist(), self.values.tolist(), strict=True))

    @staticmethod
    def join(parts: list[Points]) -> Points:
        return Points(np.concatenate([p.times for p in parts]),
                      np.concatenate([p.values for p in parts]))


class _Unusual(Exception):
    """A document this decoder leaves to ``msgpack`` (rows of another layout, ext types)."""


_FIXED = {  # type byte -> (struct format, size) of fixed-size scalars
    0xCA: (">f", 4), 0xCB: (">d", 8),
    0xCC: (">B", 1), 0xCD: (">H", 2), 0xCE: (">I", 4), 0xCF: (">Q", 8),
    0xD0: (">b", 1), 0xD1: (">h", 2), 0xD2: (">i", 4), 0xD3: (">q", 8),
}
_LENGTHS = {0xD9: (">B", 1), 0xDA: (">H", 2), 0xDB: (">I", 4),  # str 8/16/32
            0xC4: (">B", 1), 0xC5: (">H", 2), 0xC6: (">I", 4),  # bin 8/16/32
            0xDC: (">H", 2), 0xDD: (">I", 4),  # array 16/32
            0xDE: (">H", 2), 0xDF: (">I", 4)}  # map 16/32


class _Reader:
    """Walks concatenated MessagePack documents in ``buf``; maps become dicts, arrays
    tuples (as ``msgpack.unpackb(use_list=False, raw=False)``), except that a map's
    ``values`` array of float rows becomes :class:`Points`."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def _length(self, b: int) -> int:
        fmt, size = _LENGTHS[b]
        (n,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return n

    def _container(self) -> tuple[str, int] | None:
        """("array" | "map", length) when a container starts at ``pos`` (consumed)."""
        b = self.buf[self.pos]
        if 0x90 <= b <= 0x9F:
            self.pos += 1
            return "array", b & 0x0F
        if 0x80 <= b <= 0x8F:
            self.pos += 1
            return "map", b & 0x0F
        if b in (0xDC, 0xDD, 0xDE, 0xDF):
            self.pos += 1
            return ("array" if b in (0xDC, 0xDD) else "map"), self._length(b)
        return None

    def value(self) -> Any:
        buf = self.buf
        kind = self._container()
        if kind is not None:
            what, n = kind
            if what == "array":
                return tuple(self.value() for _ in range(n))
            out = {}
            for _ in range(n):
                key = self.value()
                if not isinstance(key, str | bytes):
                    raise _Unusual  # msgpack refuses such keys (strict_map_key)
                out[key] = self.points() if key == "values" else self.value()
            return out
        b = buf[self.pos]
        self.pos += 1
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0xA0 <= b <= 0xBF:
            return self._text(b & 0x1F)
        if b == 0xC0:
            return None
        if b in (0xC2, 0xC3):
            return b == 0xC3
        if b in _FIXED:
            fmt, size = _FIXED[b]
            (v,) = struct.unpack_from(fmt, buf, self.pos)
            self.pos += size
            return v
        if b in (0xD9, 0xDA, 0xDB):
            return self._text(self._length(b))
        if b in (0xC4, 0xC5, 0xC6):
            return self._bytes(self._length(b))
        raise _Unusual  # ext types, reserved bytes

    def _bytes(self, n: int) -> bytes:
        self.pos += n
        if self.pos > len(self.buf):
            raise _Unusual  # cut short
        return bytes(self.buf[self.pos - n : self.pos])

    def _text(self, n: int) -> str:
        return self._bytes(n).decode("utf-8")

    def points(self) -> Any:
        """A series' ``values``: :class:`Points` when every row is a float row, else
        the document goes to ``msgpack``."""
        start = self.pos
        kind = self._container()
        if kind is None or kind[0] != "array":
            self.pos = start
            return self.value()
        n = kind[1]
        end = self.pos + n * ROW.itemsize
        if end > len(self.buf):
            raise _Unusual
        rows = np.frombuffer(self.buf, dtype=ROW, count=n, offset=self.pos)
        # Row i starts at i * 19 only if rows 0..i-1 are float rows; checking every
        # row's three type bytes therefore proves the whole layout (by induction).
        if not ((rows["array"] == FIXARRAY_2).all() and (rows["time_tag"] == INT64).all()
                and (rows["value_tag"] == FLOAT64).all()):
            raise _Unusual
        self.pos = end
        return Points(rows["time"].astype(np.int64), rows["value"].astype(np.float64))


class _Window:
    """A file-like view of ``buf`` from ``pos`` (so ``msgpack.Unpacker`` reads one
    document without a copy of the rest of the answer)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.view, self.pos = memoryview(buf), pos

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n is None or n < 0 else self.pos + n
        chunk = bytes(self.view[self.pos : end])
        self.pos += len(chunk)
        return chunk


def decode_points(buf: bytes) -> list[Any]:
    """Every document of a (chunked) MessagePack answer, in order, as
    ``msgpack.Unpacker(use_list=False, raw=False)`` gives them, except that a series'
    ``values`` of float rows is :class:`Points`."""
    docs = []
    reader = _Reader(buf)
    while reader.pos < len(buf):
        start = reader.pos
        try:
            docs.append(reader.value())
            continue
        except (_Unusual, IndexError, struct.error, ValueError):
            pass  # msgpack decodes this document (or raises what it always raised)
        unpacker = msgpack.Unpacker(_Window(buf, start), use_list=False, raw=False)
        try:
            docs.append(unpacker.unpack())
        except msgpack.OutOfData:
            break  # a cut answer: the whole documents before it count (as before)
        reader.pos = start + unpacker.tell()
    return docs
