"""Fixtures for every test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_nacelle_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's NACELLE_* overrides must not change what the tests configure."""
    for name in list(os.environ):
        if name.startswith("NACELLE_"):
            monkeypatch.delenv(name)
