"""Shared fixtures: every test gets its own $LIMA_HOME and cache directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def lima_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lima-home"
    monkeypatch.setenv("LIMA_HOME", str(home))
    monkeypatch.delenv("LIMA_TEMPLATES_PATH", raising=False)
    monkeypatch.delenv("LIMA_INSTANCE", raising=False)
    if "XDG_CACHE_HOME" not in os.environ or os.environ.get("PYLIMA_TEST_ISOLATE_CACHE"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return home
