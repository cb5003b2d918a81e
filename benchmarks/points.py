"""Point anomalies (several fields judged together): found, and false events on clean devices.

    python benchmarks/points.py [--devices 12] [--days 3] [--seed 0]

Builds the synthetic multi-field fleet (``cricket.synth_points``: anomalies that break the
correlation between fields while each field stays in its normal range), trains one point
model per device on everything before the last 12 hours, scores those 12 hours and prints
one JSON line: anomalies injected / found (an event overlapping the stretch), false events
on clean devices, false events on devices with anomalies (outside every stretch), and how
often the event names the field that was broken.
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd

from cricket.multifield import PointBundle, PointSpec, point_events
from cricket.point_promotion import evaluate_points
from cricket.synth_points import make_point_fleet


def run(devices: int, days: float, seed: int) -> dict[str, object]:
    fleet = make_point_fleet(n_devices=devices, days=days, seed=seed)
    selector = fleet.selector()
    spec = PointSpec()
    split = fleet.end - pd.Timedelta(hours=12)
    frames = {}
    for dev in fleet.devices:
        cols = {f: fleet.series[dev.__class__.make(dev.measurement, f, dev.tag_dict)]
                for f in selector.fields}
        frames[dev] = pd.DataFrame(cols)
    t0 = time.perf_counter()
    bundle, _ = PointBundle.train(selector, spec, {k: f[f.index < split] for k, f in frames.items()})
    fit_s = time.perf_counter() - t0
    events = {}
    for dev, model in bundle.models.items():
        scored = model.score(frames[dev][frames[dev].index >= split])
        events[dev] = point_events(scored, spec, fleet.step)
    found = named = 0
    for a in fleet.truth:
        ev = events[a.key]
        hit = ev[(ev["start"] < a.end) & (ev["end"] > a.start)]
        if len(hit):
            found += 1
            named += int(a.kind in set(hit["contributor"]))
    clean = set(fleet.clean_devices())
    false_clean = sum(len(events[d]) for d in clean)
    false_dirty = 0
    for dev in set(fleet.devices) - clean:
        for s, e in events[dev][["start", "end"]].itertuples(index=False):
            if not any(a.key == dev and s < a.end and e > a.start for a in fleet.truth):
                false_dirty += 1
    # the promotion's figures (cricket.point_promotion) on the clean devices' scored tail:
    # false alarms, and recall on planted correlation-breaking probes
    promo = evaluate_points(bundle, {d: frames[d][frames[d].index >= split] for d in clean})
    return {"benchmark": "points", "devices": devices, "clean_devices": len(clean),
            "days": days, "seed": seed, "injected": len(fleet.truth), "found": found,
            "contributor_named": named, "false_events_clean": false_clean,
            "false_events_dirty": false_dirty, "fit_s": round(fit_s, 3),
            "promotion_false_alarms": round(promo.false_alarms, 4),
            "probe_recall": None if promo.recall is None else round(promo.recall, 3),
            "probes": promo.probes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=12)
    p.add_argument("--days", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(json.dumps(run(a.devices, a.days, a.seed)))


if __name__ == "__main__":
    main()
