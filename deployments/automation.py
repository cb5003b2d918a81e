"""The Prefect automation that turns Cricket's incident events into notifications:
deployment configuration as code, created by ``cricket alerts setup`` and idempotent
(running it again updates the one automation ``cricket-alerts``, never adds a second).

The automation fires on every ``cricket.anomaly.opened`` event (one per incident) and
sends a notification through a notification block: one the user already has (Slack,
PagerDuty, Teams, email, ...: ``--block slack-webhook/ops``), or a custom-webhook block
``cricket-alerts`` that this module saves from a URL (the URL is kept in the block's
secret values, so the Prefect UI masks it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from cricket.alerts import OPENED
from cricket.errors import CricketError

AUTOMATION_NAME = "cricket-alerts"
WEBHOOK_BLOCK_NAME = "cricket-alerts"
SUBJECT = "Cricket: {{ event.payload.title }}"
BODY = "{{ event.payload.text }}"


class AlertSetupError(CricketError):
    """The automation could not be set up as asked; the message says what to do."""


def webhook_block(url: str, name: str = WEBHOOK_BLOCK_NAME) -> UUID:
    """Save (or overwrite) a custom-webhook notification block that POSTs
    ``{"subject", "text"}`` JSON to ``url``; returns its block document id."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    if not url.startswith(("http://", "https://")):
        raise AlertSetupError("the webhook URL must start with http:// or https://")
    block = CustomWebhookNotificationBlock(
        name=name,
        url="{{url}}",
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        secrets={"url": url},
    )
    return block.save(name, overwrite=True)


def existing_block(slug: str) -> UUID:
    """The id of a notification block the user already has, named ``TYPE/NAME`` (as
    ``prefect block ls`` shows it, e.g. ``slack-webhook/ops``)."""
    from prefect.blocks.core import Block

    if "/" not in slug:
        raise AlertSetupError(
            f"{slug!r} does not name a block: give TYPE/NAME as `prefect block ls` lists "
            "it, e.g. slack-webhook/ops"
        )
    try:
        block = Block.load(slug)
    except ValueError as exc:
        raise AlertSetupError(
            f"no block {slug!r} on this Prefect server: create it in the UI (Blocks) or "
            "give --webhook-url"
        ) from exc
    block_id = getattr(block, "_block_document_id", None)
    if block_id is None or not hasattr(block, "notify"):
        raise AlertSetupError(f"block {slug!r} is not a notification block (it cannot notify)")
    return block_id


def setup_alerts(
    block: str | None = None, webhook_url: str | None = None, name: str = AUTOMATION_NAME
) -> dict[str, Any]:
    """Create or update the automation ``name``; returns its id, the block id and
    whether it was created or updated."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification
    from prefect.client.orchestration import get_client

    if bool(block) == bool(webhook_url):
        raise AlertSetupError(
            "say where notifications go: --block TYPE/NAME (a notification block you have) "
            "or --webhook-url URL"
        )
    block_id = webhook_block(webhook_url) if webhook_url else existing_block(block or "")
    automation = Automation(
        name=name,
        description="Cricket: one notification per new incident (cricket.anomaly.opened)",
        trigger=EventTrigger(
            expect={OPENED},
            match={"prefect.resource.id": "cricket.incident.*"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    )
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(name=name)
    if found:
        automation.id = found[0].id
        automation.update()
        for extra in found[1:]:  # an older duplicate: keep one
            Automation(**extra.model_dump()).delete()
        created = False
    else:
        automation = automation.create()
        created = True
    return {"automation": str(automation.id), "block": str(block_id), "created": created,
            "name": name}


def remove_alerts(name: str = AUTOMATION_NAME) -> int:
    """Delete the automation(s) named ``name``; returns how many."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(name=name)
    for a in found:
        Automation(**a.model_dump()).delete()
    return len(found)
