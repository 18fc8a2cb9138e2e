"""Fault tests drive the real daemon with the end-to-end harness."""

from tests.e2e.conftest import daemons

__all__ = ["daemons"]
