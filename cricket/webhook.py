"""The built-in alert route: POST a JSON document to ``CRICKET_ALERT_WEBHOOK_URL``.

For people without Prefect automations. One POST per notification, with a timeout and
retries (backoff) on connection errors, 429 and 5xx. The URL is a secret (it often
carries a token: Slack and Teams incoming webhooks do): it is never logged, never put
in an error message, an artifact or a report; messages say "the alert webhook".
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

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
        # urllib, not httpx: httpx logs every request's URL at INFO, and this one is secret
        req = urllib.request.Request(
            url, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "cricket-alerts"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310
                return int(r.status)
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
            if status == 429 or status >= 500:
                last = f"HTTP {status}"
                continue
            raise AlertDeliveryError(
                f"the alert webhook (CRICKET_ALERT_WEBHOOK_URL) refused the notification "
                f"with HTTP {status}: check the URL and what the receiver expects"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            last = type(exc).__name__  # never str(exc): it may hold the URL
            continue
    raise AlertDeliveryError(
        f"the alert webhook (CRICKET_ALERT_WEBHOOK_URL) did not answer after "
        f"{retries + 1} attempts ({last}): check that the receiver is up; the incident "
        "was not marked as announced, so a re-run of the window tries again"
    )
