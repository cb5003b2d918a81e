"""Shared test setup. Fixtures live in tests/fixtures/, one module per service."""

import os

# Keep Prefect and MLflow quiet and local in every test process.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# Property tests check results, not speed (speed is measured by benchmarks/): no per-example
# deadline, so a loaded CI machine cannot fail a correct example.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("cricket", deadline=None)
_hypothesis_settings.load_profile("cricket")

pytest_plugins: list[str] = ["fixtures.browser", "fixtures.influx", "fixtures.mlflow", "fixtures.pipeline"]
