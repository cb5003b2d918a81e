"""InfluxDB read/write throughput of the InfluxQL source and sink, against the ceiling.

Starts its own influxd (the project's launcher, a temporary folder, a free port), loads
``--series`` series x ``--days`` days at 10 s, then measures:

* read:  ``InfluxQLSource.read`` of every series (one GROUP BY time query per chunk)
* bare read: the same queries as bare ``httpx`` GETs plus decode, three ways: JSON with
  ``json``, JSON with ``orjson``, and MessagePack (what Cricket asks for); the fraction
  is taken against the fastest of the three
* write: ``InfluxQLSink.write_scores`` of the same number of score points
* bare write: POSTs of the same line protocol bytes in the same batches (formatted
  before the clock starts; the same tags as Cricket's, with a new model version each
  round as Cricket's rounds have, so both sides add the same number of new series)

Cricket and bare runs alternate (A/B/B/A..., order rotated each round) and each keeps
its best of ``--repeat``, so
both see the same server state and the same load from other processes on the machine.

Usage: .venv/bin/python benchmarks/influx_io.py [--series 100] [--days 1] [--repeat 3]
The last line printed is a JSON object with read_points_per_s, write_points_per_s,
read_fraction_of_bare, write_fraction_of_bare (targets: >= 250,000 and >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cricket.config import SeriesSelector, Settings  # noqa: E402
from cricket.influx import lineprotocol as lp  # noqa: E402
from cricket.influx.influxql import (  # noqa: E402
    InfluxQLClient,
    InfluxQLSink,
    InfluxQLSource,
    _loads,
    _unpack,
)
from cricket.influx.server import InfluxServer, find_free_port  # noqa: E402
from cricket.series import SeriesKey  # noqa: E402

T0 = pd.Timestamp("2024-01-01T00:00:00Z")


def best(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=5000, help="points per write request")
    args = ap.parse_args()

    n = int(args.days * 8640)
    total = args.series * n
    with tempfile.TemporaryDirectory() as tmp:
        server = InfluxServer(port=find_free_port(), data_dir=Path(tmp) / "influxdb").start()
        try:
            settings = Settings(
                state_dir=Path(tmp), influx_url=server.url, influx_database="bench",
                influx_write_batch=args.batch, influx_token=None, influx_username=None,
                influx_score_database=None,
            )
            InfluxQLClient(settings).ensure_database("bench")
            idx = pd.date_range(T0, periods=n, freq="10s")
            rng = np.random.default_rng(0)
            keys = [SeriesKey.make("waveform", "value", {"host": f"cricket{i:03d}"})
                    for i in range(args.series)]
            t = time.perf_counter()
            with InfluxQLSink(settings) as sink:
                for k in keys:
                    sink.write_series(k, pd.Series(np.sin(np.arange(n) / 7) + rng.normal(0, .1, n), index=idx))
            print(f"loaded {total:,} raw points in {time.perf_counter() - t:.2f}s", file=sys.stderr)

            # ---------------------------------------------------------------- reads
            sel = SeriesSelector(measurement="waveform", field="value", group_by=["host"], every="10s")
            stop = T0 + pd.Timedelta(days=args.days)
            src = InfluxQLSource(settings)
            got: dict = {}

            def read() -> None:
                got.clear()
                got.update(src.read(sel, T0, stop))

            # the same queries, bare
            # (regular data at the step: Cricket reads raw points, LIMIT buckets + 1)
            queries, groupby_queries = [], []
            lo, e = T0.value, stop.value
            chunk = int(pd.Timedelta(settings.influx_read_chunk).value)
            every = int(pd.Timedelta(sel.every).value)
            while lo < e:
                hi = min(e, lo + chunk)
                limit = -(-(hi - T0.value) // every) - (lo - T0.value) // every + 1
                queries.append(src.build_query(sel, lo, hi, raw_limit=limit))
                groupby_queries.append(src.build_query(sel, lo, hi))
                lo = hi
            bare = httpx.Client(base_url=server.url, timeout=120)

            def bare_reader(
                accept: str, decode: Callable[[bytes], object], qs: list = queries
            ) -> Callable[[], None]:
                def run() -> None:
                    for q, params in qs:
                        r = bare.get("/query", params={"db": "bench", "q": q, "epoch": "ns",
                                                       "params": json.dumps(params)},
                                     headers={"Accept": accept})
                        decode(r.content)
                return run

            bare_reads = {
                "json": bare_reader("application/json", json.loads),
                "orjson": bare_reader("application/json", _loads),
                "msgpack": bare_reader("application/x-msgpack", _unpack),
            }
            # context only (not in the fraction): what GROUP BY time costs the server
            groupby = bare_reader("application/x-msgpack", _unpack, groupby_queries)
            t_groupby = float("inf")
            bare_reads["msgpack"]()  # warm the server's caches for all
            t_read = float("inf")
            t_bare = dict.fromkeys(bare_reads, float("inf"))
            runs = [("cricket", read), *bare_reads.items(), ("groupby", groupby)]
            for rep in range(args.repeat):  # A/B/A/B, order rotated each round
                for name, fn in runs[rep % len(runs):] + runs[: rep % len(runs)]:
                    dt = best(fn, 1)
                    if name == "cricket":
                        t_read = min(t_read, dt)
                    elif name == "groupby":
                        t_groupby = min(t_groupby, dt)
                    else:
                        t_bare[name] = min(t_bare[name], dt)
            t_bare_read = min(t_bare.values())
            assert len(got) == args.series and sum(int(s.notna().sum()) for s in got.values()) == total
            src.close()

            # ---------------------------------------------------------------- writes
            frame = pd.DataFrame(
                {"value": rng.normal(size=n), "reconstruction": rng.normal(size=n),
                 "error": rng.random(n), "score": rng.random(n) * 100,
                 "anomalous": rng.random(n) > 0.99},
                index=idx,
            )
            sink = InfluxQLSink(settings)
            version = iter(range(10**6))

            def write() -> None:
                v = str(next(version))
                for k in keys:
                    sink.write_scores(k, frame, model_version=v)

            def bare_bodies(rep: int) -> list[bytes]:
                # the same points as Cricket's write: its tags (model name included) and a
                # new model version each round, so both sides add new series every round
                # (re-writing one fixed set of series is cheaper for the server)
                out = []
                for k in keys:
                    lines = lp.score_lines(k, frame, f"bare{rep}", settings.model_name)
                    for a, b in lp.batches(lines, args.batch):
                        out.append("\n".join(lines[a:b]).encode())
                return out

            bodies: list[bytes] = []

            def bare_write() -> None:
                for body in bodies:
                    r = bare.post("/write", params={"db": "bench", "precision": "ns"}, content=body)
                    assert r.status_code == 204, r.text

            # alternate so both see the same server state (growing shards, compactions)
            t_write, t_bare_write = float("inf"), float("inf")
            cpu_write, cpu_bare_write = float("inf"), float("inf")
            for rep in range(args.repeat):  # A/B/A/B, order swapped each round
                for name in ("cricket", "bare")[:: 1 if rep % 2 == 0 else -1]:
                    c = time.process_time()
                    if name == "cricket":
                        t_write = min(t_write, best(write, 1))
                        cpu_write = min(cpu_write, time.process_time() - c)
                    else:
                        bodies[:] = bare_bodies(rep)  # formatted before the clock starts
                        c = time.process_time()
                        t_bare_write = min(t_bare_write, best(bare_write, 1))
                        cpu_bare_write = min(cpu_bare_write, time.process_time() - c)
            sink.close()
            bare.close()
        finally:
            server.stop()

    result = {
        "points": total,
        "read_s": round(t_read, 3),
        "bare_read_s": round(t_bare_read, 3),
        **{f"bare_read_{k}_s": round(v, 3) for k, v in t_bare.items()},
        "bare_read_groupby_msgpack_s": round(t_groupby, 3),
        "write_s": round(t_write, 3),
        "bare_write_s": round(t_bare_write, 3),
        "write_client_cpu_s": round(cpu_write, 3),
        "bare_write_client_cpu_s": round(cpu_bare_write, 3),
        "read_points_per_s": round(total / t_read),
        "write_points_per_s": round(total / t_write),
        "read_fraction_of_bare": round(t_bare_read / t_read, 3),
        "write_fraction_of_bare": round(t_bare_write / t_write, 3),
        "bare_read_points_per_s": round(total / t_bare_read),
        "bare_write_points_per_s": round(total / t_bare_write),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "run": uuid.uuid4().hex[:8],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
