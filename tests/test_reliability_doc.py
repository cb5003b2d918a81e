"""docs/reliability.md cannot drift from the tests: it must equal the rendering of
tests/reliability_cases.py, and every test a row names must exist."""

from __future__ import annotations

import re
from pathlib import Path

from reliability_cases import CASES, render

ROOT = Path(__file__).resolve().parents[1]


def test_docs_reliability_md_matches_the_cases():
    doc = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert doc == render(), "regenerate it: python benchmarks/reliability_table.py"


def test_every_case_names_an_existing_test_and_loses_nothing():
    assert len([c for c in CASES if c.kind == "bad input"]) >= 20
    for case in CASES:
        file, _, name = case.test.partition("::")
        source = (ROOT / file).read_text(encoding="utf-8")
        assert re.search(rf"^def {re.escape(name)}\(", source, re.M), case.test
        assert case.lost == 0
