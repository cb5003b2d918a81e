"""docs/layout.md lists every module with what it holds; it must not fall behind the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_has_a_docstring_and_the_layout_doc_is_current() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import layout
    finally:
        sys.path.pop(0)
    for folder in layout.FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            if path.name in {"__init__.py", "__main__.py"} or "__pycache__" in path.parts:
                continue
            assert layout.summary(path), f"{path.relative_to(ROOT)} has no docstring"
    check = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "layout.py"), "--check"],
        capture_output=True, text=True,
    )
    assert check.returncode == 0, check.stderr
