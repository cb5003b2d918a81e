"""Shared test setup. Fixtures live in tests/fixtures/, one module per service."""

import os

# Keep Prefect and MLflow quiet and local in every test process.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

pytest_plugins: list[str] = ["fixtures.browser", "fixtures.influx", "fixtures.mlflow", "fixtures.pipeline"]
