"""`cricket alerts setup | remove`: the Prefect automation that routes incidents.

    cricket alerts setup --block slack-webhook/ops     # a notification block you have
    cricket alerts setup --webhook-url https://...     # or a plain webhook

Idempotent: running it again updates the one automation ``cricket-alerts``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cricket.cli import app
from cricket.cli.common import console

alerts_app = typer.Typer(
    name="alerts",
    help="Route Cricket's incidents through a Prefect automation to your notification block.",
    no_args_is_help=True,
)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("setup")
def setup(
    block: Annotated[
        str | None,
        typer.Option(help="notification block TYPE/NAME (as `prefect block ls` lists it)"),
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option(help="or: POST notifications to this URL (saved as a custom-webhook block)",
                     envvar="CRICKET_ALERT_AUTOMATION_URL"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Create (or update) the automation: each new incident -> one notification."""
    from cricket.cli.common import one_line_errors, quiet_prefect
    from cricket.deployments.automation import setup_alerts

    quiet_prefect()
    with one_line_errors():
        out = setup_alerts(block=block, webhook_url=webhook_url)
    if as_json:
        print(json.dumps(out))
        return
    verb = "created" if out["created"] else "updated"
    console.print(
        f"automation {out['name']!r} {verb} ({out['automation']}): every "
        "cricket.anomaly.opened event sends one notification through "
        f"{'the webhook block cricket-alerts' if webhook_url else block}",
        markup=False,
    )


@alerts_app.command("remove")
def remove() -> None:
    """Delete the automation (the notification block stays)."""
    from cricket.cli.common import quiet_prefect
    from cricket.deployments.automation import remove_alerts

    quiet_prefect()
    n = remove_alerts()
    console.print(f"removed {n} automation(s) named 'cricket-alerts'")
