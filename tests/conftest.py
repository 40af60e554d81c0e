"""Fixtures shared by the test modules; ``taskkit.testing`` brings the Azurite ones."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores

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


@pytest.fixture
def small_disk_mib() -> int:
    """The size of :func:`small_disk` in MiB (a test module overrides it to want another)."""
    return 4


@pytest.fixture
def small_disk(tmp_path: Path, small_disk_mib: int) -> Iterator[Path]:
    """A tmpfs of ``small_disk_mib`` MiB mounted for the test (needs root), by its real path;
    skipped, saying why, where mounting is refused."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    why = f"cannot mount a {small_disk_mib} MiB tmpfs (needs root)"
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={small_disk_mib}m", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"{why}: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"{why}: {proc.stderr.strip()}")
    try:
        yield Path(os.path.realpath(mount_point))
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, timeout=30)
