"""Fault injection against real processes: each test breaks one thing on purpose, with the
end-to-end harness's real daemon."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import daemons

__all__ = ["daemons"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.slow)
