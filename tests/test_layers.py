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


def test_the_daemon_process_holds_no_cli_tui_remote_or_tls_modules() -> None:
    """`cronflow daemon` execs into daemon_process (issue 14): what it imports stays lean."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from cronflow import daemon_process\n"
        "daemon_process.import_asyncio_without_tls()\n"
        "import cronflow.daemon, cronflow.store, cronflow.config\n"
        "heavy = ('typer', 'click', 'rich', 'textual', 'celery', 'redis', 'tomlkit', 'ssl')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "import ssl  # still importable for anything that needs it later\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
