"""Every test of task functions runs in its own folder, with its own state and stat-cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def own_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's state (``file://``), local folder and stat-cache, and its working directory;
    no variable of the machine running the tests leaks in."""
    for name in list(__import__("os").environ):
        if name.startswith(("TASKKIT_", "AZ_BATCH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TASKKIT_STATE", f"file://{tmp_path}/state")
    monkeypatch.setenv("TASKKIT_LOCAL", str(tmp_path / "local"))
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
