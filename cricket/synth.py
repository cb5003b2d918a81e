"""The synthetic cricket fleet: regular, noisy waveforms with known injected anomalies.

Each host reports measurement ``waveform``, field ``value``, tag ``host=cricket001...``.
Hosts cycle through three waveform families (periods of ~32-200 samples):

* ``sines2``    two sines (like the notebook's ``sin(t/4) + sin(t/9)``-style signals)
* ``heartbeat`` an ECG-like beat: small P wave, sharp QRS spike, rounded T wave
* ``sines3``    three sines with incommensurate periods
* ``pulses``    a quiet baseline with a narrow pulse every 60-240 samples (a batch job,
                a cron), on a slow drift
* ``seasonal``  two sines on a slow cycle (a period of half a day to a day) as large as
                the waveform itself

The demo and the tests use the first three (``FAMILIES``); ``ALL_FAMILIES`` adds the
last two (``benchmarks/events.py`` uses every family and every kind).

Anomalies (``Fleet.truth``) are injected into some hosts (about a third stay clean), by
default one per distinct hour of the last 12 hours of the range, so a pipeline that trains
on the earlier days and scores the latest hours should find them:

* ``zeroed``       the metric reads 0 for a stretch (a dead collector)
* ``spike``        a few samples far above the normal range
* ``level_shift``  the whole waveform moves up by 1.5x its amplitude for a stretch
* ``frequency``    the waveform runs 2.5x faster for a stretch (continuous phase)
* ``shape``        a triangle wave with the same minimum and maximum as the stretch it
                   replaces: the range stays normal, only the shape is wrong

and, in ``ALL_KINDS`` (anomalies a reconstruction of the shape cannot see by its error):

* ``stuck``          the value frozen at its last normal reading (a stuck sensor)
* ``missing_pulse``  one to three consecutive pulses of a ``pulses`` host do not come (a
                     batch job that did not run); the stretch runs from the first missing
                     pulse's start to the last one's end
* ``warp``           the same waveform running twice as fast or half as fast (continuous
                     phase: after the stretch it runs on at its normal rate)
* ``noise_burst``    noise ten times the normal level on top of the waveform

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
from cricket.series import SeriesKey

KINDS = ("zeroed", "spike", "level_shift", "frequency", "shape")
ALL_KINDS = (*KINDS, "stuck", "missing_pulse", "warp", "noise_burst")
FAMILIES = ("sines2", "heartbeat", "sines3")
ALL_FAMILIES = (*FAMILIES, "pulses", "seasonal")
PULSE_FAMILIES = ("pulses",)  # families a ``missing_pulse`` can be injected into
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


@dataclass(frozen=True)
class _Pulses:
    """A train of narrow pulses (period, width and phase in samples of ``u``)."""

    period: float
    width: float
    offset: float

    def shape(self, u: np.ndarray) -> np.ndarray:
        x = np.mod(u - self.offset, self.period)
        inside = x < self.width
        return np.where(inside, np.sin(np.pi * x / self.width) ** 2, 0.0)

    def spans(self, u: np.ndarray) -> list[tuple[int, int]]:
        """Half-open index ranges of ``u`` where a pulse is on."""
        on = np.mod(u - self.offset, self.period) < self.width
        padded = np.r_[False, on, False]
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _pulses(rng: np.random.Generator) -> tuple[Callable[[np.ndarray], np.ndarray], _Pulses]:
    train = _Pulses(
        period=float(rng.uniform(60, 240)), width=float(rng.uniform(4, 12)),
        offset=float(rng.uniform(0, 60)),
    )
    drift_period = rng.uniform(2000, 6000)
    drift_phase = rng.uniform(0, 2 * np.pi)

    def baseline(u: np.ndarray) -> np.ndarray:
        return 0.1 * np.sin(2 * np.pi * u / drift_period + drift_phase) - 0.5

    return baseline, train


def _seasonal(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    fast = _sines(rng, 2)
    slow_period = rng.uniform(4320, 8640)  # half a day to a day at 10 s
    slow_phase = rng.uniform(0, 2 * np.pi)

    def wave(u: np.ndarray) -> np.ndarray:
        return 0.5 * fast(u) + 0.5 * np.sin(2 * np.pi * u / slow_period + slow_phase)

    return wave


def _family_wave(
    family: str, rng: np.random.Generator
) -> tuple[Callable[[np.ndarray], np.ndarray], _Pulses | None]:
    """The family's waveform without pulses, and its pulse train (None: no pulses)."""
    if family == "heartbeat":
        return _heartbeat(rng), None
    if family == "pulses":
        return _pulses(rng)
    if family == "seasonal":
        return _seasonal(rng), None
    return _sines(rng, 2 if family == "sines2" else 3), None


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
    kinds: tuple[str, ...] = KINDS,
    families: tuple[str, ...] = FAMILIES,
    per_host: int = 1,
    length_range: tuple[float, float] = (0.4, 0.7),
    clean_fraction: float = 1 / 3,
) -> Fleet:
    """Build ``hosts`` regular series of ``days`` at ``step``.

    ``start`` defaults to ``days`` before now (floored to the hour), so the fleet ends at
    about now. ``anomaly_window=(start, end)`` places the anomalies (default: the last 12
    hours, or the second half of a shorter range); each anomaly gets its own hour while
    the window has enough hours (with more anomalies than hours, each host's anomalies
    still get distinct hours). ``kinds`` and ``families`` choose what is injected and
    which waveforms the hosts cycle through (``ALL_KINDS``, ``ALL_FAMILIES`` for
    everything); ``per_host`` anomalies go into each host that is not clean, each
    ``length_range`` (fractions) of its slot long; ``clean_fraction`` of the hosts (at
    least one) stay clean. Same arguments (with an explicit
    ``start``) give the same fleet.
    """
    if hosts < 1:
        raise CricketValueError("hosts must be at least 1")
    unknown = sorted(set(kinds) - set(ALL_KINDS)) + sorted(set(families) - set(ALL_FAMILIES))
    if unknown:
        raise CricketValueError(
            f"unknown anomaly kind or family {unknown}: choose from {ALL_KINDS} and {ALL_FAMILIES}"
        )
    if not families:
        raise CricketValueError("families must name at least one waveform family")
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
    fams = {k: families[i % len(families)] for i, k in enumerate(keys)}

    # which hosts get which anomalies
    plan: list[tuple[SeriesKey, str]] = []
    if anomalies and kinds:
        n_clean = max(1, int(hosts * clean_fraction + 1e-9)) if hosts >= 2 else 0
        dirty = keys[: hosts - n_clean]
        pulsed = [k for k in dirty if fams[k] in PULSE_FAMILIES]
        if "missing_pulse" in kinds and not pulsed:
            raise CricketValueError(
                "a missing_pulse needs a host of a family with pulses: add 'pulses' to families"
            )
        n_anoms = max(len(kinds), len(dirty) * max(int(per_host), 1))
        plan = [(dirty[j % len(dirty)], kinds[j % len(kinds)]) for j in range(n_anoms)]
        # A missing pulse needs a host with pulses: trade kinds with one that has them.
        for j, (host, kind) in enumerate(plan):
            if kind != "missing_pulse" or host in pulsed:
                continue
            for i, (other, other_kind) in enumerate(plan):
                if other in pulsed and other_kind != "missing_pulse":
                    plan[i], plan[j] = (other, kind), (host, other_kind)
                    break

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
    if per_host <= 1:  # one distinct slot per anomaly, shorter than an hour if need be
        if plan and (w1 - w0) < slot_len * len(plan):
            slot_len = (w1 - w0) / len(plan)
        n_slots = max(1, int((w1 - w0) / slot_len))
        slots = rng.permutation(n_slots)
        slot_of = [int(slots[j % n_slots]) for j in range(len(plan))]
    else:  # distinct slots within each host
        busiest = max([sum(h == k for h, _ in plan) for k in keys], default=1)
        if (w1 - w0) < slot_len * busiest:
            slot_len = (w1 - w0) / busiest
        n_slots = max(1, int((w1 - w0) / slot_len))
        host_slots = {k: rng.permutation(n_slots) for k in keys}
        seen: dict[SeriesKey, int] = {}
        slot_of = []
        for host, _ in plan:
            slot_of.append(int(host_slots[host][seen.get(host, 0) % n_slots]))
            seen[host] = seen.get(host, 0) + 1

    series: dict[SeriesKey, pd.Series] = {}
    truth: list[InjectedAnomaly] = []
    per_key: dict[SeriesKey, list[tuple[str, int, int, float]]] = {k: [] for k in keys}
    lo_frac, hi_frac = length_range
    for j, (key, kind) in enumerate(plan):
        s0 = w0 + slot_len * slot_of[j]
        slot_steps = max(2, int(slot_len / step_td))
        extra = 0.0
        if kind == "spike":
            length = int(rng.integers(1, 4))
        else:
            length = max(2, min(int(rng.uniform(lo_frac, hi_frac) * slot_steps), slot_steps - 1))
        offset = int(rng.integers(0, max(1, slot_steps - length)))
        if kind == "missing_pulse":
            extra = float(rng.integers(1, 4))  # pulses that do not come
            offset, length = 0, slot_steps
        elif kind == "warp":
            extra = float(rng.choice([0.5, 2.0]))
        i0 = int(np.searchsorted(index.asi8, s0.value)) + offset
        i0 = min(max(i0, 1), n - length)
        per_key[key].append((kind, i0, i0 + length, extra))

    for key in keys:
        hrng = np.random.default_rng([seed, int(key.tag_dict["host"][7:])])
        wave, pulses = _family_wave(fams[key], hrng)
        level = hrng.uniform(20, 80)
        amp = hrng.uniform(5, 20)
        noise = 0.03 * amp
        rate = np.ones(n)
        for kind, i0, i1, extra in per_key[key]:
            if kind == "frequency":
                rate[i0:i1] = 2.5
            elif kind == "warp":
                rate[i0:i1] = extra
        u = np.cumsum(rate) - 1.0
        base = wave(u)
        pulse = np.zeros(n)
        if pulses is not None:
            pulse = pulses.shape(u)
            base = base + pulse
        values = level + amp * base + hrng.normal(0, noise, n)
        for kind, i0, i1, extra in per_key[key]:
            if kind == "missing_pulse":
                spans = [(a, b) for a, b in pulses.spans(u[i0:i1]) if a > 0 and b < i1 - i0]
                spans = spans[: int(extra)]
                if not spans:
                    continue
                i0, i1 = i0 + spans[0][0], i0 + spans[-1][1]
                values[i0:i1] -= amp * pulse[i0:i1]
            elif kind == "zeroed":
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
            elif kind == "stuck":
                values[i0:i1] = values[i0 - 1]
            elif kind == "noise_burst":
                values[i0:i1] += hrng.normal(0, 10 * noise, i1 - i0)
            truth.append(InjectedAnomaly(key, kind, index[i0], index[i1 - 1] + step_td))
        series[key] = pd.Series(values, index=index, name=str(key))
    truth.sort(key=lambda a: (a.start, str(a.key)))
    return Fleet(series=series, truth=truth, start=index[0], end=t_end, step=step_td,
                 families=fams)


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
