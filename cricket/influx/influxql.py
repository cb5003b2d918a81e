"""InfluxQL over HTTP (``/query``, ``/write``): InfluxDB 1.x, 2.x (v1 compatibility
endpoints, token auth) and 3.x.

Safety: tag values and times are bound parameters (the ``params`` query argument, JSON),
never pasted into the query text; identifiers (measurement, field, tag keys) are
double-quoted with ``\\`` and ``"`` escaped, and control characters are refused.
Results are requested with ``epoch=ns``. Long ranges are read in chunks of
``settings.influx_read_chunk`` so memory stays bounded by one chunk's JSON.
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, Self

import httpx
import numpy as np
import pandas as pd

from cricket.config import SeriesSelector, Settings
from cricket.errors import CricketValueError, redact
from cricket.influx import lineprotocol as lp
from cricket.influx.base import InfluxError, InfluxWriteError
from cricket.series import SeriesKey

try:  # orjson decodes InfluxDB's JSON faster than json
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    _loads = json.loads

try:  # InfluxDB 1.x/2.x answer MessagePack when asked: half the server CPU of JSON
    import msgpack

    from cricket.influx.msgpack_points import Points, decode_points

    def _unpack(body: bytes) -> Any:
        return msgpack.unpackb(body, use_list=False)

    QUERY_ACCEPT = "application/x-msgpack"
except ImportError:  # pragma: no cover - msgpack is a dependency; keep working without it
    QUERY_ACCEPT = "application/json"

    class Points:  # type: ignore[no-redef]  # never made: every answer is JSON then
        pass


def decode_stream(r: httpx.Response) -> list[Any]:
    """Every document of a chunked /query answer (one when the server did not chunk):
    concatenated MessagePack objects, or one JSON document per line."""
    if r.headers.get("content-type", "").startswith("application/x-msgpack"):
        unpacker = msgpack.Unpacker(use_list=False, raw=False)
        unpacker.feed(r.content)
        return list(unpacker)
    return [_loads(line) for line in r.content.splitlines() if line.strip()]


def _joined(rows: Any, more: Any) -> Any:
    """A series' rows continued by the next piece's: :class:`Points` when both are, else
    a list of row tuples (as the pieces of a plain answer are joined)."""
    if isinstance(rows, Points) and isinstance(more, Points):
        return Points.join([rows, more])
    out = rows.rows() if isinstance(rows, Points) else rows
    if not isinstance(out, list):
        out = list(out)
    out.extend(more.rows() if isinstance(more, Points) else more)
    return out


def _same_series(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("name") == b.get("name") and (a.get("tags") or {}) == (b.get("tags") or {})


def decode_body(r: httpx.Response) -> Any:
    """A /query answer by its Content-Type: MessagePack (rows as tuples) or JSON (a server
    that ignores our Accept header answers JSON, which is always understood)."""
    if r.headers.get("content-type", "").startswith("application/x-msgpack"):
        return _unpack(r.content)
    return _loads(r.content)


#: a statement and its parameters longer than this go in a POST body, not the URL
MAX_URL_QUERY = 8_000
#: rows per piece of a chunked query answer
CHUNK_ROWS = 50_000
#: series keys per page of ``SHOW SERIES``
DISCOVERY_PAGE = 50_000

#: at most this many series keys in one query's WHERE clause (bounds the URL length)
KEYS_PER_QUERY = 200

_AGG = {
    "mean": "mean",
    "median": "median",
    "max": "max",
    "min": "min",
    "first": "first",
    "last": "last",
    "sum": "sum",
}


def quote_ident(name: str) -> str:
    """An InfluxQL identifier, double-quoted: ``\\`` and ``"`` are escaped; control
    characters (newline...) are refused."""
    if not isinstance(name, str) or not name:
        raise InfluxError(f"identifier {name!r} must be a non-empty string")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InfluxError(
            f"identifier {name!r} contains a control character (newline, tab...): "
            "metric names never do; check the selector"
        )
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _utc(t: datetime | pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _ns(t: datetime | pd.Timestamp | str) -> int:
    return int(_utc(t).value)


class SelectorError(CricketValueError):
    """A selector that names a measurement, field or tag key the database does not hold."""


def _listing(names: Sequence[str], limit: int = 20) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def parse_series_key(text: str) -> tuple[str, dict[str, str]]:
    """Split an escaped series key ``m,k=v,k2=v\\,2`` into measurement and tags
    (InfluxDB 1.x escapes only ``,`` ``=`` and space; other backslashes are literal)."""
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in ", =":
            buf.append(text[i + 1])
            i += 2
            continue
        if c == ",":
            parts.append("".join(buf))
            buf = []
        elif c == "=" and parts:
            buf.append("\x00")  # separator marker: unescaped '='
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    tags: dict[str, str] = {}
    for p in parts[1:]:
        k, _, v = p.partition("\x00")
        tags[k] = v.replace("\x00", "=")
    return parts[0], tags


@functools.cache
def _tls(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's default verifying TLS context (certifi's CAs, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set: the arguments), built once per process and shared by
    its clients: building one reads the whole CA bundle (~0.1 CPU s), and every batch
    task of a flow opens a client."""
    return httpx.create_ssl_context()


