"""Alert once per problem: events become incidents, incidents are planned into what to
say (opened, closed) given what was said before. No I/O and no Prefect here.

* An **incident** is a set of events on series that share the grouping tags
  (``Settings.alert_group_by``; empty: the whole fleet is one group, as in Alertmanager)
  and overlap in time, allowing ``slack`` between one event's end and the next one's
  start. One incident is one notification, its members listed by severity.
* **Once per problem**: the plan takes the incidents already known (the durable alert
  state). An event already known (same series and start) is not new; an event that
  joins a known incident of its group (within ``slack``) makes that incident grow and
  says nothing. So a re-run of the same hour, and an event that continues into the
  next hour (it keeps its start), never alert twice.
* **Silences**: members inside a silence are recorded but not announced; an incident
  whose every member is silenced opens silently.
* An incident **closes** once its last member ended more than ``slack`` before the
  end of the scored window (the data after it is in and normal).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any

import pandas as pd

from cricket.explain import looks_like
from cricket.feedback import event_ref
from cricket.windows import utc_timestamp as _ts

OPENED = "cricket.anomaly.opened"
CLOSED = "cricket.anomaly.closed"


@dataclass(frozen=True)
class AlertEvent:
    """One event of one series, as alerts see it."""

    series: str
    start: pd.Timestamp
    end: pd.Timestamp
    severity: float
    score: float
    tags: tuple[tuple[str, str], ...] = ()
    kind: str = "anomaly"  # or e.g. "data_missing": routed like any other
    detail: str = ""  # e.g. "field power": what a point event names (its contributor)

    @property
    def key(self) -> tuple[str, str]:
        return (self.series, _ts(self.start).isoformat())

    @property
    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "tags": self.tag_dict,
            "kind": self.kind,
            **({"detail": self.detail} if self.detail else {}),
            "start": _ts(self.start).isoformat(),
            "end": _ts(self.end).isoformat(),
            "severity": round(float(self.severity), 3),
            "score": round(float(self.score), 3),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AlertEvent:
        return cls(
            series=str(doc["series"]),
            start=_ts(doc["start"]),
            end=_ts(doc["end"]),
            severity=float(doc.get("severity", 0.0)),
            score=float(doc.get("score", 0.0)),
            tags=tuple(sorted((doc.get("tags") or {}).items())),
            kind=str(doc.get("kind", "anomaly")),
            detail=str(doc.get("detail", "")),
        )


def alert_events(results: Iterable[Any]) -> list[AlertEvent]:
    """The events of scored results (anything with ``key``, ``events`` and optionally
    ``series_key``). Severity is the event's ``severity`` column when it has one, else
    its peak score; the kind is its ``kind`` column, else ``anomaly``; the detail is the
    ``contributor`` column (the point model's field that contributed most), else what the
    event looks like (:func:`cricket.explain.looks_like` of the view that fired)."""
    out = []
    for r in results:
        events = getattr(r, "events", None)
        if events is None or not len(events):
            continue
        sk = getattr(r, "series_key", None)
        tags = tuple(sorted(sk.tag_dict.items())) if sk is not None else ()
        for row in events.to_dict("records"):
            peak = float(row.get("peak", float("nan")))
            sev = row.get("severity", peak)
            kind = row.get("kind") or "anomaly"
            who = row.get("contributor")
            out.append(AlertEvent(
                series=str(r.key),
                start=_ts(row["start"]),
                end=_ts(row["end"]),
                severity=float(sev) if pd.notna(sev) else 0.0,
                score=peak if pd.notna(peak) else 0.0,
                tags=tags,
                kind=str(kind),
                detail=(f"field {who}" if isinstance(who, str) and who
                        else looks_like(row.get("scale"), row.get("actual"), row.get("typical"),
                                        views=row.get("views"))),
            ))
    return out


def missing_data_events(
    missing: Iterable[Any], start: Any, end: Any, tags_of: Any = None
) -> list[AlertEvent]:
    """Missing-data findings (anything with ``key`` and ``severity``: a series that sent no
    data, or far less than expected, in [start, end)) as alert events of kind
    ``data_missing``, routed like any other. ``tags_of(key)`` gives a series' tags (for
    grouping). A series silent for hours is one incident: each hour's event joins the
    incident of the hour before."""
    out = []
    for m in missing:
        key = str(m.key)
        sev = float(getattr(m, "severity", 100.0))
        tags = tuple(sorted((tags_of(key) if tags_of else {}).items()))
        out.append(AlertEvent(series=key, start=_ts(start), end=_ts(end), severity=sev,
                              score=sev, tags=tags, kind="data_missing"))
    return out


def group_of(event: AlertEvent, group_by: Sequence[str]) -> str:
    """The grouping key: the values of the ``group_by`` tags (``series`` names the series
    itself). An event lacking one of the tags is a group of its own series."""
    if not group_by:
        return "*"
    tags = event.tag_dict
    parts = []
    for name in group_by:
        if name == "series":
            parts.append(f"series={event.series}")
        elif name in tags:
            parts.append(f"{name}={tags[name]}")
        else:
            return f"series={event.series}"
    return ",".join(parts)


@dataclass
class Incident:
    """Events of one group that overlap in time. ``members`` are sorted by severity,
    highest first."""

    id: str
    group: str
    members: list[AlertEvent]
    state: str = "open"  # open | closed
    silenced: bool = False
    notified: bool = False
    anchor: pd.Timestamp | None = None  # the time its durable record is stored at

    @property
    def start(self) -> pd.Timestamp:
        return min(m.start for m in self.members)

    @property
    def end(self) -> pd.Timestamp:
        return max(m.end for m in self.members)

    @property
    def severity(self) -> float:
        return max(m.severity for m in self.members)

    @property
    def score(self) -> float:
        return max(m.score for m in self.members)

    def sort(self) -> Incident:
        self.members.sort(key=lambda m: (-m.severity, m.series, m.start))
        return self

    @property
    def title(self) -> str:
        n = len({m.series for m in self.members})
        top = self.members[0]
        where = "" if self.group in ("*",) or self.group.startswith("series=") else f" ({self.group})"
        kinds = sorted({m.kind for m in self.members})
        what = "anomaly" if kinds == ["anomaly"] else "/".join(kinds)
        if n == 1:
            return f"{what} on {top.series}{where} since {self.start:%Y-%m-%d %H:%M} UTC"
        return (f"{what} on {n} series{where} since {self.start:%Y-%m-%d %H:%M} UTC, "
                f"worst {top.series}")

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "state": self.state,
            "silenced": self.silenced,
            "notified": self.notified,
            "members": [m.to_dict() for m in self.members],
        }

    @classmethod
    def from_record(cls, doc: dict[str, Any]) -> Incident:
        members = doc["members"]
        if isinstance(members, str):
            members = json.loads(members)
        return cls(
            id=str(doc["id"]),
            group=str(doc["group"]),
            members=[AlertEvent.from_dict(m) for m in members],
            state=str(doc.get("state", "open")),
            silenced=bool(doc.get("silenced", False)),
            notified=bool(doc.get("notified", False)),
        ).sort()


def incident_id(group: str, first: AlertEvent, scope: str = "") -> str:
    """Stable id from the group and the incident's earliest member: the same events
    always give the same id. ``scope`` names the installation (database, model), so two
    Cricket installations reporting to one Prefect server never share an id."""
    text = f"{scope}|{group}|{first.series}|{_ts(first.start).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def group_incidents(
    events: Iterable[AlertEvent], group_by: Sequence[str], slack: timedelta, scope: str = ""
) -> list[Incident]:
    """Events of one group that overlap in time (``slack`` allowed between them) form one
    incident. Returned in order of start."""
    slack_td = pd.Timedelta(slack)
    by_group: dict[str, list[AlertEvent]] = {}
    for e in events:
        by_group.setdefault(group_of(e, group_by), []).append(e)
    out: list[Incident] = []
    for group, evs in by_group.items():
        evs.sort(key=lambda e: (e.start, e.series))
        current: list[AlertEvent] = []
        end = None
        for e in evs:
            if current and end is not None and e.start <= end + slack_td:
                current.append(e)
                end = max(end, e.end)
                continue
            if current:
                out.append(Incident(incident_id(group, current[0], scope), group, current).sort())
            current, end = [e], e.end
        if current:
            out.append(Incident(incident_id(group, current[0], scope), group, current).sort())
    out.sort(key=lambda i: (i.start, i.group))
    return out


# ------------------------------------------------------------------------------ silences
@dataclass(frozen=True)
class Silence:
    """A maintenance window: events of matching series that overlap [start, end) are
    recorded but not announced. ``series`` is an exact series key or a glob pattern
    (``*{host=web*}``); ``tags`` must all match; both empty matches every series."""

    id: str
    start: pd.Timestamp
    end: pd.Timestamp
    reason: str
    by: str
    created: pd.Timestamp
    series: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    removed: bool = False
    removed_by: str = ""

    def matches(self, event: AlertEvent) -> bool:
        if self.removed:
            return False
        if self.series and not fnmatchcase(event.series, self.series):
            return False
        tags = event.tag_dict
        if any(tags.get(k) != v for k, v in self.tags):
            return False
        return event.start < self.end and event.end >= self.start

    @property
    def scope(self) -> str:
        parts = []
        if self.series:
            parts.append(self.series)
        parts += [f"{k}={v}" for k, v in self.tags]
        return " ".join(parts) or "every series"


def silence_id(series: str, tags: dict[str, str], start: Any, end: Any, created: Any) -> str:
    text = f"{series}|{sorted(tags.items())}|{_ts(start).isoformat()}|{_ts(end).isoformat()}|{_ts(created).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# ------------------------------------------------------------------------------ the plan
@dataclass
class AlertPlan:
    """What one scoring run says. ``opened``: new incidents to announce; ``silenced``:
    new incidents recorded without a word; ``grown``: known incidents that gained
    members (no word); ``closed``: incidents to announce as ended; ``changed``: every
    incident whose record must be written."""

    opened: list[Incident] = field(default_factory=list)
    silenced: list[Incident] = field(default_factory=list)
    grown: list[Incident] = field(default_factory=list)
    closed: list[Incident] = field(default_factory=list)
    closed_quietly: list[Incident] = field(default_factory=list)
    repeated: int = 0  # events already known (re-runs, continuing events)

    @property
    def changed(self) -> list[Incident]:
        seen: dict[str, Incident] = {}
        for inc in [*self.opened, *self.silenced, *self.grown, *self.closed,
                    *self.closed_quietly]:
            seen[inc.id] = inc
        return list(seen.values())

    def summary(self) -> dict[str, Any]:
        return {
            "opened": [i.id for i in self.opened],
            "silenced": [i.id for i in self.silenced],
            "grown": [i.id for i in self.grown],
            "closed": [i.id for i in self.closed],
            "repeated_events": self.repeated,
        }


def plan_alerts(
    events: Sequence[AlertEvent],
    known: Sequence[Incident],
    silences: Sequence[Silence],
    group_by: Sequence[str],
    slack: timedelta,
    window_end: Any,
    scope: str = "",
) -> AlertPlan:
    """Decide what to announce for ``events`` given the incidents already ``known``."""
    slack_td = pd.Timedelta(slack)
    plan = AlertPlan()
    known_by_event: dict[tuple[str, str], Incident] = {}
    for inc in known:
        for m in inc.members:
            known_by_event[m.key] = inc
    touched: dict[str, Incident] = {}
    fresh: list[AlertEvent] = []
    for e in sorted(events, key=lambda e: (e.start, e.series)):
        inc = known_by_event.get(e.key)
        if inc is not None:
            plan.repeated += 1
            # the same event, maybe longer now (it continued): keep the longest extent
            old = next(m for m in inc.members if m.key == e.key)
            if e.end > old.end or e.severity > old.severity:
                inc.members = [
                    replace(m, end=max(m.end, e.end), severity=max(m.severity, e.severity),
                            score=max(m.score, e.score)) if m.key == e.key else m
                    for m in inc.members
                ]
                touched[inc.id] = inc
            continue
        group = group_of(e, group_by)
        joined = next(
            (inc for inc in known if inc.group == group
             and e.start <= inc.end + slack_td and e.end + slack_td >= inc.start),
            None,
        )
        if joined is not None:
            joined.members.append(e)
            joined.sort()
            known_by_event[e.key] = joined
            touched[joined.id] = joined
            continue
        fresh.append(e)
    for inc in group_incidents(fresh, group_by, slack, scope):
        loud = [m for m in inc.members if not any(s.matches(m) for s in silences)]
        if loud:
            inc.notified = True
            plan.opened.append(inc)
        else:
            inc.silenced = True
            plan.silenced.append(inc)
    plan.grown = list(touched.values())
    end = _ts(window_end)
    for inc in [*plan.opened, *plan.silenced, *known]:
        if inc.state == "open" and inc.end + slack_td < end:
            inc.state = "closed"
            (plan.closed_quietly if inc.silenced else plan.closed).append(inc)
    return plan


def loud_members(incident: Incident, silences: Sequence[Silence]) -> list[AlertEvent]:
    """The members a notification lists: those not inside a silence."""
    return [m for m in incident.members if not any(s.matches(m) for s in silences)]


def notification(
    incident: Incident,
    what: str,
    model_name: str,
    model_version: str,
    report: str | None,
    silences: Sequence[Silence] = (),
) -> dict[str, Any]:
    """The JSON document a notification carries (the webhook body and the Prefect event
    payload)."""
    members = loud_members(incident, silences) or incident.members
    lines = [
        f"- {m.series} ({m.kind}{', ' + m.detail if m.detail else ''}) "
        f"{m.start:%H:%M}-{m.end:%H:%M} UTC, severity {m.severity:.1f}"
        for m in members[:20]
    ]
    if len(members) > 20:
        lines.append(f"- ... and {len(members) - 20} more")
    verb = "opened" if what == OPENED else "closed"
    text = f"Cricket incident {verb}: {incident.title}\n" + "\n".join(lines)
    answerable = [m for m in members if m.kind == "anomaly"]
    if answerable:  # how the on-call says "normal" or "real problem": the next retrain learns it
        text += ("\nanswer: cricket feedback normal|anomaly "
                 f"'{event_ref(answerable[0].series, answerable[0].start)}'")
    if report:
        text += f"\nreport: {report}"
    return {
        "event": what,
        "incident": incident.id,
        "title": incident.title,
        "group": incident.group,
        "start": incident.start.isoformat(),
        "end": incident.end.isoformat(),
        "severity": round(float(incident.severity), 3),
        "score": round(float(incident.score), 3),
        "series": [m.series for m in members],
        "members": [{**m.to_dict(), **({"ref": event_ref(m.series, m.start)}
                                          if m.kind == "anomaly" else {})} for m in members],
        "model_name": model_name,
        "model_version": str(model_version),
        "report": report,
        "text": text,
    }
