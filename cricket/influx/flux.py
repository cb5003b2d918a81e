"""Flux through ``influxdb-client`` (InfluxDB 2.x native API).

Safety: every user value (bucket, measurement, field, tag values, times, interval) is
passed as a bound parameter (``params=`` -> ``option p_x = ...`` in the request's
``extern``; the Flux text refers to ``p_x`` only)
and never formatted into the Flux text. The only names that appear in the text are tag
keys inside ``r["key"]`` (Flux has no dynamic record access); they must be plain names
(letters, digits, ``_ - .``) or the query is refused. The aggregate comes from a fixed list.

No InfluxDB 2.x server can be installed in this project's environment, so this path is
tested against Flux annotated-CSV responses (tests/data/flux/) served by a local HTTP
server; the InfluxQL path is the one tested against a real server.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from cricket.config import SeriesSelector, Settings
from cricket.errors import redact
from cricket.influx import lineprotocol as lp
from cricket.influx.base import InfluxError, InfluxWriteError
from cricket.series import SeriesKey

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_AGG = {"mean", "median", "max", "min", "first", "last", "sum"}
_EPOCH = datetime(1970, 1, 1).astimezone()  # timezone-aware epoch start


def _tag_name(name: str) -> str:
    if not _NAME.match(name or "") or name.startswith("_"):
        raise InfluxError(
            f"tag key {name!r} cannot be used with the Flux source: tag keys must be plain "
            "names (letters, digits, _ - .; not starting with _); use the InfluxQL source "
            "(CRICKET_INFLUX_SOURCE=influxql) for other names"
        )
    return name


def _utc(t: datetime | pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


class _FluxClient:
    def __init__(self, settings: Settings) -> None:
        from influxdb_client import InfluxDBClient

        self.settings = settings
        self.base_url = settings.influx_url.rstrip("/")
        self.url = redact(self.base_url)  # for messages: credentials in the URL masked
        token = settings.influx_token.get_secret_value() if settings.influx_token else None
        if token is None and settings.influx_username:
            pw = settings.influx_password.get_secret_value() if settings.influx_password else ""
            token = f"{settings.influx_username}:{pw}"
        if not token:
            raise InfluxError(
                f"the Flux source (InfluxDB 2.x at {self.url}) needs credentials and none are "
                "set: set CRICKET_INFLUX_TOKEN (an API token with read/write access to the "
                "bucket) and CRICKET_INFLUX_ORG, or CRICKET_INFLUX_USERNAME/PASSWORD; or use "
                "CRICKET_INFLUX_SOURCE=influxql for InfluxDB 1.x"
            )
        self.org = settings.influx_org or "-"
        self.client = InfluxDBClient(
            url=self.base_url,
            token=token or "",
            org=self.org,
            timeout=int(settings.influx_timeout_s * 1000),
            enable_gzip=False,
        )

    def close(self) -> None:
        self.client.close()

    def retry(self, what: str, fn, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN001
        """Call ``fn`` with retries on connection errors and 5xx."""
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        retries = self.settings.influx_retries
        last = ""
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                status = exc.status or 0
                msg = (exc.body or exc.reason or "")
                if isinstance(msg, bytes):
                    msg = msg.decode(errors="replace")
                if status >= 500:
                    last = f"HTTP {status}: {str(msg)[:300]}"
                    continue
                if status in (401, 403):
                    raise InfluxError(
                        f"InfluxDB at {self.url} refused the token (HTTP {status}): check "
                        "CRICKET_INFLUX_TOKEN and CRICKET_INFLUX_ORG"
                    ) from None
                if status == 404:
                    raise InfluxError(
                        f"InfluxDB at {self.url}: bucket {self.settings.bucket!r} or org "
                        f"{self.org!r} not found ({str(msg)[:200]}): create the bucket "
                        "(`influx bucket create -n NAME`) or set CRICKET_INFLUX_BUCKET / "
                        "CRICKET_INFLUX_ORG"
                    ) from None
                raise InfluxError(
                    f"InfluxDB at {self.url} rejected the {what} (HTTP {status}): {str(msg)[:300]}"
                ) from None
            except (Urllib3Error, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
        raise InfluxError(
            f"InfluxDB at {self.url} failed the {what} after {retries + 1} attempts ({last}). "
            "Is the server running and CRICKET_INFLUX_URL right?",
            retryable=True,
        )

    def frames(self, query: str, params: dict[str, Any]) -> list[pd.DataFrame]:
        """Run ``query``; ``params.x`` in its text names ``params["x"]``. influxdb-client
        sends each param as an ``option p_x = <literal>`` in the request's ``extern``."""
        import warnings

        from influxdb_client.client.warnings import MissingPivotFunction

        text = re.sub(r"\bparams\.(\w+)", r"p_\1", query)
        bound = {f"p_{k}": v for k, v in params.items()}
        api = self.client.query_api()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingPivotFunction)
            out = self.retry("query", api.query_data_frame, text, org=self.org, params=bound)
        if isinstance(out, pd.DataFrame):
            return [out] if not out.empty else []
        return [f for f in out if not f.empty]


