"""Shared fixtures: every test gets its own $LIMA_HOME and cache directory."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def lima_home(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lima-home"
    monkeypatch.setenv("LIMA_HOME", str(home))
    monkeypatch.delenv("LIMA_TEMPLATES_PATH", raising=False)
    monkeypatch.delenv("LIMA_INSTANCE", raising=False)
    # VM tests share the user's image cache (built images survive between runs);
    # everything else gets an empty one.
    if request.node.get_closest_marker("vm") is None:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return home
