"""Alert: turn a scoring run's events into incidents, announce each new one once, and
collect the labels and silences the report and the run summary show.

    out = alert_window(settings, scored, start, end, version, report_link, page=True)

Announcing an incident means: a Prefect event ``cricket.anomaly.opened`` (and
``cricket.anomaly.closed`` when it ends), which Prefect automations route to the users'
notification blocks (``cricket alerts setup``), and, when ``CRICKET_ALERT_WEBHOOK_URL``
is set, one JSON POST to it. The durable alert state (``cricket_incident``) makes it
once per problem; ``page=False`` (a plain backfill) announces nothing and records
nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from cricket.tasks.common import IO_TASK
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from cricket.alerts import (
    CLOSED,
    OPENED,
    AlertPlan,
    Incident,
    Silence,
    alert_events,
    missing_data_events,
    notification,
    plan_alerts,
)
from cricket.config import Settings
from cricket.feedback import Label
from cricket.influx.answers import AnswerStore
from cricket.report import md_escape
from cricket.webhook import AlertDeliveryError, post_json

#: incidents whose first event started this long before the window are still matched
LOOKBACK = timedelta(days=7)
_NS = uuid.UUID("6f1c4a52-3c2e-4d4e-9a43-2a8c6b1f0c15")


#: members (and series) an incident's Prefect event names; the rest are counted. Prefect
#: refuses an event over 1.5 MB: a fleet-wide incident of 5,080 series made a 2 MB event,
#: and the hourly run failed after every score was written. The webhook gets them all.
EVENT_MEMBERS = 50


def event_payload(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with at most ``EVENT_MEMBERS`` members and series (the most severe first,
    as the document orders them) and ``members_total`` / ``series_total`` when cut."""
    members, series = doc.get("members") or [], doc.get("series") or []
    if len(members) <= EVENT_MEMBERS and len(series) <= EVENT_MEMBERS:
        return doc
    return {**doc, "members": members[:EVENT_MEMBERS], "series": series[:EVENT_MEMBERS],
            "members_total": len(members), "series_total": len(series)}


def prefect_event(incident: Incident, what: str, doc: dict[str, Any]) -> Any:
    """Emit ``what`` about ``incident`` to Prefect (the resource is the incident; the
    member series and the model version are related resources). The event id is
    derived from the incident, so the same announcement is one event. Returns the event
    (None where Prefect emits none, e.g. without an API)."""
    doc = event_payload(doc)
    related = [
        {"prefect.resource.id": f"cricket.series.{m['series']}",
         "prefect.resource.role": "series", "prefect.resource.name": m["series"]}
        for m in doc["members"]
    ]
    related.append({
        "prefect.resource.id": f"cricket.model.{doc['model_name']}.{doc['model_version']}",
        "prefect.resource.role": "model",
        "prefect.resource.name": f"{doc['model_name']} version {doc['model_version']}",
    })
    return emit_event(
        event=what,
        resource={
            "prefect.resource.id": f"cricket.incident.{incident.id}",
            "prefect.resource.name": incident.title,
            "cricket.group": incident.group,
            "cricket.severity": f"{incident.severity:.1f}",
        },
        related=related,
        payload=doc,
        id=uuid.uuid5(_NS, f"{incident.id}:{what}"),
    )


def _tags_of(key: str) -> dict[str, str]:
    from cricket.series import SeriesKey

    try:
        return SeriesKey.parse(key).tag_dict
    except Exception:  # noqa: BLE001 - a key that does not parse is grouped on its own
        return {}


def _overlaps(a0: Any, a1: Any, b0: Any, b1: Any) -> bool:
    return pd.Timestamp(a0) < pd.Timestamp(b1) and pd.Timestamp(a1) >= pd.Timestamp(b0)


def answer_rows(
    labels: Sequence[Label], silences: Sequence[Silence], start: datetime, end: datetime,
    series: set[str] | None,
) -> list[dict[str, str]]:
    """Rows for the report and the run summary: silences that overlap the window, and
    labels on the scored series that overlap it."""
    rows = []
    for s in silences:
        if _overlaps(s.start, s.end, start, end):
            rows.append({
                "what": "silence" + (" (removed)" if s.removed else ""), "series": s.scope,
                "from": f"{s.start:%Y-%m-%d %H:%M}", "to": f"{s.end:%Y-%m-%d %H:%M}",
                "by": s.by, "why": s.reason, "when": f"{s.created:%Y-%m-%d %H:%M}",
            })
    for lab in labels:
        if (series is None or lab.series in series) and _overlaps(lab.start, lab.end, start, end):
            rows.append({
                "what": f"label: {lab.label}", "series": lab.series,
                "from": f"{lab.start:%Y-%m-%d %H:%M}", "to": f"{lab.end:%Y-%m-%d %H:%M}",
                "by": lab.by, "why": lab.reason, "when": f"{lab.created:%Y-%m-%d %H:%M}",
            })
    return rows


