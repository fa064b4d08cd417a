"""Markers of the profile tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cpu_burner: starts CPU-burning subprocesses for about a second; in the default run "
        "(deselect with -m 'not cpu_burner')",
    )
