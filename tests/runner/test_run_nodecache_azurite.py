"""``taskkit run -i`` on one node stages through the node cache, as ``taskkit stage`` does.

Real concurrent ``python -m taskkit run`` processes, as the tasks of one node with
``AZ_BATCH_NODE_SHARED_DIR`` set and their own task ids and working directories, stage one
blob from Azurite; the downloads are counted in Azurite's own log.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from taskkit.testing import Azurite

pytestmark = pytest.mark.azurite

TASKKIT = [sys.executable, "-m", "taskkit"]
MiB = 1 << 20
#: A blob of one chunk: one whole download is one ``Blob_Download``.
SIZE = 3 * MiB + 5
TASKS = 4


def _env(azurite: Azurite, root: Path, **more: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AZ_BATCH_", "AZURE_", "TASKKIT_"))
    }
    env["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    env["TASKKIT_CACHE_DIR"] = str(root / "statcache")
    env["AZ_BATCH_JOB_ID"] = "job-1"
    return {**env, **more}


def _run_tasks(
    azurite: Azurite, container: str, root: Path, *options: str, shared: Path | None
) -> tuple[list[subprocess.CompletedProcess[str]], list[str]]:
    """TASKS concurrent runs staging ``shared.bin``; their results and Azurite's operations."""
    more = {"AZ_BATCH_NODE_SHARED_DIR": str(shared)} if shared is not None else {}
    since = azurite.log_offset()
    procs = []
    for n in range(TASKS):
        workdir = root / f"task{n}" / "wd"
        workdir.mkdir(parents=True)
        argv = [
            *TASKKIT,
            "run",
            "--state",
            f"file://{root / 'state'}",
            "--workdir",
            str(workdir),
            "-i",
            f"az://{container}/shared.bin=in/shared.bin",
            *options,
            "--",
            "sh",
            "-c",
            'cmp -s in/shared.bin "$0"',
            str(root / "expected.bin"),
        ]
        env = _env(azurite, root, AZ_BATCH_TASK_ID=f"task-{n}", **more)
        procs.append(
            subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=root,
            )
        )
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results, azurite.operations(since)


@pytest.fixture
def seeded(azurite: Azurite, azurite_container: str, tmp_path: Path) -> bytes:
    content = random.Random(11).randbytes(SIZE)
    (tmp_path / "expected.bin").write_bytes(content)
    with azurite.blob_service_client() as service:
        service.get_container_client(azurite_container).upload_blob("shared.bin", content)
    return content


def test_concurrent_runs_on_one_node_download_a_shared_input_once(
    azurite: Azurite, azurite_container: str, tmp_path: Path, seeded: bytes
) -> None:
    """N concurrent `taskkit run -i` with AZ_BATCH_NODE_SHARED_DIR set: one download in all,
    every task's input a hard link of the one object in the default node cache, and each
    run's stderr says how its file came."""
    shared = tmp_path / "shared"
    results, ops = _run_tasks(azurite, azurite_container, tmp_path, shared=shared)
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    assert ops.count("Blob_Download") == 1, ops
    objects = [p for p in (shared / "taskkit" / "cache" / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1
    inodes = {(tmp_path / f"task{n}/wd/in/shared.bin").stat().st_ino for n in range(TASKS)}
    assert inodes == {objects[0].stat().st_ino}
    lines = [
        line
        for result in results
        for line in result.stderr.splitlines()
        if line.startswith("taskkit: note: staged 1 files")
    ]
    assert len(lines) == TASKS, [r.stderr for r in results]
    assert sum("1 downloaded" in line for line in lines) == 1, lines
    assert sum("1 linked from the node cache" in line for line in lines) == TASKS - 1, lines


def test_without_the_node_cache_each_run_downloads_its_own_copy(
    azurite: Azurite, azurite_container: str, tmp_path: Path, seeded: bytes
) -> None:
    """--no-node-cache on a node with a shared directory: N downloads and no cache made (the
    count above is the node cache's doing, not Azurite's or the test's)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    results, ops = _run_tasks(
        azurite, azurite_container, tmp_path, "--no-node-cache", shared=shared
    )
    for result in results:
        assert result.returncode == 0, result.stderr
    assert ops.count("Blob_Download") == TASKS, ops
    assert not (shared / "taskkit" / "cache").exists()