def _announce(
    settings: Settings, plan: AlertPlan, silences: Sequence[Silence], version: str,
    report: str | None,
) -> tuple[list[Incident], list[str]]:
    """Emit and POST every opened and closed incident; returns the incidents whose
    record may be written (announced, or nothing to announce) and delivery errors."""
    log = get_run_logger()
    url = settings.alert_webhook_url.get_secret_value() if settings.alert_webhook_url else None
    failed: set[str] = set()
    errors: list[str] = []
    for inc in plan.opened:
        doc = notification(inc, OPENED, settings.model_name, version, report, silences)
        if url:
            try:
                post_json(url, doc, settings.alert_webhook_timeout_s, settings.alert_webhook_retries)
            except AlertDeliveryError as exc:
                failed.add(inc.id)
                errors.append(str(exc))
                log.error("incident %s: %s", inc.id, exc)
                continue
        prefect_event(inc, OPENED, doc)
        log.warning("incident opened: %s", inc.title)
    for inc in plan.closed:
        if inc.id in failed:
            continue
        prefect_event(inc, CLOSED, notification(inc, CLOSED, settings.model_name, version,
                                                report, silences))
        log.info("incident closed: %s", inc.title)
    return [i for i in plan.changed if i.id not in failed], errors


@task(name="alert", timeout_seconds=300, retries=1, retry_delay_seconds=5,
      cache_policy=IO_TASK["cache_policy"], persist_result=False)
def alert_window(
    settings: Settings,
    scored: Sequence[Any],
    start: datetime,
    end: datetime,
    version: str,
    report: str | None,
    page: bool = True,
    missing: Sequence[Any] = (),
) -> dict[str, Any]:
    """Announce the new incidents among ``scored``'s events and the ``missing``-data
    findings (anything with ``key`` and ``severity``) once per problem when ``page``;
    always return the labels and silences that apply to the window."""
    with AnswerStore(settings) as store:
        silences = store.silences(include_removed=True)
        active = [s for s in silences if not s.removed]
        labels = store.labels()
        series = {str(r.key) for r in scored}
        out: dict[str, Any] = {
            "answers": answer_rows(labels, silences, start, end, series),
            "incidents": [], "opened": 0, "closed": 0, "silenced": 0, "repeated_events": 0,
            "paged": bool(page),
        }
        if not page:
            return out
        known = store.incidents(pd.Timestamp(start) - LOOKBACK, pd.Timestamp(end) + LOOKBACK)
        events = alert_events(scored) + missing_data_events(missing, start, end, _tags_of)
        plan = plan_alerts(
            events, known, active, settings.alert_group_by,
            settings.alert_slack, end, scope=f"{settings.score_database}|{settings.model_name}",
        )
        keep, errors = _announce(settings, plan, active, version, report)
        store.save_incidents(keep, str(version))
    out.update(
        incidents=[f"{i.title} [{i.id}]" for i in plan.opened],
        opened=len(plan.opened), closed=len(plan.closed), silenced=len(plan.silenced),
        repeated_events=plan.repeated, plan=plan.summary(),
    )
    if plan.opened or plan.silenced or plan.closed or out["answers"]:
        lines = ["# Cricket alerts", ""]
        lines += [f"- opened: {md_escape(i.title)} (incident {i.id})" for i in plan.opened]
        lines += [f"- silenced: {md_escape(i.title)} (incident {i.id})" for i in plan.silenced]
        lines += [f"- closed: {md_escape(i.title)} (incident {i.id})" for i in plan.closed]
        lines += [f"- {md_escape(r['what'])} on {md_escape(r['series'])} {r['from']} to "
                  f"{r['to']} by {md_escape(r['by'])}: {md_escape(r['why'])}"
                  for r in out["answers"]]
        create_markdown_artifact("\n".join(lines) + "\n", key="cricket-alerts",
                                 description="Incidents announced, labels and silences")
    if errors:
        raise AlertDeliveryError(errors[0])
    return out


@task(name="read-labels", timeout_seconds=120, **IO_TASK)
def read_labels(settings: Settings) -> list[Label]:
    """Every label people gave (the retrain learns from them)."""
    with AnswerStore(settings) as store:
        labels = store.labels()
    if labels:
        get_run_logger().info(
            "%d labels: %d normal, %d anomaly", len(labels),
            sum(lab.label == "normal" for lab in labels),
            sum(lab.label == "anomaly" for lab in labels),
        )
    return labels
