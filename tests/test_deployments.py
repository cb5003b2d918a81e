"""The deployments: prefect.yaml read by Prefect's own loader, registered by the real
`prefect deploy --all`, the same deployments built in code by deployments/serve.py, and a
served deployment run end to end against a Prefect API, InfluxDB and MLflow.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from serve_support import own_prefect_api, serve_env, served, tail, wait_for_deployments

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
BIN = Path(sys.executable).parent

EXPECTED: dict[str, dict[str, Any]] = {
    "nightly-retrain": {
        "flow": "nightly-retrain",
        "entrypoint": "cricket.flows.retrain:nightly_retrain",
        "cron": "0 2 * * *",
        "limit": 1,
        "strategy": "ENQUEUE",
        "tags": {"cricket", "retrain", "nightly"},
    },
    "hourly-score": {
        "flow": "hourly-score",
        "entrypoint": "cricket.flows.score:hourly_score",
        "cron": "5 * * * *",
        "limit": 1,
        "strategy": "CANCEL_NEW",
        "tags": {"cricket", "score", "hourly"},
    },
    "backfill": {
        "flow": "backfill",
        "entrypoint": "cricket.flows.backfill:backfill",
        "cron": None,
        "limit": None,
        "strategy": None,
        "tags": {"cricket", "score", "backfill"},
    },
    "points-score": {
        "flow": "points-score",
        "entrypoint": "cricket.flows.points:points_score",
        "cron": "10 * * * *",
        "limit": 1,
        "strategy": "CANCEL_NEW",
        "tags": {"cricket", "score", "points"},
    },
    "points-backfill": {
        "flow": "points-backfill",
        "entrypoint": "cricket.flows.points:points_backfill",
        "cron": None,
        "limit": None,
        "strategy": None,
        "tags": {"cricket", "score", "points", "backfill"},
    },
}


def _flow_for(entrypoint: str):  # noqa: ANN202
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(entrypoint)


def _load_yaml() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """prefect.yaml through the loader `prefect deploy` uses (validated by its models)."""
    from prefect.cli.deploy._config import (
        _load_deploy_configs_and_actions,
        _merge_with_default_deploy_config,
    )
    from rich.console import Console

    console = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - closed with the test process
    configs, actions = _load_deploy_configs_and_actions(PREFECT_YAML, console=console)
    return {c["name"]: _merge_with_default_deploy_config(c) for c in configs}, actions


def _yaml_schedules(config: dict[str, Any]) -> list[tuple[str, str, bool]]:
    from prefect.cli.deploy._schedules import _construct_schedules
    from rich.console import Console

    built = _construct_schedules(
        config, {}, console=Console(file=open(os.devnull, "w")), is_interactive=lambda: False  # noqa: SIM115
    )
    return [(s["schedule"].cron, s["schedule"].timezone, s.get("active", True)) for s in built or []]


# --------------------------------------------------------------------------------------
# prefect.yaml, read the way `prefect deploy` reads it
# --------------------------------------------------------------------------------------
def test_prefect_yaml_loads_through_prefect_loader() -> None:
    configs, actions = _load_yaml()
    assert set(configs) == set(EXPECTED), "prefect.yaml must define exactly the expected deployments"

    # Runs start in the operator's project folder, resolved on the worker at run time.
    assert actions["pull"] == [
        {
            "prefect.deployments.steps.set_working_directory": {
                "directory": "{{ $CRICKET_PROJECT_DIR }}"
            }
        }
    ]
    assert actions["build"] == [] and actions["push"] == []

    for name, want in EXPECTED.items():
        cfg = configs[name]
        assert cfg["entrypoint"] == want["entrypoint"]
        assert set(cfg["tags"]) == want["tags"]
        assert cfg["work_pool"]["name"] == "cricket-process"
        schedules = _yaml_schedules(cfg)
        if want["cron"] is None:
            assert schedules == [], f"{name} must have no schedule"
        else:
            assert schedules == [(want["cron"], "UTC", True)]
        if want["limit"] is None:
            assert cfg["concurrency_limit"] is None
        else:
            assert cfg["concurrency_limit"] == {
                "limit": want["limit"],
                "collision_strategy": want["strategy"],
            }


def test_prefect_yaml_parameters_are_valid_for_the_flows() -> None:
    """Default parameters pass the flow's own validation (what a run does first)."""
    configs, _ = _load_yaml()
    # backfill's start and end have no default: they are entered when a run is created.
    assert not {"start", "end"} & set(configs["backfill"]["parameters"])
    assert not {"start", "end"} & set(configs["points-backfill"]["parameters"])
    window = {"start": "2024-05-01T00:00:00Z", "end": "2024-05-02T00:00:00Z"}
    entered = {"backfill": window, "points-backfill": window}
    params = {
        n: _flow_for(c["entrypoint"]).validate_parameters({**c["parameters"], **entered.get(n, {})})
        for n, c in configs.items()
    }

    retrain = params["nightly-retrain"]
    assert retrain["train_window"] == timedelta(days=7)
    assert retrain["holdout"] == timedelta(hours=24)
    assert retrain["end"] is None
    assert retrain["selector"].every == timedelta(seconds=10)

    score = params["hourly-score"]
    assert score["window"] == timedelta(hours=1)
    assert score["at"] is None and score["model_version"] is None

    assert params["backfill"]["chunk"] == timedelta(hours=1)
    assert params["backfill"]["selector"] == retrain["selector"] == score["selector"]


