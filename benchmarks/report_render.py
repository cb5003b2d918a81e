"""Seconds per series drawn by the HTML report (three figures per anomalous series).

Builds ``--series`` anomalous series of ``--points`` 10 s steps (value, reconstruction,
error, score and four per-view surprise columns, one event each, a shape pair), renders
the report ``--repeat`` times and prints JSON: the best and median seconds per series
drawn (wall) and the best CPU seconds per series. ``--profile FILE`` writes a cProfile of one render.

    .venv/bin/python benchmarks/report_render.py --series 20 --points 360
"""

from __future__ import annotations

import argparse
import cProfile
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.report_data import START, series_result  # noqa: E402

from cricket import plots  # noqa: E402
from cricket.report import Report, render_html  # noqa: E402

VIEWS = ("shape", "structure", "range", "noise")


def build(n_series: int, points: int) -> Report:
    results = []
    for i in range(n_series):
        r = series_result(f"waveform.value{{host=cricket{i:03d}}}", True, seed=i,
                          n=points, peak=70.0 + i % 30)
        rng = np.random.default_rng(100 + i)
        for j, view in enumerate(VIEWS):
            r.frame[f"surprise:{view}"] = np.abs(rng.standard_normal(points)) * (1 + j)
        r.events = r.events.assign(severity=[5.0 + i], scale=["shape 32"])
        results.append(r)
    return Report("Hourly score", "score", START, START + (results[0].frame.index[-1] - START),
                  "cricket-waveform", "3", results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--points", type=int, default=360)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=Path)
    args = ap.parse_args()
    report = build(args.series, args.points)
    render_html(report, max_plotted=1)  # warm matplotlib (fonts, caches)
    times, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        doc = render_html(report, max_plotted=args.series)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if args.profile:
        cProfile.runctx("render_html(report, max_plotted=args.series)", globals(),
                        {"report": report, "args": args, "render_html": render_html},
                        str(args.profile))
    print(json.dumps({
        "series": args.series, "points": args.points, "repeat": args.repeat,
        "images": doc.count("<img"), "html_bytes": len(doc),
        "s_per_series_best": round(min(times) / args.series, 4),
        "s_per_series_median": round(statistics.median(times) / args.series, 4),
        # CPU seconds of this process: steadier than wall time on a shared machine
        "cpu_s_per_series_best": round(min(cpu) / args.series, 4),
        "plots": plots.__file__,
    }))


if __name__ == "__main__":
    main()