class FluxSource:
    """Reads regular series with Flux (InfluxDB 2.x). Same contract as InfluxQLSource."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._c = _FluxClient(self.settings)

    def close(self) -> None:
        self._c.close()

    def __enter__(self) -> FluxSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _filters(self, selector: SeriesSelector, params: dict[str, Any]) -> str:
        params["measurement"] = selector.measurement
        params["field"] = selector.field
        text = "  |> filter(fn: (r) => r._measurement == params.measurement and r._field == params.field)\n"
        for i, (k, v) in enumerate(sorted(selector.tags.items())):
            params[f"tag{i}"] = v
            text += f'  |> filter(fn: (r) => r["{_tag_name(k)}"] == params.tag{i})\n'
        return text

    def build_query(
        self, selector: SeriesSelector, start: pd.Timestamp, stop: pd.Timestamp
    ) -> tuple[str, dict[str, Any]]:
        if selector.aggregate not in _AGG:
            raise InfluxError(f"unknown aggregate {selector.aggregate!r}")
        group = [_tag_name(g) for g in selector.group_by]
        params: dict[str, Any] = {
            "bucket": self.settings.bucket,
            "start": start.to_pydatetime(),
            "stop": stop.to_pydatetime(),
            "every": pd.Timedelta(selector.every).to_pytimedelta(),
            "group": group,
            "keep": ["_time", "_value", *group],
        }
        q = (
            "from(bucket: params.bucket)\n"
            "  |> range(start: params.start, stop: params.stop)\n"
            + self._filters(selector, params)
            + "  |> group(columns: params.group)\n"
            f"  |> aggregateWindow(every: params.every, fn: {selector.aggregate}, "
            'createEmpty: false, timeSrc: "_start")\n'
            "  |> keep(columns: params.keep)\n"
        )
        return q, params

    def discover(self, selector: SeriesSelector) -> list[SeriesKey]:
        group = [_tag_name(g) for g in selector.group_by]
        params: dict[str, Any] = {
            "bucket": self.settings.bucket,
            "start": (_utc(selector.start) if selector.start else pd.Timestamp(0, tz="UTC")).to_pydatetime(),
            "stop": (_utc(selector.stop) if selector.stop else pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)).to_pydatetime(),
            "group": group,
            "keep": group,
        }
        q = (
            "from(bucket: params.bucket)\n"
            "  |> range(start: params.start, stop: params.stop)\n"
            + self._filters(selector, params)
            + "  |> group(columns: params.group)\n"
            "  |> first()\n"
            "  |> keep(columns: params.keep)\n"
        )
        keys: set[SeriesKey] = set()
        for df in self._c.frames(q, params):
            for row in df.to_dict("records"):
                keys.add(SeriesKey.make(selector.measurement, selector.field,
                                        {g: _str(row.get(g)) for g in group}))
        return sorted(keys)

    def read(
        self,
        selector: SeriesSelector,
        start: datetime | None = None,
        stop: datetime | None = None,
        keys: Sequence[SeriesKey] | None = None,
    ) -> dict[SeriesKey, pd.Series]:
        """One regular float series per key over [start, stop) (see ``Source.read``).
        ``keys`` keeps only those series: the Flux query reads every series the
        selector matches, and the others are dropped here."""
        start = start if start is not None else selector.start
        stop = stop if stop is not None else selector.stop
        if start is None or stop is None:
            raise InfluxError("read needs a time range: give start and stop (or set them on the selector)")
        s, e = _utc(start), _utc(stop)
        if s >= e:
            raise InfluxError(f"start {s} is not before stop {e}")
        every = int(pd.Timedelta(selector.every).value)
        g0 = (s.value // every) * every
        n = -(-(e.value - g0) // every)
        chunk = max(every, (int(pd.Timedelta(self.settings.influx_read_chunk).value) // every) * every)
        group = list(selector.group_by)
        out: dict[SeriesKey, np.ndarray] = {}
        lo = s.value
        while lo < e.value:
            hi = min(e.value, ((lo - g0) // chunk + 1) * chunk + g0)
            q, params = self.build_query(
                selector, pd.Timestamp(lo, unit="ns", tz="UTC"), pd.Timestamp(hi, unit="ns", tz="UTC")
            )
            for df in self._c.frames(q, params):
                self._fill(selector, group, df, g0, every, n, out)
            lo = hi
        index = pd.date_range(pd.Timestamp(g0, unit="ns", tz="UTC"), periods=n,
                              freq=pd.Timedelta(every, unit="ns"))
        wanted = None if keys is None else set(keys)
        return {
            k: pd.Series(v, index=index, name=str(k))
            for k, v in sorted(out.items())
            if wanted is None or k in wanted
        }

    def read_events(
        self,
        key_or_selector: SeriesKey | SeriesSelector | str,
        start: datetime,
        stop: datetime,
        model_version: str | None = None,
        model_name: str | None = None,
    ) -> None:
        """None: the Flux source does not read results back (an event that continues
        across windows is then written as a new event)."""
        return None

    @staticmethod
    def _fill(selector, group, df, g0, every, n, out) -> None:  # noqa: ANN001
        if "_value" not in df.columns or "_time" not in df.columns:
            return
        try:
            values = pd.to_numeric(df["_value"], errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise InfluxError(
                f"field {selector.field!r} of {selector.measurement!r} holds non-numeric "
                "values: select a numeric field"
            ) from exc
        times = pd.DatetimeIndex(pd.to_datetime(df["_time"], utc=True)).as_unit("ns").asi8
        pos = (times - g0) // every
        tagcols = [df[g].map(_str) if g in df.columns else pd.Series([""] * len(df)) for g in group]
        labels = list(zip(*tagcols, strict=True)) if group else [()] * len(df)
        codes = pd.factorize(pd.Series(labels, dtype=object))[0] if len(df) else np.array([], int)
        for code in np.unique(codes):
            rows = codes == code
            tags = dict(zip(group, labels[int(np.argmax(rows))], strict=True))
            key = SeriesKey.make(selector.measurement, selector.field, tags)
            arr = out.get(key)
            if arr is None:
                arr = out[key] = np.full(n, np.nan)
            p = pos[rows]
            ok = (p >= 0) & (p < n)
            arr[p[ok]] = values[rows][ok]
            arr[~np.isfinite(arr)] = np.nan


def _str(v: object) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v)


class FluxSink:
    """Writes scores and events with influxdb-client's write API (2.x ``/api/v2/write``).
    The points are the same as InfluxQLSink's (see ``cricket.influx.lineprotocol``)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._c = _FluxClient(self.settings)
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._write = self._c.client.write_api(write_options=SYNCHRONOUS)

    def close(self) -> None:
        self._write.close()
        self._c.close()

    def __enter__(self) -> FluxSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_lines(self, lines: Sequence[str], bucket: str | None = None) -> int:
        from influxdb_client import WritePrecision

        bucket = bucket or self.settings.influx_score_database or self.settings.bucket
        written = 0
        for lo, hi in lp.batches(lines, self.settings.influx_write_batch):
            body = "\n".join(lines[lo:hi])
            try:
                self._c.retry(
                    "write", self._write.write, bucket=bucket, org=self._c.org, record=body,
                    write_precision=WritePrecision.NS,
                )
            except InfluxError as exc:
                times = [lp.line_time(x) for x in lines[lo:]]
                first, last = min(times), max(times)
                raise InfluxWriteError(
                    f"{exc} -- wrote {written} of {len(lines)} points; the {len(lines) - lo} "
                    f"points from {first.isoformat()} to {last.isoformat()} were not written",
                    written=written, first_unwritten=first, last_unwritten=last,
                ) from exc
            written += hi - lo
        return written

    def write_scores(self, key: SeriesKey, frame: pd.DataFrame, model_version: str) -> int:
        return self.write_lines(lp.score_lines(key, frame, model_version, self.settings.model_name))

    def write_results(
        self,
        results: Iterable[tuple[SeriesKey, pd.DataFrame | None, pd.DataFrame | None]],
        model_version: str,
    ) -> dict[str, int]:
        """Scores and events of many series in full-size requests that span series (see
        ``lineprotocol.result_batches``). Returns ``{"scores", "events"}``."""
        counts = {"scores": 0, "events": 0}
        for lines in lp.result_batches(results, model_version, self.settings.model_name,
                                       self.settings.influx_write_batch, counts):
            self.write_lines(lines)
        return counts

    def write_events(self, key: SeriesKey, events: pd.DataFrame, model_version: str) -> int:
        return self.write_lines(lp.event_lines(key, events, model_version, self.settings.model_name))

    def write_series(self, key: SeriesKey, series: pd.Series) -> int:
        return self.write_lines(lp.series_lines(key, series), bucket=self.settings.bucket)
