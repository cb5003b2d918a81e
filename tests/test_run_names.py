"""Flow runs are named after what they do, so the Prefect UI's run list reads as a log
("score 2026-12-02 03:00 to 04:00") instead of "ingenious-leopard"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cricket.flows.runtime import describe_run, run_name
from prefect import flow
from prefect.client.orchestration import get_client


def test_a_score_run_is_named_after_the_window_it_scores() -> None:
    at = datetime(2026, 12, 2, 4, 5, tzinfo=UTC)
    assert describe_run("score", {"at": at, "window": timedelta(hours=1)}) == (
        "score 2026-12-02 03:00 to 04:00"
    )
    # a deployment passes ISO strings; a pinned version shows at the end
    assert describe_run(
        "score", {"at": "2026-12-02T04:05:00Z", "window": "PT30M", "model_version": "7"}
    ) == "score 2026-12-02 03:30 to 04:00 v7"


def test_backfill_and_retrain_runs_name_their_range() -> None:
    params = {"start": "2026-12-01T16:00:00+00:00", "end": datetime(2026, 12, 2, 3, tzinfo=UTC)}
    assert describe_run("backfill", params) == "backfill 2026-12-01 16:00 to 2026-12-02 03:00"
    assert describe_run("points-backfill", {**params, "model_version": "2"}) == (
        "points-backfill 2026-12-01 16:00 to 2026-12-02 03:00 v2"
    )
    assert describe_run("retrain", {"end": "2026-12-01T16:00:00+00:00"}) == (
        "retrain to 2026-12-01 16:00"
    )


@flow(flow_run_name=run_name("backfill"))
def _named_backfill(start: datetime, end: datetime) -> str:
    return "ran"


@flow(flow_run_name=run_name("backfill"))
def _badly_named_backfill(start: str, end: str) -> str:
    return "ran"


async def _run_name(flow_run_id) -> str:  # noqa: ANN001
    async with get_client() as client:
        return (await client.read_flow_run(flow_run_id)).name


@pytest.mark.usefixtures("prefect_api")
def test_a_real_run_carries_the_name_and_a_bad_parameter_never_fails_the_run() -> None:
    import asyncio

    start = datetime(2026, 12, 1, 16, tzinfo=UTC)
    state = _named_backfill(start, start + timedelta(hours=11), return_state=True)
    assert state.is_completed()
    name = asyncio.run(_run_name(state.state_details.flow_run_id))
    assert name == "backfill 2026-12-01 16:00 to 2026-12-02 03:00"

    state = _badly_named_backfill("not a time", "nor this", return_state=True)
    assert state.is_completed() and state.result() == "ran"
    name = asyncio.run(_run_name(state.state_details.flow_run_id))
    assert "backfill" not in name and "-" in name  # Prefect's generated adjective-animal