def test_prefect_yaml_holds_no_credentials() -> None:
    text = PREFECT_YAML.read_text().lower()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for word in ("token:", "password:", "secret:", "api_key"):
            assert word not in line, f"credential-looking key in prefect.yaml: {line.strip()}"


# --------------------------------------------------------------------------------------
# deployments/serve.py builds the same deployments in code
# --------------------------------------------------------------------------------------
def _runner_summary(dep: Any) -> dict[str, Any]:
    strategy = dep.concurrency_options.collision_strategy.value if dep.concurrency_options else None
    return {
        # module path a.b.c.func -> the entrypoint a.b.c:func
        "entrypoint": ":".join(dep.entrypoint.rsplit(".", 1)),
        "schedules": [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules or []],
        "limit": dep.concurrency_limit,
        "strategy": strategy,
        "tags": set(dep.tags),
        "parameters": dep.parameters,
    }


def test_serve_builds_the_same_deployments_as_prefect_yaml() -> None:
    from cricket.deployments.serve import build_deployments

    configs, _ = _load_yaml()
    built = {d.name: d for d in build_deployments()}
    assert set(built) == set(configs)
    for name, dep in built.items():
        cfg = configs[name]
        got = _runner_summary(dep)
        assert dep.flow_name == EXPECTED[name]["flow"]
        assert got["entrypoint"] == cfg["entrypoint"]
        assert got["schedules"] == _yaml_schedules(cfg)
        assert got["limit"] == EXPECTED[name]["limit"]
        assert got["strategy"] == EXPECTED[name]["strategy"]
        assert got["tags"] == set(cfg["tags"])
        assert got["parameters"] == cfg["parameters"]
        assert dep.work_pool_name is None, "served deployments need no work pool"

    unscheduled = {d.name: d for d in build_deployments(schedules=False)}
    assert all(not d.schedules for d in unscheduled.values())
    assert unscheduled["hourly-score"].concurrency_limit == 1


def test_cricket_serve_is_registered() -> None:
    from typer.testing import CliRunner

    from cricket.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "--no-schedules" in result.output and "--limit" in result.output


# --------------------------------------------------------------------------------------
# A real Prefect API: `prefect deploy --all`, then the served deployments
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """A Prefect API server of this module's own, so its deployments meet no other test's."""
    with own_prefect_api() as url:
        yield url


def _server_summary(dep: Any) -> dict[str, Any]:
    gcl = dep.global_concurrency_limit
    opts = dep.concurrency_options
    return {
        "schedules": sorted(
            (s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules
        ),
        "limit": gcl.limit if gcl else None,
        "strategy": opts.collision_strategy.value if opts else None,
        "tags": set(dep.tags),
        "parameters": dep.parameters,
    }


def _read_deployments(names: list[str]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {
            n: client.read_deployment_by_name(f"{EXPECTED[n]['flow']}/{n}") for n in names
        }


def test_prefect_deploy_all_registers_the_deployments(prefect_api: str, tmp_path: Path) -> None:
    """The real CLI, run from deployments/, creates what the YAML says on the server."""
    env = serve_env(prefect_api, tmp_path)
    pool = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "work-pool", "create", "cricket-process",
         "--type", "process"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
        cwd=ROOT / "deployments", env=env, capture_output=True, text=True, timeout=180,
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

    deployed = _read_deployments(list(EXPECTED))
    configs, _ = _load_yaml()
    for name, dep in deployed.items():
        want = EXPECTED[name]
        got = _server_summary(dep)
        assert dep.work_pool_name == "cricket-process"
        assert dep.entrypoint == want["entrypoint"]
        assert dep.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {
                "directory": "{{ $CRICKET_PROJECT_DIR }}"}}
        ], "the project folder must be resolved on the worker, not baked in at deploy time"
        assert got["schedules"] == ([] if want["cron"] is None else [(want["cron"], "UTC", True)])
        assert got["limit"] == want["limit"]
        assert got["strategy"] == want["strategy"]
        assert got["tags"] == want["tags"]
        assert got["parameters"] == configs[name]["parameters"]

    # The served deployments (deployments/serve.py) register the same settings.
    from cricket.deployments.serve import build_deployments
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for dep in deployed.values():  # start clean: an update would keep the work pool
            client.delete_deployment(dep.id)
    for dep in build_deployments():
        dep.apply()
    served = _read_deployments(list(EXPECTED))
    for name in EXPECTED:
        assert served[name].work_pool_name is None
        assert _server_summary(served[name]) == _server_summary(deployed[name]), name


