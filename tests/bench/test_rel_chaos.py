"""The reliability suites R1 (chaos) and R2 (storage faults) of ``bench/rel_chaos.py``: each
holds at CI size, and each of their checks can fail (the step log, the download accounting,
the manifest watcher, the journal's permanent records)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from taskkit.content.digest import hash_bytes
from taskkit.testing import Azurite

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import rel_chaos


@pytest.mark.azurite
def test_r1_chaos_holds_at_ci_size(tmp_path: Path) -> None:
    """Under kill and preempt chaos every task succeeds, outputs equal the chaos-free run's,
    no manifest names a bad blob, every attempt has its logs, no finished step runs again."""
    result = rel_chaos.suite("ci", tmp_path)
    assert result["name"] == "R1 chaos"
    assert result["problems"] == []
    rows = dict(result["rows"])
    assert rows["finished steps recomputed"] == "0"
    assert rows["shared input re-downloaded on the same node"].startswith("0 B")


@pytest.mark.azurite
def test_r2_storage_faults_hold_at_ci_size(tmp_path: Path) -> None:
    """Storage chaos and an outage within the budget end in success; an outage left on ends
    in retryable exit codes and nothing recorded permanent."""
    result = rel_chaos.suite_r2("ci", tmp_path)
    assert result["name"] == "R2 storage faults"
    assert result["problems"] == []
    assert dict(result["rows"])["records saying permanent in the journals"] == "0"


def test_step_log_finds_a_finished_step_started_again(tmp_path: Path) -> None:
    """A start after the step's done line is a recomputed step; a start after a body that
    ended but was never recorded is only a re-run; repeated loop rounds count their seconds."""
    log = tmp_path / "t.log"
    log.write_text(
        "start s1 digest 1\nend s1 digest 1\nstart s1 digest 2\nend s1 digest 2\n"
        "done s1 digest\nstart s1 digest 3\n"
        "iter s1 iterate 0 10.0 10.5 1\niter s1 iterate 0 20.0 20.25 2\n"
        "iter s1 iterate 1 20.25 20.5 2\n"
    )
    found = rel_chaos.StepLog.read(log)
    assert found.recomputed == ["s1 step digest (attempt 3)"]
    assert found.reruns == 2
    assert found.again == {("s1", "iterate", "2"): 0.25}


def test_downloads_tell_a_new_node_from_a_re_download() -> None:
    """The first download on a node fills its cache; a second one there is a re-download; a
    preempted node comes back under a new id, a new node again."""
    staged = [
        ("node-1", 0, 2.0),  # linked from the cache, after the download below
        ("node-1", 100, 1.0),
        ("node-2", 100, 1.5),
        ("node-2", 100, 3.0),  # downloaded again on the same node
        ("node-1-r1", 100, 5.0),  # node-1 after its preemption
    ]
    assert rel_chaos.downloads(staged) == (300, 100, 3)


def test_permanent_records_are_found(tmp_path: Path) -> None:
    """An outcome or an attempt that says permanent is named; retryable ones are not."""
    attempts = tmp_path / "job" / "task" / "attempts"
    attempts.mkdir(parents=True)
    (attempts / "00001.json").write_text(json.dumps({"verdict": "retryable"}))
    (attempts.parent / "outcome.json").write_text(json.dumps({"state": "failed"}))
    assert rel_chaos.permanent_records(tmp_path) == []
    (attempts / "00002.json").write_text(json.dumps({"verdict": "permanent"}))
    assert rel_chaos.permanent_records(tmp_path) == ["job/task/attempts/00002.json"]


@pytest.fixture
def container(azurite: Azurite, azurite_container: str) -> Iterator[ContainerClient]:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        yield service.get_container_client(azurite_container)


def _manifest(files: list[tuple[str, bytes]]) -> bytes:
    entries = [{"name": n, "digest": str(hash_bytes(d)), "size": len(d)} for n, d in files]
    return json.dumps({"format": "taskkit-manifest-1", "files": entries}).encode()


@pytest.mark.azurite
def test_watcher_flags_a_manifest_naming_a_missing_or_wrong_blob(
    container: ContainerClient,
) -> None:
    """A manifest naming a blob that is not there, or whose bytes differ, is a problem; a
    manifest that agrees with its blobs is not."""
    good, bad = b"published bytes", b"different bytes"  # the same size
    container.upload_blob("t/out/a/x.bin", good)
    container.upload_blob("t/out/a/_taskkit_manifest.json", _manifest([("x.bin", good)]))
    container.upload_blob("t/out/b/y.bin", bad)
    container.upload_blob("t/out/b/_taskkit_manifest.json", _manifest([("y.bin", good)]))
    container.upload_blob(
        "t/out/c/_taskkit_manifest.json", _manifest([("z.bin", good)])
    )  # z.bin was never sent
    watcher = rel_chaos.Watcher(container, ["t/out/"])
    watcher.start()
    watcher.stop()
    assert watcher.polls >= 1
    assert len(watcher.manifests) == 3
    assert sorted(watcher.problems) == [
        f"t/out/b/_taskkit_manifest.json names y.bin as {hash_bytes(good)}: its bytes are "
        f"{hash_bytes(bad)}",
        "t/out/c/_taskkit_manifest.json names z.bin, which is not there",
    ]


def test_a_run_that_does_not_end_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A taskkit local run still going after TRIAL_SECONDS gets Ctrl-C and reads as stuck
    (no exit code), with what it said so far."""
    monkeypatch.setattr(rel_chaos, "TRIAL_SECONDS", 0.2)
    code, said = rel_chaos.emulate(["sh", "-c", "echo started; exec sleep 600"], {})
    assert code is None
    assert said == "started\n"
