"""A large scoring fleet as copies of a small one (``fleet.py --copies K``): the series of
a written fleet are written again K times under new host names (``cricket0001-0`` ...
``cricket0001-<K-1>``), and its scoring champion is registered again with each series'
detector under every copy's key.

Why: training 10,000 detectors takes tens of minutes on 2 shared cores (and the run
would measure the retrain, not the score). With copies, every series of the large
fleet is scored with the same data and the same detector as its original, so the work
per series is the same at both sizes and their per-series costs compare directly: what
differs is what scale-out adds (shipping, orchestration, memory)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any


def copy_key(key: Any, k: int, tag: str = "host") -> Any:
    """``key`` with ``-k`` appended to its ``tag`` value."""
    tags = key.tag_dict
    tags[tag] = f"{tags[tag]}-{k}"
    return type(key).make(key.measurement, key.field, tags)


def copy_fleet(src: Any, dst: Any, selector: Any, copies: int, start: datetime,
               stop: datetime, chunk: int = 100) -> int:
    """Write ``copies`` copies of every series ``selector`` finds in ``src``'s database
    between ``start`` and ``stop`` into ``dst``'s database; returns the points written
    (``chunk`` series read at a time, their copies written in full-size requests)."""
    from cricket.influx import lineprotocol as lp
    from cricket.influx.influxql import InfluxQLClient, InfluxQLSource, ensure_database

    ensure_database(dst)
    source = InfluxQLSource(src)
    written = 0
    try:
        with InfluxQLClient(dst) as client:
            keys = sorted(source.discover(selector), key=str)
            for i in range(0, len(keys), chunk):
                data = source.read(selector, start, stop, keys=keys[i:i + chunk])
                for k in range(copies):
                    lines: list[str] = []
                    for key, series in data.items():
                        lines += lp.series_lines(copy_key(key, k), series)
                    written += client.write_lines(lines, dst.influx_database)
    finally:
        source.close()
    return written


def copy_champion(src: Any, dst: Any, version: str, copies: int) -> str:
    """Register, as a new version of ``dst.model_name``, ``src``'s model ``version`` with
    each series' detector under every copy's key (the fleet library as it was)."""
    from cricket.registry import Registry
    from cricket.series import SeriesKey

    bundle, _ = Registry(src).load_bundle(version=version)
    detectors = {str(copy_key(SeriesKey.parse(name), k)): det
                 for name, det in bundle.detectors.items() for k in range(copies)}
    big = replace(bundle, detectors=detectors)
    del bundle
    registry = Registry(dst)
    run_id = registry.log_training_run(
        big, params={"copied_from": f"{src.model_name} v{version} x{copies}"},
        run_name=f"copies of {src.model_name} v{version} x{copies}")
    return registry.register(run_id)
