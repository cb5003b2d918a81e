"""A synthetic multi-field fleet: correlated fields, anomalies that break the correlation.

Each device (``host=psu001...``) of measurement ``psu`` reports three fields every step:

* ``load``  the driver: a daily cycle between ~20% and ~90% plus noise
* ``power`` ``a + b * load`` plus small noise (a power supply's input power)
* ``temp``  ``c + d * load`` plus small noise, lagging nothing (kept simple)

An anomaly (``decorrelated``) replaces ``power`` (or ``temp``) over a stretch by the
value it would have at the *mirrored* load (``lo + hi - load``), placed where the load is
near its daily peak or trough: every field stays inside its own normal range (the tests check it),
but the combination never occurs in normal operation. ``InjectedAnomaly.key`` is the
device key (``psu.load+power+temp{host=...}``) and ``kind`` names the field broken.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from cricket.config import parse_duration
from cricket.errors import CricketValueError
from cricket.multifield import PointSelector
from cricket.series import SeriesKey
from cricket.synth import InjectedAnomaly

MEASUREMENT = "psu"
FIELDS = ("load", "power", "temp")


@dataclass
class PointFleet:
    series: dict[SeriesKey, pd.Series]  # one per (device, field)
    truth: list[InjectedAnomaly]  # keys are device keys
    devices: list[SeriesKey]
    start: pd.Timestamp
    end: pd.Timestamp
    step: pd.Timedelta

    def clean_devices(self) -> list[SeriesKey]:
        dirty = {a.key for a in self.truth}
        return [d for d in self.devices if d not in dirty]

    def selector(self) -> PointSelector:
        return PointSelector(measurement=MEASUREMENT, fields=list(FIELDS), group_by=["host"],
                             every=self.step.to_pytimedelta())

    def summary(self) -> dict[str, object]:
        return {"devices": len(self.devices), "fields": list(FIELDS),
                "points": sum(len(s) for s in self.series.values()),
                "start": self.start.isoformat(), "end": self.end.isoformat(),
                "step": str(self.step), "anomalies": len(self.truth),
                "clean_devices": [d.tag_dict["host"] for d in self.clean_devices()]}


def make_point_fleet(
    n_devices: int = 6,
    days: float = 3.0,
    step: str = "5m",
    end: datetime | str | None = None,
    seed: int = 0,
    anomalies_per_device: int = 2,
    anomaly_hours: float = 12.0,
    anomaly_steps: int = 6,
) -> PointFleet:
    """About a third of the devices stay clean; the others get ``anomalies_per_device``
    decorrelated stretches of ``anomaly_steps`` steps in the last ``anomaly_hours``."""
    if n_devices < 1 or days <= 0 or anomaly_steps < 1:
        raise CricketValueError("n_devices, days and anomaly_steps must be positive")
    step_td = pd.Timedelta(parse_duration(step))
    t_end = pd.Timestamp(end if end is not None else "2026-01-08T00:00:00Z")
    t_end = t_end.tz_localize("UTC") if t_end.tzinfo is None else t_end.tz_convert("UTC")
    n = int(pd.Timedelta(days=days) / step_td)
    index = pd.date_range(end=t_end - step_td, periods=n, freq=step_td)
    hours = (index - index[0]) / pd.Timedelta(hours=1)
    rng = np.random.default_rng(seed)
    series: dict[SeriesKey, pd.Series] = {}
    truth: list[InjectedAnomaly] = []
    devices = []
    tail = int(pd.Timedelta(hours=anomaly_hours) / step_td)
    for d in range(n_devices):
        host = f"psu{d + 1:03d}"
        lo, hi = rng.uniform(0.15, 0.3), rng.uniform(0.75, 0.9)
        phase = rng.uniform(0, 24)
        cyc = 0.5 + 0.5 * np.sin(2 * np.pi * (np.asarray(hours) + phase) / 24.0)
        load = lo + (hi - lo) * cyc + rng.normal(0, 0.01, n)
        a, b = rng.uniform(40, 80), rng.uniform(150, 300)
        c, e = rng.uniform(30, 40), rng.uniform(20, 35)
        power = a + b * load + rng.normal(0, 1.0, n)
        temp = c + e * load + rng.normal(0, 0.3, n)
        dev = SeriesKey.make(MEASUREMENT, "+".join(FIELDS), {"host": host})
        devices.append(dev)
        if d % 3 != 2 and tail > anomaly_steps:
            # starts where the load is near its daily peak or trough (there the mirrored
            # load is far from the real one), in the last `anomaly_hours`
            lo_i = n - tail
            far = np.abs(cyc[lo_i : n - anomaly_steps] - 0.5) > 0.35
            far &= np.abs(cyc[lo_i + anomaly_steps : n] - 0.5) > 0.35  # and still at its end
            peak = np.flatnonzero(far) + lo_i
            chosen: list[int] = []
            for i in rng.permutation(peak):
                if all(abs(i - j) > 4 * anomaly_steps for j in chosen):
                    chosen.append(int(i))
                if len(chosen) == anomalies_per_device:
                    break
            for k, i0 in enumerate(sorted(chosen)):
                i1 = i0 + anomaly_steps
                mirrored = lo + hi - load[i0:i1]
                name = "power" if (d + k) % 2 == 0 else "temp"
                if name == "power":
                    power[i0:i1] = a + b * mirrored + rng.normal(0, 1.0, i1 - i0)
                else:
                    temp[i0:i1] = c + e * mirrored + rng.normal(0, 0.3, i1 - i0)
                truth.append(InjectedAnomaly(dev, name, index[i0], index[i1 - 1] + step_td))
        for name, values in zip(FIELDS, (load, power, temp), strict=True):
            key = SeriesKey.make(MEASUREMENT, name, {"host": host})
            series[key] = pd.Series(values, index=index, name=str(key))
    truth.sort(key=lambda t: (t.start, str(t.key)))
    return PointFleet(series, truth, devices, index[0], t_end, step_td)


def write_point_fleet(fleet: PointFleet, settings) -> int:  # noqa: ANN001
    """Write every field of every device (the same sinks as ``write_fleet``)."""
    from cricket.synth import Fleet, write_fleet

    return write_fleet(Fleet(series=fleet.series, truth=[], start=fleet.start, end=fleet.end,
                             step=fleet.step), settings)