class InfluxQLClient:
    """HTTP plumbing shared by the InfluxQL source and sink: auth, retries, errors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.influx_url.rstrip("/")
        self.url = redact(self.base_url)  # for messages: credentials in the URL masked
        headers = {"Accept": "application/json"}
        auth = None
        if settings.influx_token is not None:
            headers["Authorization"] = f"Token {settings.influx_token.get_secret_value()}"
        elif settings.influx_username:
            pw = settings.influx_password.get_secret_value() if settings.influx_password else ""
            auth = httpx.BasicAuth(settings.influx_username, pw)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            auth=auth,
            timeout=settings.influx_timeout_s,
            verify=_tls(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        what: str = "request",
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request with retries (backoff) on connection errors and 5xx."""
        retries = self.settings.influx_retries
        last: str = ""
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
            try:
                r = self._http.request(
                    method, path, params=params, content=content, headers=headers, data=data
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code >= 500:
                last = f"HTTP {r.status_code}: {r.text[:300]}"
                continue
            return r
        raise InfluxError(
            f"InfluxDB at {self.url} failed the {what} after {retries + 1} attempts ({last}). "
            "Is the server running? Start the local one with `cricket influx start`, "
            "or set CRICKET_INFLUX_URL to your server.",
            retryable=True,
        )

    def query(
        self, q: str, params: dict[str, Any] | None = None, database: str | None = None,
        method: str = "GET",
    ) -> list[dict[str, Any]]:
        """Run one InfluxQL statement; returns its ``series`` list (possibly empty)."""
        db = database or self.settings.influx_database
        r = self._ask(q, params, db, method)
        try:
            docs = decode_stream(r)
        except ValueError as exc:
            raise self._not_json(r) from exc
        return self._merge(docs, db)

    def query_points(
        self, q: str, params: dict[str, Any] | None = None, database: str | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`query` for a SELECT of one field's points: the same series, except that
        a series whose rows are all ``(time, float)`` has them as :class:`~cricket.influx.
        msgpack_points.Points` (numpy arrays) instead of a tuple of row tuples, so a
        batch's read never holds an object per point (MessagePack answers; a JSON answer
        gives rows as :meth:`query` does)."""
        db = database or self.settings.influx_database
        r = self._ask(q, params, db, "GET")
        try:
            if r.headers.get("content-type", "").startswith("application/x-msgpack"):
                docs = decode_points(r.content)
            else:  # a server that ignores our Accept header
                docs = decode_stream(r)
        except ValueError as exc:
            raise self._not_json(r) from exc
        return self._merge(docs, db)

    def _ask(self, q: str, params: dict[str, Any] | None, db: str, method: str) -> httpx.Response:
        # Chunked responses: the server streams the result in pieces of CHUNK_ROWS rows
        # and marks every piece but the last of a series ``partial``. Unlike a plain
        # response, a chunked one is not cut at the server's ``max-row-limit``, and its
        # ``partial`` flag means "continued below" (in a plain response InfluxDB 1.x
        # leaves ``partial: true`` on a complete series longer than 10,000 rows).
        args = {"db": db, "q": q, "epoch": "ns", "chunked": "true", "chunk_size": str(CHUNK_ROWS)}
        if params:
            args["params"] = json.dumps(params)
        form = None
        if len(q) + len(args.get("params", "")) > MAX_URL_QUERY:
            # long tag values (or many keys): the statement goes in a form body, which
            # has no URL length limit (influxd reads q and params from either)
            method, form, args = "POST", args, {}
        r = self.request(
            method, "/query", params=args, data=form, what="query",
            headers={"Accept": QUERY_ACCEPT},
        )
        if r.status_code in (401, 403):
            raise InfluxError(
                f"InfluxDB at {self.url} refused the credentials (HTTP {r.status_code}): "
                "check CRICKET_INFLUX_TOKEN or CRICKET_INFLUX_USERNAME/PASSWORD"
            )
        return r

    def _not_json(self, r: httpx.Response) -> InfluxError:
        return InfluxError(
            f"InfluxDB at {self.url} answered HTTP {r.status_code} with non-JSON: "
            f"{r.text[:200]!r}"
        )

    def _merge(self, docs: list[Any], db: str) -> list[dict[str, Any]]:
        """The series of one statement from the pieces of a chunked answer, each series'
        pieces joined. A stream that ends on a ``partial`` piece was cut short."""
        series: list[dict[str, Any]] = []
        open_piece = False  # the last piece said "continued below"
        for body in docs:
            if not isinstance(body, dict):
                raise InfluxError(f"InfluxDB at {self.url} answered {str(body)[:200]!r}")
            if "error" in body:
                raise self._error(body["error"], db)
            for res in body.get("results") or [{}]:
                if "error" in res:
                    raise self._error(res["error"], db)
                for s in res.get("series") or ():
                    last = series[-1] if series else None
                    if open_piece and last is not None and _same_series(last, s):
                        last["values"] = _joined(last["values"], s.get("values") or ())
                    else:
                        series.append(dict(s, values=s.get("values") or ()))
                    open_piece = bool(s.get("partial"))
                open_piece = open_piece or bool(res.get("partial"))
        if open_piece and len(docs) <= 1:
            # a server that ignored ``chunked`` and cut the answer at its row limit
            raise InfluxError(
                f"InfluxDB at {self.url} truncated a result at its row limit "
                "([http] max-row-limit) and does not stream chunked results: lower "
                "CRICKET_INFLUX_READ_CHUNK or raise max-row-limit on the server"
            )
        if open_piece:
            raise InfluxError(
                f"InfluxDB at {self.url} ended a chunked answer in the middle of a series: "
                "the connection was cut; run again"
            )
        return series

    def _error(self, message: str, db: str) -> InfluxError:
        if "database not found" in message:
            return InfluxError(
                f"database {db!r} does not exist on InfluxDB at {self.url}: create it with "
                f"`CREATE DATABASE {quote_ident(db)}` (influx CLI), or write the demo data "
                "with `cricket synth --write`, or set CRICKET_INFLUX_DATABASE"
            )
        if "iterator type" in message or "unsupported" in message and "type" in message:
            return InfluxError(
                f"InfluxDB at {self.url} (database {db!r}) cannot aggregate a non-numeric "
                f"field ({message}): select a numeric field"
            )
        return InfluxError(f"InfluxDB at {self.url} (database {db!r}) rejected a query: {message}")

    def ensure_database(self, name: str | None = None) -> None:
        """CREATE DATABASE (idempotent); the name is quoted, never pasted raw."""
        db = name or self.settings.influx_database
        self.query(f"CREATE DATABASE {quote_ident(db)}", database=db, method="POST")

    def drop_database(self, name: str) -> None:
        self.query(f"DROP DATABASE {quote_ident(name)}", database=name, method="POST")

    # ----------------------------------------------------------------------------------
    def _post(self, body: bytes, db: str) -> None:
        r = self.request(
            "POST", "/write", params={"db": db, "precision": "ns"}, content=body, what="write"
        )
        if r.status_code == 404 and "database not found" in r.text:
            raise self._error("database not found", db)
        if r.status_code >= 300:
            raise InfluxError(
                f"InfluxDB at {self.url} rejected a write to {db!r} "
                f"(HTTP {r.status_code}): {r.text[:300]}"
            )

    def write_batches(self, batches: Iterable[Sequence[str] | lp.Body],
                      database: str | None = None) -> int:
        """POST each batch of lines (or a ``lineprotocol.Body`` formatted ahead), in
        order, while the next batch is being formatted (one POST in flight on a
        background thread). Returns points written; raises InfluxWriteError saying how
        many were written and which range was not."""
        from concurrent.futures import Future, ThreadPoolExecutor

        db = database or self.settings.score_database
        written = 0
        prev: tuple[Future[None], Sequence[str] | lp.Body] | None = None
        failed: tuple[InfluxError, list[Sequence[str] | lp.Body]] | None = None
        it = iter(batches)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="influx-write") as pool:
            for batch in it:  # formatting this batch overlaps the previous POST
                if not batch:
                    continue
                body = batch.data if isinstance(batch, lp.Body) else "\n".join(batch).encode()
                if prev is not None:
                    try:
                        prev[0].result()
                        written += _count(prev[1])
                    except InfluxError as exc:
                        failed = (exc, [prev[1], batch])
                        prev = None
                        break
                prev = (pool.submit(self._post, body, db), batch)
            if prev is not None:
                try:
                    prev[0].result()
                    written += _count(prev[1])
                except InfluxError as exc:
                    failed = (exc, [prev[1]])
        if failed is None:
            return written
        exc, rest_batches = failed
        rest = [x for b in [*rest_batches, *it] for x in _lines(b)]
        times = [lp.line_time(x) for x in rest]
        first, last = min(times), max(times)
        total = written + len(rest)
        raise InfluxWriteError(
            f"{exc} -- wrote {written} of {total} points; the {len(rest)} points "
            f"from {first.isoformat()} to {last.isoformat()} were not written",
            written=written,
            first_unwritten=first,
            last_unwritten=last,
        ) from exc

    def write_lines(self, lines: Sequence[str], database: str | None = None) -> int:
        """POST line protocol in batches of ``influx_write_batch``. Returns points written;
        raises InfluxWriteError saying what was and was not written."""
        size = self.settings.influx_write_batch
        return self.write_batches((lines[lo:hi] for lo, hi in lp.batches(lines, size)), database)


def _count(batch: Sequence[str] | lp.Body) -> int:
    return batch.count if isinstance(batch, lp.Body) else len(batch)


def _lines(batch: Sequence[str] | lp.Body) -> Sequence[str]:
    return batch.lines() if isinstance(batch, lp.Body) else batch


class _OwnsClient:
    """Holds one InfluxQLClient for its settings; closes it on ``close`` or ``with`` exit."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.client = InfluxQLClient(self.settings)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InfluxQLSource(_OwnsClient):
    """Reads regular series with InfluxQL. See the module docstring for the safety rules."""

    page = DISCOVERY_PAGE

    # ----------------------------------------------------------------------------------
    @staticmethod
    def _where(selector: SeriesSelector, params: dict[str, Any]) -> list[str]:
        conds = []
        for i, (k, v) in enumerate(sorted(selector.tags.items())):
            name = f"tag{i}"
            params[name] = v
            conds.append(f"{quote_ident(k)} = ${name}")
        return conds

    def _names(self, q: str) -> list[str]:
        return sorted({str(row[0]) for s in self.client.query(q) for row in s.get("values") or []})

    def check_selector(self, selector: SeriesSelector) -> None:
        """Refuse a selector that names what the database does not hold: a measurement,
        a field, or a tag key (group-by or filter), listing the names that do exist, so
        a typo (``--group-by hots``) fails before anything is scored instead of
        scoring a bogus series ``{hots=}``."""
        m = quote_ident(selector.measurement)
        db = self.settings.influx_database
        fields = self._names(f"SHOW FIELD KEYS FROM {m}")
        if not fields:
            known = self._names("SHOW MEASUREMENTS LIMIT 50")
            raise SelectorError(
                f"the selector matched no series: measurement {selector.measurement!r} does "
                f"not exist in database {db!r} (it holds {_listing(known)}); check --measurement"
            )
        if selector.field not in fields:
            raise SelectorError(
                f"field {selector.field!r} does not exist in measurement "
                f"{selector.measurement!r} (its fields: {_listing(fields)}); check --field"
            )
        tag_keys = self._names(f"SHOW TAG KEYS FROM {m}")
        for kind, names in (("group-by tag", selector.group_by), ("tag filter", selector.tags)):
            unknown = [t for t in names if t not in tag_keys]
            if unknown:
                raise SelectorError(
                    f"{kind} {', '.join(map(repr, unknown))} does not exist in measurement "
                    f"{selector.measurement!r} (its tag keys: {_listing(tag_keys)}); "
                    "check --group-by / --tag"
                )

    def discover(self, selector: SeriesSelector) -> list[SeriesKey]:
        """The series keys the selector matches (by measurement and tag filters). A
        selector naming a measurement, field or tag key that does not exist is refused
        (:meth:`check_selector`). ``SHOW SERIES`` is paged, so a server's row limit
        (``max-row-limit``) never truncates discovery."""
        self.check_selector(selector)
        params: dict[str, Any] = {}
        conds = self._where(selector, params)
        q = f"SHOW SERIES FROM {quote_ident(selector.measurement)}"
        if conds:
            q += " WHERE " + " AND ".join(conds)
        keys: set[SeriesKey] = set()
        offset = 0
        while True:  # paged: a fleet larger than any one answer is still found whole
            rows = [
                row
                for s in self.client.query(f"{q} LIMIT {self.page} OFFSET {offset}", params)
                for row in s.get("values") or ()
            ]
            for row in rows:
                _m, tags = parse_series_key(row[0])
                keys.add(
                    SeriesKey.make(
                        selector.measurement,
                        selector.field,
                        {g: tags.get(g, "") for g in selector.group_by},
                    )
                )
            if len(rows) < self.page:
                return sorted(keys)
            offset += self.page

    @staticmethod
    def _key_filter(
        selector: SeriesSelector, keys: Sequence[SeriesKey], params: dict[str, Any]
    ) -> str | None:
        """``("host" = $k0_0 OR "host" = $k1_0 ...)``: one bound parameter per key and
        group-by tag, matched exactly (no regex). None when there is nothing to restrict
        (no group-by tags: a selector names a single series)."""
        if not selector.group_by:
            return None
        alts = []
        for i, key in enumerate(keys):
            tags = key.tag_dict
            parts = []
            for j, g in enumerate(selector.group_by):
                name = f"k{i}_{j}"
                params[name] = tags.get(g, "")
                parts.append(f"{quote_ident(g)} = ${name}")
            alts.append(parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")")
        return "(" + " OR ".join(alts) + ")"

    def build_query(
        self,
        selector: SeriesSelector,
        start_ns: int,
        stop_ns: int,
        keys: Sequence[SeriesKey] | None = None,
        raw_limit: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The GROUP BY time query for [start_ns, stop_ns); with ``raw_limit`` instead the
        raw points (same filters, grouped by the same tags), at most that many per series."""
        params: dict[str, Any] = {"start": start_ns, "stop": stop_ns}
        conds = ["time >= $start", "time < $stop", *self._where(selector, params)]
        if keys is not None:
            restrict = self._key_filter(selector, keys, params)
            if restrict is not None:
                conds.append(restrict)
        tags = [quote_ident(g) for g in selector.group_by]
        where = " AND ".join(conds)
        if raw_limit is not None:
            q = (
                f"SELECT {quote_ident(selector.field)} FROM {quote_ident(selector.measurement)} "
                f"WHERE {where}{' GROUP BY ' + ', '.join(tags) if tags else ''} "
                f"LIMIT {int(raw_limit)}"
            )
            return q, params
        every_ns = int(pd.Timedelta(selector.every).value)
        group = [f"time({every_ns}ns)", *tags]
        q = (
            f"SELECT {_AGG[selector.aggregate]}({quote_ident(selector.field)}) "
            f"FROM {quote_ident(selector.measurement)} "
            f"WHERE {where} GROUP BY {', '.join(group)} fill(none)"
        )
        return q, params

    @staticmethod
    def _one_per_bucket(series: list[dict[str, Any]], g0: int, every: int, limit: int) -> bool:
        """Whether raw points can stand for the aggregate: numbers only (no bool/string:
        the server's own error is kept for those) and at most one point per bucket.
        (The aggregate of one point is that point.) ``limit`` rows back means the
        series may hold more: by pigeonhole one bucket then has two."""
        for s in series:
            rows = s.get("values") or ()
            if len(rows) >= limit:
                return False
            if not rows:
                continue
            if isinstance(rows, Points):  # float values, integer times
                t = rows.times
            else:
                if not set(map(type, map(itemgetter(1), rows))) <= {float, int}:
                    return False
                t = np.fromiter(map(itemgetter(0), rows), dtype=np.int64, count=len(rows))
            b = (t - g0) // every
            if len(b) > 1 and not (np.diff(b) > 0).all():
                return False
        return True

    def read(
        self,
        selector: SeriesSelector,
        start: datetime | None = None,
        stop: datetime | None = None,
        keys: Sequence[SeriesKey] | None = None,
    ) -> dict[SeriesKey, pd.Series]:
        """One regular float series per key over [start, stop) on a grid of
        ``selector.every`` aligned to the epoch (InfluxDB's GROUP BY time buckets);
        missing steps are NaN. Keys with no point in the range are absent.

        ``keys`` restricts the query to those series (a batch of a large fleet) with
        one bound parameter per tag value, at most ``KEYS_PER_QUERY`` keys per
        request; None reads every series the selector matches."""
        start = start if start is not None else selector.start
        stop = stop if stop is not None else selector.stop
        if start is None or stop is None:
            raise InfluxError("read needs a time range: give start and stop (or set them on the selector)")
        s_ns, e_ns = _ns(start), _ns(stop)
        if s_ns >= e_ns:
            raise InfluxError(f"start {_utc(start)} is not before stop {_utc(stop)}")
        every = int(pd.Timedelta(selector.every).value)
        g0 = (s_ns // every) * every
        n = -(-(e_ns - g0) // every)
        chunk = max(every, (int(pd.Timedelta(self.settings.influx_read_chunk).value) // every) * every)
        out: dict[SeriesKey, np.ndarray] = {}
        if keys is None:
            groups: list[Sequence[SeriesKey] | None] = [None]
        else:
            wanted = sorted(
                {k for k in keys if (k.measurement, k.field) == (selector.measurement, selector.field)}
            )
            groups = [wanted[i : i + KEYS_PER_QUERY] for i in range(0, len(wanted), KEYS_PER_QUERY)]
        # Regular data at (or coarser than) the step has at most one point per bucket;
        # then the raw points ARE the aggregates, and influxd sends them for about half
        # the CPU of a GROUP BY time query. The first chunk that has two points in a
        # bucket (or a non-numeric value) switches this read to GROUP BY time queries.
        raw = True
        for group in groups:
            lo = s_ns
            while lo < e_ns:
                hi = min(e_ns, ((lo - g0) // chunk + 1) * chunk + g0)
                series = None
                if raw:
                    limit = -(-(hi - g0) // every) - (lo - g0) // every + 1
                    q, params = self.build_query(selector, lo, hi, group, raw_limit=limit)
                    series = self.client.query_points(q, params)
                    if not self._one_per_bucket(series, g0, every, limit):
                        raw, series = False, None
                if series is None:
                    q, params = self.build_query(selector, lo, hi, group)
                    series = self.client.query_points(q, params)
                for s in series:
                    self._fill(selector, s, g0, every, n, out, normalize_zero=raw)
                lo = hi
        index = pd.date_range(
            pd.Timestamp(g0, unit="ns", tz="UTC"), periods=n, freq=pd.Timedelta(every, unit="ns")
        )
        return {
            key: pd.Series(vals, index=index, name=str(key), copy=False)
            for key, vals in sorted(out.items())
        }

    @staticmethod
    def _fill(
        selector: SeriesSelector,
        s: dict[str, Any],
        g0: int,
        every: int,
        n: int,
        out: dict[SeriesKey, np.ndarray],
        normalize_zero: bool = False,
    ) -> None:
        tags = s.get("tags") or {}
        key = SeriesKey.make(
            selector.measurement, selector.field, {g: tags.get(g, "") for g in selector.group_by}
        )
        rows = s.get("values") or []
        if not rows:
            return
        if isinstance(rows, Points):  # decoded straight into arrays
            t, v = rows.times, rows.values
        else:
            try:
                arr = np.array(rows, dtype=np.float64)
            except (ValueError, TypeError) as exc:
                sample = next((r[1] for r in rows if not isinstance(r[1], int | float | None)),
                              None)
                raise InfluxError(
                    f"field {selector.field!r} of {selector.measurement!r} holds non-numeric "
                    f"values (e.g. {sample!r}) for {key}: select a numeric field"
                ) from exc
            if arr.ndim != 2 or arr.shape[1] < 2:
                return
            v = arr[:, 1]
            # integer times (float64 would round them by ~100 ns): GROUP BY answers bucket
            # starts, raw points any time inside their bucket
            t = np.fromiter(map(itemgetter(0), rows), dtype=np.int64, count=len(rows))
        pos = (t - g0) // every
        ok = (pos >= 0) & (pos < n)
        vals = out.get(key)
        if vals is None:
            vals = out[key] = np.full(n, np.nan)
        if normalize_zero and selector.aggregate in ("mean", "sum"):
            v = v + 0.0  # influxd's mean/sum of one -0.0 is 0.0 (its sum starts at 0)
        vals[pos[ok]] = v[ok]
        if not np.isfinite(vals[pos[ok]]).all():  # inf stored in the database
            bad = ~np.isfinite(vals)
            vals[bad] = np.nan

    # ---------------------------------------------------------------- results read-back
    def _read_results(
        self,
        measurement: str,
        key_or_selector: SeriesKey | SeriesSelector | str,
        start: datetime,
        stop: datetime,
        model_version: str | None,
        model_name: str | None = None,
    ) -> pd.DataFrame:
        params: dict[str, Any] = {"start": _ns(start), "stop": _ns(stop)}
        conds = ["time >= $start", "time < $stop"]
        if isinstance(key_or_selector, SeriesSelector):
            for i, (k, v) in enumerate(sorted(key_or_selector.tags.items())):
                params[f"tag{i}"] = v
                conds.append(f"{quote_ident(k)} = $tag{i}")
        else:
            params["series"] = str(key_or_selector)
            conds.append('"series" = $series')
        _model_conds(conds, params, model_version, model_name)
        return self._results_frame(self._query_results(measurement, conds, params))

    def _query_results(self, measurement: str, conds: list[str],
                       params: dict[str, Any]) -> list[dict[str, Any]]:
        q = (
            f"SELECT * FROM {quote_ident(measurement)} WHERE {' AND '.join(conds)} "
            'GROUP BY "series", "model_name", "model_version"'
        )
        return self.client.query(q, params, database=self.settings.score_database)

    @staticmethod
    def _results_frame(series: list[dict[str, Any]]) -> pd.DataFrame:
        frames = []
        for s in series:
            df = pd.DataFrame(s.get("values") or [], columns=s["columns"])
            for tag, val in (s.get("tags") or {}).items():
                df[tag] = val
            frames.append(df)
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True)
        df["time"] = pd.to_datetime(df["time"], unit="ns", utc=True)
        return df.set_index("time").sort_index()

    def read_scores(
        self,
        key_or_selector: SeriesKey | SeriesSelector | str,
        start: datetime,
        stop: datetime,
        model_version: str | None = None,
        model_name: str | None = None,
    ) -> pd.DataFrame:
        """What was written to ``cricket_score`` for one key (or every key matching a
        selector's tags) in [start, stop): indexed by time, columns value,
        reconstruction, error, score, anomalous, series, model_name, model_version, and
        the tags. ``model_version``/``model_name`` restrict it to one model's results."""
        return self._read_results(
            lp.SCORE_MEASUREMENT, key_or_selector, start, stop, model_version, model_name
        )

    def read_events(
        self,
        key_or_selector: SeriesKey | SeriesSelector | str,
        start: datetime,
        stop: datetime,
        model_version: str | None = None,
        model_name: str | None = None,
    ) -> pd.DataFrame:
        """Events in ``cricket_event`` starting in [start, stop); ``start``/``end`` are
        converted back to UTC timestamps."""
        return self._event_times(self._read_results(
            lp.EVENT_MEASUREMENT, key_or_selector, start, stop, model_version, model_name
        ))

    def read_events_of(
        self,
        keys: Sequence[SeriesKey | str],
        start: datetime,
        stop: datetime,
        model_version: str | None = None,
        model_name: str | None = None,
    ) -> dict[str, pd.DataFrame]:
        """:meth:`read_events` of each of ``keys`` (by name), in one query per
        ``KEYS_PER_QUERY`` series instead of one per series (an hourly run reads the
        records of every series with an event near either end of its window). Each
        key gets exactly what ``read_events(key, ...)`` gives: the rows of its own
        series, an empty DataFrame when it has none."""
        names = list(dict.fromkeys(str(k) for k in keys))
        found: dict[str, list[dict[str, Any]]] = {}
        for lo in range(0, len(names), KEYS_PER_QUERY):
            group = names[lo : lo + KEYS_PER_QUERY]
            params: dict[str, Any] = {"start": _ns(start), "stop": _ns(stop)}
            params.update({f"s{i}": name for i, name in enumerate(group)})
            conds = ["time >= $start", "time < $stop",
                     "(" + " OR ".join(f'"series" = $s{i}' for i in range(len(group))) + ")"]
            _model_conds(conds, params, model_version, model_name)
            for s in self._query_results(lp.EVENT_MEASUREMENT, conds, params):
                found.setdefault((s.get("tags") or {}).get("series"), []).append(s)
        return {name: self._event_times(self._results_frame(found.get(name, [])))
                for name in names}

    @staticmethod
    def _event_times(df: pd.DataFrame) -> pd.DataFrame:
        for col in ("start", "end"):
            if col in df.columns:
                df[col] = pd.to_datetime(df[col].astype("int64"), unit="ns", utc=True)
        for col, name in lp.OFFSET_FIELDS.items():  # a continued record's own times
            if name in df.columns and "start" in df.columns:
                offset = pd.to_timedelta(pd.to_numeric(df.pop(name)).round(), unit="ns")
                df[col] = df["start"] + offset
        return df


def _model_conds(conds: list[str], params: dict[str, Any], model_version: str | None,
                 model_name: str | None) -> None:
    """Add the result filters for a model version and name (when given) to a query's
    conditions and bound parameters."""
    if model_version is not None:
        params["mv"] = str(model_version)
        conds.append('"model_version" = $mv')
    if model_name is not None:
        params["mn"] = str(model_name)
        conds.append('"model_name" = $mn')


class InfluxQLSink(_OwnsClient):
    """Writes scores and events as line protocol to ``/write`` (1.x, 2.x v1 compat, 3.x)."""

    def ensure_database(self, name: str | None = None) -> None:
        self.client.ensure_database(name or self.settings.score_database)

    def write_scores(self, key: SeriesKey, frame: pd.DataFrame, model_version: str) -> int:
        # formatted lazily, batch by batch, so formatting overlaps the POSTs. Batches are
        # all full-size: formatting one takes milliseconds, while every extra POST costs
        # the server a request and a WAL fsync
        size = self.settings.influx_write_batch
        bounds = [*range(0, len(frame), size), len(frame)] if len(frame) else []
        batches = (
            lp.score_lines(key, frame.iloc[lo:hi], model_version, self.settings.model_name)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=False)
        )
        return self.client.write_batches(batches)

    def write_results(
        self,
        results: Iterable[tuple[SeriesKey, pd.DataFrame | None, pd.DataFrame | None]],
        model_version: str,
    ) -> dict[str, int]:
        """Scores and events of many series, ``(key, frame, events)`` each, in full-size
        requests that span series (see ``lineprotocol.result_batches``); the next request
        is formatted while the previous one is posted. Returns ``{"scores", "events"}``
        points written; raises InfluxWriteError saying what was and was not written."""
        counts = {"scores": 0, "events": 0}
        self.client.write_batches(lp.result_batches(
            results, model_version, self.settings.model_name,
            self.settings.influx_write_batch, counts,
        ))
        return counts

    def write_formatted(self, ready: lp.Formatted) -> dict[str, int]:
        """Results formatted ahead (``lineprotocol.formatted``, e.g. by the process that
        scored them): their request bodies posted as they are. Returns the points of
        each kind; raises InfluxWriteError saying what was and was not written."""
        self.client.write_batches(ready.bodies)
        return {"scores": 0, "events": 0, **ready.counts}

    def write_events(self, key: SeriesKey, events: pd.DataFrame, model_version: str) -> int:
        return self.client.write_lines(
            lp.event_lines(key, events, model_version, self.settings.model_name)
        )

    def write_lines(self, lines: Sequence[str]) -> int:
        """Ready-made result lines (e.g. ``lineprotocol.missing_lines``) to the score database."""
        return self.client.write_lines(lines)

    def write_series(self, key: SeriesKey, series: pd.Series, database: str | None = None) -> int:
        """Write raw metric points (measurement/field/tags from the key) to the source
        database; NaN and inf are skipped (line protocol cannot hold them)."""
        return self.client.write_lines(
            lp.series_lines(key, series), database=database or self.settings.influx_database
        )

    def write_points(self, lines: Sequence[str], database: str | None = None) -> int:
        """Write ready-made line protocol lines to ``database`` (default: the source db)."""
        return self.client.write_lines(lines, database=database or self.settings.influx_database)


def ensure_database(settings: Settings, name: str | None = None) -> None:
    """Create ``name`` (default ``settings.influx_database``) and the score database."""
    with InfluxQLClient(settings) as c:
        c.ensure_database(name or settings.influx_database)
        if name is None and settings.score_database != settings.influx_database:
            c.ensure_database(settings.score_database)


__all__ = [
    "InfluxQLClient",
    "InfluxQLSink",
    "InfluxQLSource",
    "InfluxWriteError",
    "ensure_database",
    "quote_ident",
]