# --------------------------------------------------------------------------------------
# End to end: `cricket serve` + run_deployment -> scores in InfluxDB
# --------------------------------------------------------------------------------------
def _fleet_lines(end: datetime, hours: float, every_s: int = 10) -> list[str]:
    """Three hosts of a smooth periodic waveform (period 320 s) up to ``end``; the last
    host gets a burst of square wave in the final 20 minutes."""
    n = int(hours * 3600 / every_s)
    t0 = int(end.timestamp()) - n * every_s
    lines = []
    for h, host in enumerate(["cricket001", "cricket002", "cricket003"]):
        for i in range(n):
            ts = t0 + i * every_s
            v = 10 * math.sin(2 * math.pi * i / 32 + h) + 0.3 * math.sin(i * 1.7)
            if host == "cricket003" and n - 120 <= i < n - 90:
                v = 25.0 if (i // 4) % 2 else -25.0
            lines.append(f"waveform,host={host} value={v:.4f} {ts * 1_000_000_000}")
    return lines


@pytest.mark.slow
def test_served_deployment_run_leaves_scores_in_influx(
    prefect_api: str, influx_settings: Any, mlflow_settings: Any, tmp_path: Path
) -> None:
    from prefect.deployments import run_deployment

    from cricket.influx.influxql import InfluxQLClient, InfluxQLSource

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with InfluxQLClient(influx_settings) as client:
        client.write_lines(_fleet_lines(end, hours=8), database=influx_settings.influx_database)

    env = serve_env(
        prefect_api,
        tmp_path / "prefect-home",
        CRICKET_INFLUX_URL=influx_settings.influx_url,
        CRICKET_INFLUX_SOURCE="influxql",
        CRICKET_INFLUX_DATABASE=influx_settings.influx_database,
        CRICKET_STATE_DIR=str(mlflow_settings.state_dir),
        CRICKET_MLFLOW_TRACKING_URI=mlflow_settings.tracking_uri,
        CRICKET_MODEL_NAME=mlflow_settings.model_name,
        CRICKET_REPORT_DIR=str(tmp_path / "reports"),
    )
    (tmp_path / "prefect-home").mkdir()
    log_path = tmp_path / "serve.log"
    with served(tmp_path, env, log_path) as proc:
        names = [f"{EXPECTED[n]['flow']}/{n}" for n in ("nightly-retrain", "hourly-score")]
        wait_for_deployments(names, proc, log_path, timeout=120)
        selector = {"measurement": "waveform", "field": "value", "group_by": ["host"],
                    "every": "PT10S"}
        retrain = run_deployment(
            "nightly-retrain/nightly-retrain",
            parameters={
                "selector": selector,
                "spec": {"n_clusters": 16, "segment_len": 32, "train_slide": 4},
                "train_window": "PT6H",
                "holdout": "PT1H",
                "end": (end - timedelta(hours=1)).isoformat(),
            },
            timeout=300,
        )
        assert retrain.state is not None and retrain.state.is_completed(), (
            f"retrain ended {retrain.state}; serve log:\n{tail(log_path)}"
        )
        score = run_deployment(
            "hourly-score/hourly-score",
            parameters={"selector": selector, "window": "PT1H", "at": end.isoformat()},
            timeout=300,
        )
        assert score.state is not None and score.state.is_completed(), (
            f"score ended {score.state}; serve log:\n{tail(log_path)}"
        )

    with InfluxQLSource(influx_settings) as source:
        scores = source.read_scores(
            "waveform.value{host=cricket003}", end - timedelta(hours=1), end
        )
    assert len(scores) > 0, "the served hourly-score run wrote no scores"
    assert scores.index.min() >= end - timedelta(hours=1) - timedelta(minutes=10)
    assert scores["model_version"].nunique() == 1
    assert scores["anomalous"].astype(bool).any(), "the square-wave burst was not flagged"

