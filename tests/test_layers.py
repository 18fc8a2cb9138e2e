"""Imports point one way (DESIGN.md): a lower module never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "cronflow"


def imported(module: str) -> set[str]:
    """The cronflow modules `module` imports, at the top or inside functions."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cronflow"):
            base = node.module.removeprefix("cronflow").lstrip(".")
            found.update([base] if base else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("cronflow.") for a in node.names
                         if a.name.startswith("cronflow."))  # fmt: skip
    return found


def test_wording_does_not_import_schedule() -> None:
    assert "schedule" not in imported("wording")
    assert imported("calendar_words") == set()


def test_schedule_takes_the_word_tables_from_below() -> None:
    assert {"wording", "calendar_words"} <= imported("schedule")
