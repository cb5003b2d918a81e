"""The synthetic cricket fleet: regular, noisy waveforms with known injected anomalies.

Each host reports measurement ``waveform``, field ``value``, tag ``host=cricket001...``.
Hosts cycle through three waveform families (periods of ~32-200 samples):

* ``sines2``    two sines (like the notebook's ``sin(t/4) + sin(t/9)``-style signals)
* ``heartbeat`` an ECG-like beat: small P wave, sharp QRS spike, rounded T wave
* ``sines3``    three sines with incommensurate periods

Anomalies (``Fleet.truth``) are injected into some hosts (about a third stay clean), by
default one per distinct hour of the last 12 hours of the range, so a pipeline that trains
on the earlier days and scores the latest hours should find them:

* ``zeroed``       the metric reads 0 for a stretch (a dead collector)
* ``spike``        a few samples far above the normal range
* ``level_shift``  the whole waveform moves up by 1.5x its amplitude for a stretch
* ``frequency``    the waveform runs 2.5x faster for a stretch (continuous phase)
* ``shape``        a triangle wave with the same minimum and maximum as the stretch it
                   replaces: the range stays normal, only the shape is wrong

``InjectedAnomaly.start`` is the first affected step, ``end`` the step after the last one
(half-open ``[start, end)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from cricket.config import parse_duration
from cricket.errors import CricketValueError
from cricket.influx.base import SeriesKey

KINDS = ("zeroed", "spike", "level_shift", "frequency", "shape")
FAMILIES = ("sines2", "heartbeat", "sines3")
MEASUREMENT = "waveform"
FIELD = "value"


@dataclass(frozen=True)
class InjectedAnomaly:
    key: SeriesKey
    kind: str
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive

    def contains(self, t: pd.Timestamp) -> bool:
        return self.start <= t < self.end


@dataclass
class Fleet:
    series: dict[SeriesKey, pd.Series]
    truth: list[InjectedAnomaly]
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive
    step: pd.Timedelta
    families: dict[SeriesKey, str] = field(default_factory=dict)

    @property
    def keys(self) -> list[SeriesKey]:
        return sorted(self.series)

    @property
    def n_points(self) -> int:
        return sum(len(s) for s in self.series.values())

    def clean_keys(self) -> list[SeriesKey]:
        dirty = {a.key for a in self.truth}
        return [k for k in self.keys if k not in dirty]

    def truth_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"series": str(a.key), "host": a.key.tag_dict.get("host"), "kind": a.kind,
                 "start": a.start, "end": a.end}
                for a in self.truth
            ],
            columns=["series", "host", "kind", "start", "end"],
        )

    def summary(self) -> dict[str, Any]:
        return {
            "hosts": len(self.series),
            "points": self.n_points,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "step": str(self.step),
            "anomalies": len(self.truth),
            "clean_hosts": [k.tag_dict.get("host") for k in self.clean_keys()],
        }


# ------------------------------------------------------------------------------ waveforms
def _sines(rng: np.random.Generator, n_components: int) -> Callable[[np.ndarray], np.ndarray]:
    periods = rng.uniform(32, 200, n_components)
    phases = rng.uniform(0, 2 * np.pi, n_components)
    amps = rng.uniform(0.5, 1.0, n_components)

    def wave(u: np.ndarray) -> np.ndarray:
        out = np.zeros_like(u, dtype=np.float64)
        for p, ph, a in zip(periods, phases, amps, strict=True):
            out += a * np.sin(2 * np.pi * u / p + ph)
        return out / amps.sum()

    return wave


def _heartbeat(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    period = rng.uniform(60, 100)
    # (centre, amplitude, width) as fractions of one beat
    bumps = [(0.20, 0.15, 0.030), (0.36, -0.12, 0.012), (0.40, 1.0, 0.016),
             (0.44, -0.25, 0.012), (0.65, 0.30, 0.050)]
    offset = rng.uniform(0, 1)

    def wave(u: np.ndarray) -> np.ndarray:
        x = np.mod(u / period + offset, 1.0)
        out = np.zeros_like(x)
        for c, a, w in bumps:
            d = np.minimum(np.abs(x - c), 1 - np.abs(x - c))
            out += a * np.exp(-0.5 * (d / w) ** 2)
        return 2 * out - 0.5  # roughly in [-1, 1.5]

    return wave


def _family_wave(family: str, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    if family == "heartbeat":
        return _heartbeat(rng)
    return _sines(rng, 2 if family == "sines2" else 3)


def _utc(t: datetime | pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


# ------------------------------------------------------------------------------ the fleet
def make_fleet(
    hosts: int = 8,
    days: float = 3.0,
    step: str | timedelta = "10s",
    start: datetime | pd.Timestamp | str | None = None,
    seed: int = 0,
    anomalies: bool = True,
    anomaly_window: tuple[Any, Any] | None = None,
) -> Fleet:
    """Build ``hosts`` regular series of ``days`` at ``step``.

    ``start`` defaults to ``days`` before now (floored to the hour), so the fleet ends at
    about now. ``anomaly_window=(start, end)`` places the anomalies (default: the last 12
    hours, or the second half of a shorter range); each anomaly gets its own hour while
    the window has enough hours. Same arguments (with an explicit ``start``) give the
    same fleet.
    """
    if hosts < 1:
        raise CricketValueError("hosts must be at least 1")
    step_td = pd.Timedelta(parse_duration(step))
    n = int(pd.Timedelta(days=days) / step_td)
    if n < 2:
        raise CricketValueError(f"{days} days at {step_td} is fewer than two points: give more days")
    if start is None:
        end0 = pd.Timestamp.now(tz="UTC").floor("h")
        t0 = (end0 - pd.Timedelta(days=days)).floor(step_td)
    else:
        t0 = _utc(start)
    index = pd.date_range(t0, periods=n, freq=step_td).as_unit("ns")
    t_end = index[-1] + step_td
    rng = np.random.default_rng(seed)

    keys = [SeriesKey.make(MEASUREMENT, FIELD, {"host": f"cricket{i + 1:03d}"}) for i in range(hosts)]
    families = {k: FAMILIES[i % len(FAMILIES)] for i, k in enumerate(keys)}

    # which hosts get which anomalies
    plan: list[tuple[SeriesKey, str]] = []
    if anomalies:
        n_clean = max(1, hosts // 3) if hosts >= 2 else 0
        dirty = keys[: hosts - n_clean]
        n_anoms = max(len(KINDS), len(dirty))
        plan = [(dirty[j % len(dirty)], KINDS[j % len(KINDS)]) for j in range(n_anoms)]

    # where: one distinct hour each, inside the window
    if anomaly_window is not None:
        w0, w1 = _utc(anomaly_window[0]), _utc(anomaly_window[1])
    else:
        span = t_end - t0
        w1 = t_end
        w0 = t_end - min(pd.Timedelta(hours=12), span / 2)
    w0, w1 = max(w0, t0), min(w1, t_end)
    if plan and w1 <= w0:
        raise CricketValueError(f"anomaly_window {anomaly_window} lies outside the fleet's range")
    slot_len = pd.Timedelta(hours=1)
    if plan and (w1 - w0) < slot_len * len(plan):
        slot_len = (w1 - w0) / len(plan)
    n_slots = max(1, int((w1 - w0) / slot_len))
    slots = rng.permutation(n_slots)

    series: dict[SeriesKey, pd.Series] = {}
    truth: list[InjectedAnomaly] = []
    per_key: dict[SeriesKey, list[tuple[str, int, int]]] = {k: [] for k in keys}
    for j, (key, kind) in enumerate(plan):
        s0 = w0 + slot_len * int(slots[j % n_slots])
        slot_steps = max(2, int(slot_len / step_td))
        if kind == "spike":
            length = int(rng.integers(1, 4))
        else:
            length = max(2, min(int(rng.uniform(0.4, 0.7) * slot_steps), slot_steps - 1))
        offset = int(rng.integers(0, max(1, slot_steps - length)))
        i0 = int(np.searchsorted(index.asi8, s0.value)) + offset
        i0 = min(max(i0, 0), n - length)
        per_key[key].append((kind, i0, i0 + length))
        truth.append(
            InjectedAnomaly(key, kind, index[i0], index[i0 + length - 1] + step_td)
        )

    for key in keys:
        hrng = np.random.default_rng([seed, int(key.tag_dict["host"][7:])])
        wave = _family_wave(families[key], hrng)
        level = hrng.uniform(20, 80)
        amp = hrng.uniform(5, 20)
        noise = 0.03 * amp
        rate = np.ones(n)
        for kind, i0, i1 in per_key[key]:
            if kind == "frequency":
                rate[i0:i1] = 2.5
        u = np.cumsum(rate) - 1.0
        base = wave(u)
        values = level + amp * base + hrng.normal(0, noise, n)
        for kind, i0, i1 in per_key[key]:
            if kind == "zeroed":
                values[i0:i1] = 0.0
            elif kind == "spike":
                values[i0:i1] = level + amp * (base.max() + 4.0)
            elif kind == "level_shift":
                values[i0:i1] += 1.5 * amp * (base.max() - base.min())
            elif kind == "shape":
                seg = values[i0:i1]
                lo, hi = seg.min(), seg.max()
                period = 24
                tri = np.abs(((np.arange(i1 - i0) / period) % 1.0) * 2 - 1)  # 1..0..1
                values[i0:i1] = lo + (hi - lo) * tri
        series[key] = pd.Series(values, index=index, name=str(key))
    truth.sort(key=lambda a: (a.start, str(a.key)))
    return Fleet(series=series, truth=truth, start=index[0], end=t_end, step=step_td,
                 families=families)


def write_fleet(fleet: Fleet, sink_or_settings: Any) -> int:
    """Write every series of the fleet; returns the number of points written.

    Give a ``Settings`` (the database is created when missing, and the configured
    source's sink is used) or a sink with ``write_series(key, series)``.
    """
    from cricket.config import Settings

    if isinstance(sink_or_settings, Settings):
        from cricket.influx import make_sink

        settings = sink_or_settings
        if settings.influx_source == "influxql":
            from cricket.influx.influxql import ensure_database

            ensure_database(settings)
        sink = make_sink(settings)
        try:
            return sum(sink.write_series(k, s) for k, s in fleet.series.items())  # type: ignore[attr-defined]
        finally:
            sink.close()
    return sum(sink_or_settings.write_series(k, s) for k, s in fleet.series.items())
