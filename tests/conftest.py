"""Fixtures shared by the test modules; ``taskkit.testing`` brings the Azurite ones."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskkit.retry import RetryBudget
from taskkit.storage import Stores

pytest_plugins = ["taskkit.testing"]


@pytest.fixture
def stores() -> Iterator[Stores]:
    """The stores of one run, without retries (unit tests meet no passing failures)."""
    with Stores(RetryBudget(attempts=1)) as opened:
        yield opened


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory, by its real path (as staging resolves it)."""
    work = tmp_path / "work"
    work.mkdir()
    return Path(os.path.realpath(work))
