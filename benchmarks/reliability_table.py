"""Regenerate docs/reliability.md from tests/reliability_cases.py."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reliability_cases import render  # noqa: E402

if __name__ == "__main__":
    out = ROOT / "docs" / "reliability.md"
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
