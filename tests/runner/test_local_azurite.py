"""Local mode against a real Azurite: a laptop run and a cloud run differ only in their URLs.

The same command line runs twice on local nodes, as a real ``python -m taskkit`` process: once
with its input, outputs and state as ``file://`` URLs in the node's folder, once with all three
on Azurite. What each published must be the same set of files, byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskkit.testing import Azurite

pytestmark = pytest.mark.azurite

TASKKIT = [sys.executable, "-m", "taskkit"]
MANIFEST = "_taskkit_manifest.json"
#: What the command makes of its input: nested names, a file past one 8 MiB chunk, a copy.
COMMAND = [
    "sh",
    "-ec",
    "mkdir -p out/deep\n"
    "cat in/a.txt in/a.txt > out/twice.txt\n"
    "cp in/sub/big.bin out/deep/big.bin\n"
    "wc -c < in/sub/big.bin | tr -d ' ' > out/size.txt\n"
    "echo done",
]
INPUTS = {"a.txt": b"alpha\n", "sub/big.bin": os.urandom(9 * 1024 * 1024 + 17)}


def _run(tmp_path: Path, azurite: Azurite, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AZ_BATCH_", "AZURE_", "TASKKIT_"))
    }
    env["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    proc = subprocess.run(
        [*TASKKIT, "run", *args, "--", *COMMAND],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    return proc


def _files(manifest: bytes) -> list[tuple[str, str, int]]:
    found: dict[str, Any] = json.loads(manifest)
    return sorted((f["name"], f["digest"], f["size"]) for f in found["files"])


def test_local_mode_publishes_what_the_same_line_with_azure_urls_publishes(
    tmp_path: Path, azurite: Azurite, azurite_container: str
) -> None:
    """Input, outputs and state on file:// under the node, or all on Azurite: the same
    manifests (names, digests, sizes), the same task output, each a goal met when repeated."""
    src = tmp_path / "src"
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        for name, data in INPUTS.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
            container.upload_blob(f"in/{name}", data)
    here, cloud = tmp_path / "laptop", tmp_path / "cloud"
    on_disk = ["--local", str(here), "-i", f"file://{src}/=in/",
               "-o", f"out/**=file://{here}/results/"]  # fmt: skip
    on_azure = ["--local", str(cloud), "-i", f"az://{azurite_container}/in/=in/",
                "-o", f"out/**=az://{azurite_container}/results/",
                "--state", f"az://{azurite_container}/state"]  # fmt: skip
    local_run = _run(tmp_path, azurite, *on_disk)
    azure_run = _run(tmp_path, azurite, *on_azure)
    assert local_run.stdout == azure_run.stdout == "done\n"

    local_files = _files((here / "results" / MANIFEST).read_bytes())
    with azurite.blob_service_client() as service:
        blob = service.get_blob_client(azurite_container, f"results/{MANIFEST}")
        azure_files = _files(blob.download_blob().readall())
    assert local_files == azure_files
    assert [name for name, _, _ in local_files] == ["deep/big.bin", "size.txt", "twice.txt"]
    assert (here / "results" / "deep" / "big.bin").read_bytes() == INPUTS["sub/big.bin"]

    # The same task on both nodes (same command line), its output kept alike.
    (laptop_task,) = (here / "node" / "workitems" / "local" / "job-1").iterdir()
    (cloud_task,) = (cloud / "node" / "workitems" / "local" / "job-1").iterdir()
    assert laptop_task.name == cloud_task.name
    assert (laptop_task / "stdout.txt").read_text() == (cloud_task / "stdout.txt").read_text()
    # The cloud run's journal is on Azurite, not in its node's folder.
    assert not any((cloud / "state").iterdir())
    with azurite.blob_service_client() as service:
        names = {b.name for b in service.get_container_client(azurite_container).list_blobs()}
    assert f"state/local/{cloud_task.name}/outcome.json" in names

    for args in (on_disk, on_azure):
        assert "goal met by attempt 1" in _run(tmp_path, azurite, *args).stderr
