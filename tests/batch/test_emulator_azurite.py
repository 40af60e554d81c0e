"""Storage chaos against a real Azurite: the emulator puts the fault proxy in front of the
tasks' blob endpoint, the real Azure SDK in the tasks meets the faults, and taskkit's retries
carry the tasks through."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from taskkit.batch.chaos import Chaos
from taskkit.batch.emulator import Emulator
from taskkit.batch.tasks import read_tasks
from taskkit.exceptions import UsageError
from taskkit.testing import Azurite

pytestmark = pytest.mark.azurite


def upload_task(task_id: str, container: str) -> dict[str, str]:
    """A task that writes 40 small files and uploads them with ``taskkit upload``."""
    script = (
        'mkdir -p out && for i in $(seq 1 40); do echo "$AZ_BATCH_TASK_ID $i" > out/f$i; done'
        f" && exec {shlex.join([sys.executable, '-m', 'taskkit'])} upload"
        f" -o 'out/**=az://{container}/{task_id}/'"
    )
    return {"id": task_id, "commandLine": "/bin/sh -c " + shlex.quote(script)}


def test_storage_chaos_fails_requests_on_the_wire_and_the_tasks_still_succeed(
    tmp_path: Path, azurite: Azurite, azurite_container: str
) -> None:
    """storage=0.2: faults are injected (the report counts them), every task succeeds, and
    every blob is in the container with its bytes."""
    objects = [upload_task(f"u{i}", azurite_container) for i in range(3)]
    env = {"PATH": os.environ["PATH"], "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    tasks = read_tasks(json.dumps(objects), "t").tasks
    report = Emulator(
        tasks, root=tmp_path / "d", environ=env, chaos=Chaos(storage=0.2), seed=3
    ).run()
    assert report.ok, [t.attempts for t in report.tasks]
    assert report.storage_faults > 0
    container = azurite.blob_service_client().get_container_client(azurite_container)
    names = {b.name for b in container.list_blobs()}
    for i in range(3):
        assert {f"u{i}/f{n}" for n in range(1, 41)} <= names
        body = container.download_blob(f"u{i}/f7").readall()
        assert body == f"u{i} 7\n".encode()


def test_storage_chaos_needs_a_local_http_endpoint(tmp_path: Path) -> None:
    """Without a connection string to an http:// endpoint there is nothing to put a proxy in
    front of: refused before any task runs, naming the variable."""
    tasks = read_tasks(json.dumps([{"id": "a", "commandLine": "true"}]), "t").tasks
    emulator = Emulator(tasks, root=tmp_path / "d", environ={"PATH": os.environ["PATH"]},
                        chaos=Chaos(storage=0.5))  # fmt: skip
    with pytest.raises(UsageError, match="AZURE_STORAGE_CONNECTION_STRING"):
        emulator.run()
    assert not any(t.attempts for t in emulator.report.tasks)
