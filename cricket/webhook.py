"""The built-in alert route: POST a JSON document to ``CRICKET_ALERT_WEBHOOK_URL``.

For people without Prefect automations. One POST per notification, with a timeout and
retries (backoff) on connection errors, 429 and 5xx. The URL is a secret (it often
carries a token: Slack and Teams incoming webhooks do): it is never logged, never put
in an error message, an artifact or a report; messages say "the alert webhook".
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from cricket.errors import CricketError


class AlertDeliveryError(CricketError):
    """The alert webhook did not take a notification after its retries."""


def post_json(
    url: str,
    document: dict[str, Any],
    timeout_s: float = 10.0,
    retries: int = 3,
    backoff_s: float = 0.5,
) -> int:
    """POST ``document`` as JSON to ``url``; returns the HTTP status. Retries connection
    errors, timeouts, 429 and 5xx; raises AlertDeliveryError (without the URL) when
    every attempt failed or the receiver refused it (4xx)."""
    body = json.dumps(document, default=str).encode()
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(backoff_s * 2 ** (attempt - 1), 10.0))
        try:
            r = httpx.post(
                url, content=body, timeout=timeout_s,
                headers={"Content-Type": "application/json", "User-Agent": "cricket-alerts"},
            )
        except httpx.HTTPError as exc:
            last = type(exc).__name__  # never str(exc): it may hold the URL
            continue
        if r.status_code == 429 or r.status_code >= 500:
            last = f"HTTP {r.status_code}"
            continue
        if r.status_code >= 400:
            raise AlertDeliveryError(
                f"the alert webhook (CRICKET_ALERT_WEBHOOK_URL) refused the notification "
                f"with HTTP {r.status_code}: check the URL and what the receiver expects"
            )
        return r.status_code
    raise AlertDeliveryError(
        f"the alert webhook (CRICKET_ALERT_WEBHOOK_URL) did not answer after "
        f"{retries + 1} attempts ({last}): check that the receiver is up; the incident "
        "was not marked as announced, so a re-run of the window tries again"
    )
