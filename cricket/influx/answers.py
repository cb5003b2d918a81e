"""Durable alerting state in InfluxDB (the score database), over InfluxQL:

``cricket_incident``  one point per incident (tag ``incident``; time: its first start):
                      group, state, members (JSON), whether it was announced or silenced.
                      Rewriting an incident overwrites its point: the alert state of a
                      re-run is the state, not a second copy.
``cricket_silence``   one point per silence (tag ``silence``): scope, window, who, why;
                      removing one rewrites it with ``removed`` and who removed it.
``cricket_label``     one point per label (tag ``label_id``): series, ``normal`` or
                      ``anomaly``, the stretch, who, when, why (and the event it came from).

Every record says who and when; nothing is deleted, so the history stays auditable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from cricket.alerts import Incident, Silence
from cricket.config import Settings
from cricket.feedback import Label
from cricket.influx import lineprotocol as lp
from cricket.influx.influxql import InfluxQLClient, quote_ident

INCIDENTS = "cricket_incident"
SILENCES = "cricket_silence"
LABELS = "cricket_label"


def _ns(t: Any) -> int:
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def _t(ns: Any) -> pd.Timestamp:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC")


def _s(text: str) -> str:
    return lp.escape_string_field(str(text))


def _rows(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in series:
        cols = s.get("columns") or []
        for values in s.get("values") or []:
            out.append(dict(zip(cols, values, strict=False)))
    return out


class AnswerStore:
    """Read and write incidents, silences and labels. Use as a context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = InfluxQLClient(settings)
        self.db = settings.score_database

    def __enter__(self) -> AnswerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def _select(self, measurement: str, where: str = "", params: dict | None = None) -> list[dict]:
        q = f"SELECT * FROM {quote_ident(measurement)}" + (f" WHERE {where}" if where else "")
        try:
            return _rows(self.client.query(q, params=params, database=self.db))
        except Exception as exc:  # a fresh install: no database yet means nothing stored
            if "does not exist" in str(exc):
                return []
            raise

    def _write(self, lines: Sequence[str]) -> None:
        if lines:
            self.client.ensure_database(self.db)
            self.client.write_lines(list(lines), database=self.db)

    # -------------------------------------------------------------------- incidents
    def incidents(self, start: datetime, end: datetime) -> list[Incident]:
        """Incidents whose first start lies in [start, end)."""
        rows = self._select(
            INCIDENTS, "time >= $a AND time < $b", {"a": _ns(start), "b": _ns(end)}
        )
        out = []
        for r in rows:
            inc = Incident.from_record({
                "id": r["incident"], "group": r.get("group", "*"), "state": r.get("state"),
                "silenced": r.get("silenced"), "notified": r.get("notified"),
                "members": r.get("members") or "[]",
            })
            inc.anchor = _t(r["time"])
            out.append(inc)
        return out

    def save_incidents(self, incidents: Iterable[Incident], model_version: str = "") -> None:
        lines = []
        now = _ns(pd.Timestamp.now(tz="UTC"))
        for inc in incidents:
            anchor = inc.anchor if inc.anchor is not None else inc.start
            inc.anchor = anchor
            prefix = lp.series_prefix(INCIDENTS, {"incident": inc.id})
            members = json.dumps([m.to_dict() for m in inc.members])
            fields = ",".join([
                f"group={_s(inc.group)}",
                f"state={_s(inc.state)}",
                f"silenced={'true' if inc.silenced else 'false'}",
                f"notified={'true' if inc.notified else 'false'}",
                f"members={_s(members)}",
                f"n_series={len({m.series for m in inc.members})}i",
                f"severity={float(inc.severity)}",
                f"end={_ns(inc.end)}i",
                f"updated={now}i",
                f"model_version={_s(model_version)}",
            ])
            lines.append(f"{prefix} {fields} {_ns(anchor)}")
        self._write(lines)

    # -------------------------------------------------------------------- silences
    def silences(self, include_removed: bool = False) -> list[Silence]:
        out = []
        for r in self._select(SILENCES):
            s = Silence(
                id=r["silence"],
                start=_t(r["time"]),
                end=_t(r["end"]),
                reason=r.get("reason") or "",
                by=r.get("by") or "",
                created=_t(r.get("created") or r["time"]),
                series=r.get("series") or "",
                tags=tuple(sorted(json.loads(r.get("tags") or "{}").items())),
                removed=bool(r.get("removed")),
                removed_by=r.get("removed_by") or "",
            )
            if include_removed or not s.removed:
                out.append(s)
        return sorted(out, key=lambda s: (s.start, s.id))

    def save_silence(self, s: Silence) -> None:
        prefix = lp.series_prefix(SILENCES, {"silence": s.id})
        fields = ",".join([
            f"series={_s(s.series)}",
            f"tags={_s(json.dumps(dict(s.tags)))}",
            f"end={_ns(s.end)}i",
            f"reason={_s(s.reason)}",
            f"by={_s(s.by)}",
            f"created={_ns(s.created)}i",
            f"removed={'true' if s.removed else 'false'}",
            f"removed_by={_s(s.removed_by)}",
        ])
        self._write([f"{prefix} {fields} {_ns(s.start)}"])

    # -------------------------------------------------------------------- labels
    def labels(self, series: Iterable[str] | None = None) -> list[Label]:
        wanted = None if series is None else set(series)
        out = []
        for r in self._select(LABELS):
            lab = Label(
                id=r["label_id"],
                series=r["series"],
                label=r["label"],
                start=_t(r["time"]),
                end=_t(r["end"]),
                by=r.get("by") or "",
                reason=r.get("reason") or "",
                created=_t(r.get("created") or r["time"]),
                event=r.get("event") or "",
            )
            if wanted is None or lab.series in wanted:
                out.append(lab)
        return sorted(out, key=lambda x: (x.start, x.series))

    def save_label(self, lab: Label) -> None:
        prefix = lp.series_prefix(LABELS, {"label_id": lab.id})
        fields = ",".join([
            f"series={_s(lab.series)}",
            f"label={_s(lab.label)}",
            f"end={_ns(lab.end)}i",
            f"by={_s(lab.by)}",
            f"reason={_s(lab.reason)}",
            f"created={_ns(lab.created)}i",
            f"event={_s(lab.event)}",
        ])
        self._write([f"{prefix} {fields} {_ns(lab.start)}"])
