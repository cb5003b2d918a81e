"""The production stack file: `docker compose config` where the Compose plugin exists;
everywhere, that compose.yaml, .env.example, the Dockerfile and docs/deployments.md agree
(no Docker engine runs in CI, so the stack itself is never started here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose.yaml"
ENV_EXAMPLE = INFRA / ".env.example"
DOCKERFILE = INFRA / "Dockerfile"
DOCS = ROOT / "docs" / "deployments.md"

SERVICES = {"influxdb", "prefect-db", "prefect-server", "prefect-worker", "mlflow-db", "mlflow"}
# ${VAR}, ${VAR:-default}, ${VAR:?error}, ${VAR-default}
VAR_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example line is not KEY=value: {line!r}"
        values[key.strip()] = value.strip()
    return values


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution (the subset this file uses)."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":?", "?") and not value:
            raise AssertionError(f"required variable {name} is unset: {arg}")
        if op == ":-" and not value:
            return arg or ""
        if op == "-" and value is None:
            return arg or ""
        return value or ""

    return VAR_REF.sub(sub, text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(_interpolate(COMPOSE.read_text(), _env_example()))


def _has_compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return r.returncode == 0


@pytest.mark.skipif(not _has_compose_plugin(), reason="no `docker compose` plugin here; "
                    "the file is checked by the other tests in this module")
def test_docker_compose_config_accepts_the_file() -> None:
    r = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_every_variable_is_in_env_example_and_documented() -> None:
    referenced = {m.group(1) for m in VAR_REF.finditer(COMPOSE.read_text())}
    example = _env_example()
    docs = DOCS.read_text()
    assert referenced, "compose.yaml references no variables?"
    assert referenced - set(example) == set(), "referenced but missing from .env.example"
    assert set(example) - referenced == set(), ".env.example has variables compose never uses"
    undocumented = {v for v in example if f"`{v}`" not in docs}
    assert undocumented == set(), "variables not explained in docs/deployments.md"
    # Secrets are required (${VAR:?...}) so the stack never starts with a default password.
    for secret in ("INFLUXDB_ADMIN_PASSWORD", "INFLUXDB_ADMIN_TOKEN", "PREFECT_DB_PASSWORD",
                   "MLFLOW_DB_PASSWORD", "CRICKET_INFLUX_TOKEN"):
        assert re.search(r"\$\{" + secret + r":\?", COMPOSE.read_text()), secret
        assert "CHANGE-ME" in example[secret]


def test_required_secrets_are_enforced() -> None:
    env = _env_example()
    del env["INFLUXDB_ADMIN_TOKEN"]
    with pytest.raises(AssertionError, match="INFLUXDB_ADMIN_TOKEN"):
        _interpolate(COMPOSE.read_text(), env)


def test_services_healthchecks_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond["condition"] == "service_healthy"
        for mount in svc.get("volumes", []):
            source = mount.split(":", 1)[0]
            assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
    docs = DOCS.read_text()
    assert all(f"`{s}`" in docs for s in SERVICES), "every service is named in the docs"


def test_influxdb_is_initialised(compose: dict[str, Any]) -> None:
    env = compose["services"]["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        assert env[f"DOCKER_INFLUXDB_INIT_{key}"], key
    assert compose["services"]["influxdb"]["image"].startswith("influxdb:2")


def test_prefect_server_uses_postgres(compose: dict[str, Any]) -> None:
    env = compose["services"]["prefect-server"]["environment"]
    url = env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://") and "@prefect-db:5432/" in url
    assert "prefect-db" in compose["services"]["prefect-server"]["depends_on"]


def test_worker_deploys_and_runs_the_process_pool(compose: dict[str, Any]) -> None:
    worker = compose["services"]["prefect-worker"]
    assert worker["build"]["dockerfile"] == "infra/Dockerfile"
    assert (COMPOSE.parent / worker["build"]["context"] / worker["build"]["dockerfile"]).is_file()
    script = " ".join(worker["command"])
    assert script.index("prefect --no-prompt deploy --all") < script.index(
        "prefect worker start --pool cricket-process"
    )
    assert "cd /opt/cricket/deployments" in script
    env = worker["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["CRICKET_PROJECT_DIR"] == "/opt/cricket"  # the pull step of prefect.yaml
    assert env["CRICKET_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["CRICKET_INFLUX_URL"] == "http://influxdb:8086"
    # The work pool named here is the one prefect.yaml deploys to.
    assert "name: cricket-process" in (ROOT / "deployments" / "prefect.yaml").read_text()


def test_mlflow_has_postgres_backend_and_artifact_volume(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    args = " ".join(mlflow["command"])
    assert "--serve-artifacts" in args
    assert "--backend-store-uri=postgresql://mlflow:" in args and "@mlflow-db:5432/mlflow" in args
    assert "--artifacts-destination=/mlartifacts" in args
    assert "mlflow-artifacts:/mlartifacts" in mlflow["volumes"]
    assert "mlflow" in mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_dockerfile_copies_what_exists_and_installs_the_project() -> None:
    text = DOCKERFILE.read_text()
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which is not in the repo"
    assert re.search(r"^RUN pip install \.", text, flags=re.M)
    assert "CRICKET_PROJECT_DIR=/opt/cricket" in text
    assert re.search(r"^USER (?!root)", text, flags=re.M), "the worker must not run as root"


def test_docs_cover_the_deployment_story() -> None:
    docs = DOCS.read_text()
    for phrase in ("prefect deploy --all", "prefect worker start --pool cricket-process",
                   "cricket serve", "CANCEL_NEW", "timezone", "Secret", "CRICKET_DASK_ADDRESS",
                   "DBRP", "CRICKET_INFLUX_TOKEN", "CRICKET_INFLUX_BUCKET", "CRICKET_INFLUX_ORG",
                   "CRICKET_INFLUX_USERNAME", "CRICKET_PROJECT_DIR"):
        assert phrase in docs, phrase
    for version in ("1.x", "2.x", "3.x"):
        assert version in docs
