"""Sources and sinks for InfluxDB: InfluxQL over HTTP (1.x, 2.x v1 compat, 3.x) and
Flux through influxdb-client (2.x native). Pick one with ``settings.influx_source``."""

from __future__ import annotations

from cricket.config import Settings
from cricket.influx.base import InfluxError, InfluxWriteError, Sink, Source
from cricket.series import SeriesKey


def make_source(settings: Settings | None = None) -> Source:
    """The source ``settings.influx_source`` names (``influxql`` or ``flux``)."""
    settings = settings or Settings()
    if settings.influx_source == "flux":
        from cricket.influx.flux import FluxSource

        return FluxSource(settings)
    from cricket.influx.influxql import InfluxQLSource

    return InfluxQLSource(settings)


def make_sink(settings: Settings | None = None) -> Sink:
    """The sink ``settings.influx_source`` names (``influxql`` or ``flux``)."""
    settings = settings or Settings()
    if settings.influx_source == "flux":
        from cricket.influx.flux import FluxSink

        return FluxSink(settings)
    from cricket.influx.influxql import InfluxQLSink

    return InfluxQLSink(settings)


__all__ = [
    "InfluxError",
    "InfluxWriteError",
    "SeriesKey",
    "Sink",
    "Source",
    "make_sink",
    "make_source",
]
