"""The layer contract, checked on the source (every import, including the ones inside
functions): the core never imports I/O, plotting or orchestration; I/O never imports
orchestration; nothing in cricket/ imports Prefect; tasks never import flows.

Every module of cricket/ must be in exactly one layer below, so a new module is
placed on purpose (add it to the table, and to DESIGN.md's).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CORE = {
    "cricket.alerts", "cricket.feedback",
    "cricket.base", "cricket.bundle_cache", "cricket.bundle_parts", "cricket.calibration", "cricket.config",
    "cricket.crossfit", "cricket.detector", "cricket.detector_state", "cricket.errors",
    "cricket.explain", "cricket.extent", "cricket.gaps", "cricket.limits", "cricket.model",
    "cricket.multifield",
    "cricket.persistence", "cricket.points", "cricket.point_promotion", "cricket.score_frame",
    "cricket.missing", "cricket.promotion", "cricket.scoring", "cricket.search", "cricket.seeding",
    "cricket.segments",
    "cricket.series", "cricket.shapes", "cricket.training", "cricket.windows",
}
IO = {"cricket.influx", "cricket.registry", "cricket.point_registry", "cricket.pyfunc", "cricket.mlflow_model",
      "cricket.webhook"}
PRESENTATION = {"cricket.plots", "cricket.report", "cricket.report_markdown",
                "cricket.report_pictures", "cricket.report_points"}
APPS = {"cricket.cli", "cricket.evaluate", "cricket.synth", "cricket.synth_points"}  # the outer layer of the library

# flows/, tasks/, deployments/ install as cricket.flows, cricket.tasks, cricket.deployments
PIPELINE = {"cricket.flows", "cricket.tasks", "cricket.deployments"}
ORCHESTRATION = {"prefect", "prefect_dask", "flows", "tasks", "deployments", *PIPELINE}
IO_LIBRARIES = {"mlflow", "influxdb_client", "httpx", "urllib3", "sqlalchemy"}
PLOTTING = {"matplotlib"}
APP_LIBRARIES = {"typer", "rich", "distributed", "dask"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, module: str | None = None) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def layer_of(module: str) -> str | None:
    for name, members in (("core", CORE), ("io", IO), ("presentation", PRESENTATION),
                          ("apps", APPS)):
        if any(module == m or module.startswith(m + ".") for m in members):
            return name
    return None


def within(module: str, names: set[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


CRICKET = sources("cricket")


def test_the_pipeline_folders_are_not_top_level_packages() -> None:
    """flows/, tasks/, deployments/ are imported as cricket.flows etc., never by their
    folder names (which would be separate top-level packages once installed)."""
    for folder in ("cricket", "flows", "tasks", "deployments", "tests", "benchmarks"):
        for path in sources(folder):
            bad = sorted(m for m in imports(path, "x." + module_name(path))
                         if m.split(".")[0] in {"flows", "tasks", "deployments"})
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}: use cricket.{bad[0]}"


def test_every_module_is_in_one_layer() -> None:
    unplaced = [module_name(p) for p in CRICKET if layer_of(module_name(p)) is None
                and module_name(p) != "cricket"]
    assert not unplaced, f"put these modules in a layer of tests/test_layers.py: {unplaced}"


@pytest.mark.parametrize("path", CRICKET, ids=lambda p: module_name(p))
def test_cricket_follows_its_layers(path: Path) -> None:
    module = module_name(path)
    layer = layer_of(module)
    found = imports(path)
    forbidden = set(ORCHESTRATION)  # cricket/ never imports Prefect, flows, tasks
    if layer == "apps":  # the CLI starts flows and serves deployments: the entry point
        forbidden -= {"cricket.flows", "cricket.deployments"}
    if layer == "core":
        forbidden |= IO | PRESENTATION | APPS | IO_LIBRARIES | PLOTTING | APP_LIBRARIES
    if layer == "io":
        forbidden |= PRESENTATION | APPS | APP_LIBRARIES
    bad = sorted(m for m in found if within(m, forbidden))
    assert not bad, f"{module} ({layer}) must not import {bad}"


@pytest.mark.parametrize("path", sources("tasks"), ids=lambda p: module_name(p))
def test_tasks_never_import_flows(path: Path) -> None:
    bad = sorted(m for m in imports(path, "cricket." + module_name(path))
                 if within(m, {"flows", "deployments", "cricket.flows", "cricket.deployments"}))
    assert not bad, f"{module_name(path)} must not import {bad}"


def test_the_contract_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself finds an import hidden in a function."""
    fake = ROOT / "cricket" / "series.py"
    text = fake.read_text(encoding="utf-8") + "\n\ndef _x():\n    import mlflow\n"
    probe = tmp_path / "series.py"
    probe.write_text(text, encoding="utf-8")
    found = imports(probe, "cricket.series")
    assert "mlflow" in found and within("mlflow", IO_LIBRARIES)


@pytest.mark.parametrize("source", ["cricket.influx.influxql:InfluxQLSource",
                                    "cricket.influx.flux:FluxSource"])
def test_every_source_implements_the_source_protocol(source: str) -> None:
    """The tasks call only what ``Source`` declares, with its parameters: no probing of
    signatures or attributes at run time."""
    import importlib
    import inspect

    from cricket.influx.base import Source

    module, _, name = source.partition(":")
    cls = getattr(importlib.import_module(module), name)
    for method in ("discover", "read", "read_events", "close"):
        declared = inspect.signature(getattr(Source, method)).parameters
        actual = inspect.signature(getattr(cls, method)).parameters
        assert list(declared) == list(actual)[: len(declared)], f"{name}.{method}"


def test_scoring_flows_do_not_import_fitting_or_plotting_libraries() -> None:
    """A served or Dask/process run imports the score flow in a fresh process on every
    run: scikit-learn (~1 s, for k-means and its NotFittedError) and matplotlib (the
    retrain's pictures) must wait until something fits or draws."""
    import subprocess
    import sys

    code = (
        "import sys, cricket.flows.score, cricket.tasks.score, cricket.tasks.publish;"
        "print(sorted(m for m in ('sklearn', 'scipy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_not_fitted_error_is_one_class_of_both_families() -> None:
    import pickle

    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    import cricket.base
    from cricket.base import NotFittedError
    from cricket.errors import CricketError

    assert NotFittedError is cricket.base.NotFittedError
    assert issubclass(NotFittedError, CricketError) and issubclass(NotFittedError, SklearnNotFitted)
    assert type(pickle.loads(pickle.dumps(NotFittedError("x")))) is NotFittedError
