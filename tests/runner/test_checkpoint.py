"""taskkit.runner.checkpoint: the checkpoint directory mirrored to the journal, per fingerprint."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from runner_helpers import newest_checkpoint
from store_counts import counting_stores

from taskkit.runner.checkpoint import Checkpoint, restore
from taskkit.storage.stores import Stores
from taskkit.testing.faults import Fault, FaultyStore
from taskkit.transfer.manifest import Manifest
from taskkit.transfer.upload_plan import MANIFEST_NAME

FP = "xxh3-128:22222222222222222222222222222222"
OTHER_FP = "xxh3-128:33333333333333333333333333333333"
TASK: dict[str, str | int] = {"job_id": "job", "task_id": "task", "attempt": 1}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads keep their stat cache in the test's own directory."""
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """Where the checkpoint is synced to (a file:// prefix), not yet created."""
    return tmp_path / "state" / "job" / "task" / "checkpoint"


def _checkpoint(
    directory: Path,
    remote: Path,
    fingerprint: str = FP,
    warnings: list[str] | None = None,
    stores: Stores | None = None,
) -> Checkpoint:
    return Checkpoint(
        str(directory),
        f"file://{remote}/",
        fingerprint,
        task=TASK,
        interval=3600.0,
        warn=(warnings if warnings is not None else []).append,
        stores=stores,
    )


def _fill(directory: Path) -> None:
    (directory / "sub").mkdir(parents=True, exist_ok=True)
    (directory / "model.bin").write_bytes(b"weights" * 100)
    (directory / "sub" / "step.txt").write_text("epoch 3\n")


def _contents(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _snapshot(root: Path) -> set[tuple[str, int]]:
    """Every file under ``root`` with its modification time (ns): a write changes it."""
    found = set()
    for base, _, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            found.add((path, os.stat(path).st_mtime_ns))
    return found


def test_restore_without_a_manifest_is_zero(stores: Stores, tmp_path: Path, remote: Path) -> None:
    """Nothing synced yet: restore creates the directory empty and returns 0."""
    local = tmp_path / "ckpt"
    checkpoint = _checkpoint(local, remote)
    assert checkpoint.restore(stores) == 0
    assert local.is_dir()
    assert list(local.iterdir()) == []
    assert checkpoint.restored == 0


def test_sync_of_an_empty_never_restored_directory_writes_nothing(
    tmp_path: Path, remote: Path
) -> None:
    """No file and nothing restored: no upload and no manifest, not even the prefix."""
    local = tmp_path / "ckpt"
    (local / "empty-subdir").mkdir(parents=True)
    warnings: list[str] = []
    _checkpoint(local, remote, warnings=warnings).sync()
    assert not (tmp_path / "state").exists()
    assert warnings == []


def test_sync_uploads_and_publishes_a_manifest_with_the_fingerprint(
    tmp_path: Path, remote: Path
) -> None:
    """Every file is uploaded and a manifest names them and the task, with the fingerprint."""
    local = tmp_path / "ckpt"
    _fill(local)
    warnings: list[str] = []
    _checkpoint(local, remote, warnings=warnings).sync()
    assert warnings == []
    slot = newest_checkpoint(remote)
    assert _contents(slot) == {
        **_contents(local),
        MANIFEST_NAME: (slot / MANIFEST_NAME).read_bytes(),
    }
    manifest = json.loads((slot / MANIFEST_NAME).read_bytes())
    assert manifest["task"] == {**TASK, "fingerprint": FP, "sync": 1}
    assert [f["name"] for f in manifest["files"]] == ["model.bin", "sub/step.txt"]


def test_a_second_sync_of_an_unchanged_directory_writes_nothing(
    tmp_path: Path, remote: Path
) -> None:
    """Syncing again with no change rewrites no file and no manifest."""
    local = tmp_path / "ckpt"
    _fill(local)
    checkpoint = _checkpoint(local, remote)
    checkpoint.sync()
    before = _snapshot(remote)
    checkpoint.sync()
    assert _snapshot(remote) == before


def test_a_sync_after_a_change_publishes_the_change(tmp_path: Path, remote: Path) -> None:
    """A new and a changed file are uploaded and the manifest names them."""
    local = tmp_path / "ckpt"
    _fill(local)
    checkpoint = _checkpoint(local, remote)
    checkpoint.sync()
    (local / "sub" / "step.txt").write_text("epoch 4, longer\n")
    (local / "new.txt").write_text("new")
    checkpoint.sync()
    slot = newest_checkpoint(remote)
    assert (slot / "sub" / "step.txt").read_text() == "epoch 4, longer\n"
    names = [f["name"] for f in json.loads((slot / MANIFEST_NAME).read_bytes())["files"]]
    assert names == ["model.bin", "new.txt", "sub/step.txt"]


def test_restore_brings_back_the_same_work(stores: Stores, tmp_path: Path, remote: Path) -> None:
    """A retry of the same work on another directory gets every synced file back."""
    first = tmp_path / "first"
    _fill(first)
    _checkpoint(first, remote).sync()
    second = tmp_path / "second"
    checkpoint = _checkpoint(second, remote)
    assert checkpoint.restore(stores) == 2
    assert checkpoint.restored == 2
    assert _contents(second) == _contents(first)


def test_restore_of_other_work_brings_nothing(stores: Stores, tmp_path: Path, remote: Path) -> None:
    """A checkpoint synced for another fingerprint is not restored."""
    first = tmp_path / "first"
    _fill(first)
    _checkpoint(first, remote, fingerprint=OTHER_FP).sync()
    second = tmp_path / "second"
    assert _checkpoint(second, remote).restore(stores) == 0
    assert list(second.iterdir()) == []


def test_restore_brings_only_files_the_manifest_names(
    stores: Stores, tmp_path: Path, remote: Path
) -> None:
    """A blob under the prefix that the manifest does not name stays where it is."""
    first = tmp_path / "first"
    _fill(first)
    _checkpoint(first, remote).sync()
    (newest_checkpoint(remote) / "stray.txt").write_text("left by a crashed sync")
    second = tmp_path / "second"
    assert _checkpoint(second, remote).restore(stores) == 2
    assert sorted(_contents(second)) == ["model.bin", "sub/step.txt"]


def test_a_restored_directory_syncs_without_uploading_again(
    stores: Stores, tmp_path: Path, remote: Path
) -> None:
    """Restored files are already in the store: syncing them back writes nothing."""
    first = tmp_path / "first"
    _fill(first)
    _checkpoint(first, remote).sync()
    second = tmp_path / "second"
    checkpoint = _checkpoint(second, remote)
    checkpoint.restore(stores)
    before = _snapshot(remote)
    checkpoint.sync()
    assert _snapshot(remote) == before


def test_restore_function_stages_named_files(stores: Stores, tmp_path: Path) -> None:
    """restore() stages (url, path) pairs into the directory."""
    source = tmp_path / "src.txt"
    source.write_text("payload")
    target = tmp_path / "target"
    target.mkdir()
    summary = restore([(f"file://{source}", "deep/copy.txt")], target, stores=stores)
    assert summary.exit_error() is None
    assert (target / "deep" / "copy.txt").read_text() == "payload"


def test_the_context_manager_syncs_at_exit(tmp_path: Path, remote: Path) -> None:
    """Leaving the with-block syncs once more, so the last state is published."""
    local = tmp_path / "ckpt"
    local.mkdir()
    with _checkpoint(local, remote) as checkpoint:
        assert not remote.exists()
        _fill(local)
    assert checkpoint._every._thread is not None
    assert not checkpoint._every._thread.is_alive()
    manifest = json.loads((newest_checkpoint(remote) / MANIFEST_NAME).read_bytes())
    assert [f["name"] for f in manifest["files"]] == ["model.bin", "sub/step.txt"]


def test_the_context_manager_syncs_at_exit_after_an_error(tmp_path: Path, remote: Path) -> None:
    """An exception in the block still leaves a synced checkpoint, and is not swallowed."""
    local = tmp_path / "ckpt"
    local.mkdir()

    def failing_command() -> None:
        with _checkpoint(local, remote):
            _fill(local)
            raise KeyError("the command failed")

    with pytest.raises(KeyError):
        failing_command()
    assert (newest_checkpoint(remote) / MANIFEST_NAME).exists()


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root ignores directory permissions, so chmod cannot make the store fail",
)
def test_a_sync_to_a_read_only_store_only_warns(tmp_path: Path, remote: Path) -> None:
    """A sync that cannot write (read-only destination) warns through the callback and returns."""
    local = tmp_path / "ckpt"
    _fill(local)
    remote.mkdir(parents=True)
    remote.chmod(stat.S_IRUSR | stat.S_IXUSR)
    warnings: list[str] = []
    try:
        _checkpoint(local, remote, warnings=warnings).sync()
    finally:
        remote.chmod(stat.S_IRWXU)
    assert len(warnings) == 1
    assert warnings[0].startswith("cannot sync the checkpoint directory")
    assert not list(remote.glob(f"**/{MANIFEST_NAME}"))


def test_a_sync_to_an_unwritable_store_only_warns(tmp_path: Path) -> None:
    """A destination below a regular file cannot be written (also as root): one warning, no
    exception, and the context manager's exit does not raise either."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    remote = blocker / "checkpoint"
    local = tmp_path / "ckpt"
    _fill(local)
    warnings: list[str] = []
    _checkpoint(local, remote, warnings=warnings).sync()
    assert len(warnings) == 1
    assert warnings[0].startswith("cannot sync the checkpoint directory")
    assert "\n" not in warnings[0]
    with _checkpoint(local, remote, warnings=warnings):
        pass
    assert len(warnings) == 2


def test_checkpoint_url_gets_a_trailing_slash(tmp_path: Path) -> None:
    """The URL is a prefix; the task recorded is the given one plus the fingerprint."""
    checkpoint = Checkpoint(
        str(tmp_path), "memory://x/ckpt", FP, task={"job_id": "j"}, interval=1.0, warn=print
    )
    assert checkpoint.url == "memory://x/ckpt/"
    assert checkpoint.task == {"job_id": "j", "fingerprint": FP}
    assert repr(checkpoint) == f"Checkpoint({str(tmp_path)!r})"


def test_given_stores_are_used_and_left_open(
    stores: Stores, tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """restore(stores=...) and a Checkpoint given stores (its restore, its syncs in and out
    of its with-block) open no Stores of their own, go through the given one, leave it open."""
    first = tmp_path / "first"
    _fill(first)
    counts = counting_stores(monkeypatch)
    given = _checkpoint(first, remote, stores=stores)
    given.sync()
    with given:
        (first / "more.txt").write_text("epoch 4\n")
    second = tmp_path / "second"
    assert _checkpoint(second, remote, stores=stores).restore() == 3
    assert _contents(second) == _contents(first)
    summary = restore([(f"file://{first}/more.txt", "copy.txt")], tmp_path / "t", stores=stores)
    assert summary.exit_error() is None
    assert counts.opened == []
    assert counts.users() == {id(stores)}
    assert counts.closes[id(stores)] == 0


def test_a_checkpoint_opens_one_stores_for_the_syncs_of_its_block(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without given stores, every sync of the with-block (and the last one at its end) goes
    through one Stores, closed once when the block ends; restore() opens and closes its own."""
    local = tmp_path / "ckpt"
    _fill(local)
    counts = counting_stores(monkeypatch)
    with _checkpoint(local, remote) as checkpoint:
        checkpoint.sync()
        (local / "more.txt").write_text("epoch 4\n")
        checkpoint.sync()
        (local / "last.txt").write_text("epoch 5\n")
    manifest = Manifest.parse((newest_checkpoint(remote) / MANIFEST_NAME).read_bytes(), "manifest")
    assert "last.txt" in {f.name for f in manifest.files}  # the last sync went through it too
    assert len(counts.opened) == 1
    assert counts.closed_once_each()
    counts.reset()
    assert _checkpoint(tmp_path / "other", remote).restore() == 4
    assert len(counts.opened) == 1
    assert counts.closed_once_each()


def test_a_sync_stopped_half_way_keeps_the_last_complete_one(tmp_path: Path, remote: Path) -> None:
    """A sync that fails after it began changing the store (one file cannot be written: as a
    preemption in the middle would leave it) takes nothing from the last complete sync: a
    restore brings that one back whole, and the next sync that succeeds is the one restored."""
    local = tmp_path / "ckpt"
    _fill(local)
    dest = f"file://{remote}/"
    with Stores() as plain:
        inner, _ = plain.open(dest)
        stuck = Fault.sometimes(
            "*", probability=1.0, kind="precondition", key=f"{remote}/00001/b/sub"
        )
        faulty = FaultyStore(inner, [stuck])
        with Stores(mounts={dest: faulty}) as stores:
            warnings: list[str] = []
            checkpoint = _checkpoint(local, remote, warnings=warnings, stores=stores)
            checkpoint.sync()  # sync 1: complete
            first = _contents(local)
            (local / "model.bin").write_bytes(b"better weights" * 100)
            (local / "sub" / "step.txt").write_text("epoch 4\n")
            checkpoint.sync()  # sync 2: model.bin lands, sub/step.txt cannot
            assert len(warnings) == 1
            assert faulty.injected
            again = tmp_path / "again"
            assert _checkpoint(again, remote, stores=stores).restore() == 2
            assert _contents(again) == first  # whole and consistent: sync 1
    _checkpoint(local, remote).sync()  # the next one, with the store mended: complete
    latest = tmp_path / "latest"
    assert _checkpoint(latest, remote).restore() == 2
    assert _contents(latest) == _contents(local)


def _attempt(directory: Path, remote: Path, attempt: int) -> Checkpoint:
    return Checkpoint(
        str(directory),
        f"file://{remote}/",
        FP,
        task={**TASK, "attempt": attempt},
        interval=3600.0,
        warn=[].append,
    )


def test_names_that_look_like_globs_come_back_as_they_are(tmp_path: Path, remote: Path) -> None:
    """Files named with ?, * and [ ] are restored under their own names, not matched as
    patterns (which would make folders of them, or miss them)."""
    local = tmp_path / "ckpt"
    local.mkdir()
    names = ["q?.txt", "star*.txt", "glob[1].txt", "sub/[x].bin"]
    for name in names:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_text(name)
    _checkpoint(local, remote).sync()
    again = tmp_path / "again"
    assert _checkpoint(again, remote).restore() == len(names)
    assert _contents(again) == {name: name.encode() for name in sorted(names)}


def test_a_restore_leaves_exactly_the_sync(tmp_path: Path, remote: Path) -> None:
    """A retry on the same node finds files the killed attempt wrote after its last sync: the
    restore removes them, so the directory is the sync, not a mix of two states."""
    local = tmp_path / "ckpt"
    _fill(local)
    _checkpoint(local, remote).sync()
    synced = _contents(local)
    (local / "shard-9").write_text("written after the last sync")
    (local / "sub" / "step.txt").write_text("epoch 9\n")
    assert _attempt(local, remote, 2).restore() == 2
    assert _contents(local) == synced


def test_removing_every_file_is_synced_too(tmp_path: Path, remote: Path) -> None:
    """After a sync, a program that deletes all its checkpoint files is synced as empty: a
    retry does not get the deleted files back."""
    local = tmp_path / "ckpt"
    _fill(local)
    checkpoint = _checkpoint(local, remote)
    checkpoint.sync()
    for path in (local / "model.bin", local / "sub" / "step.txt"):
        path.unlink()
    checkpoint.sync()
    again = tmp_path / "again"
    assert _checkpoint(again, remote).restore() == 0
    assert _contents(again) == {}


def test_two_attempts_at_once_never_share_a_slot(tmp_path: Path, remote: Path) -> None:
    """Two copies of one task syncing at once (a node thought lost still runs) write into
    their own attempts' slots: each sync stays whole, and a restore gets the one with the
    highest number (the later attempt's on a tie), never a mix."""
    first, second = tmp_path / "one", tmp_path / "two"
    one, two = _attempt(first, remote, 1), _attempt(second, remote, 2)
    assert one.restore() == two.restore() == 0
    (first / "state").write_text("one, step 1")
    (second / "state").write_text("two, step 1")
    one.sync()
    two.sync()  # both are sync 1: the later attempt's wins the tie
    assert (newest_checkpoint(remote) / "state").read_text() == "two, step 1"
    (first / "state").write_text("one, step 2")
    (first / "extra").write_text("one's only")
    one.sync()  # sync 2
    again = tmp_path / "again"
    assert _attempt(again, remote, 3).restore() == 2
    assert _contents(again) == {"extra": b"one's only", "state": b"one, step 2"}
    assert sorted(p.parent.parent.name for p in remote.glob(f"*/*/{MANIFEST_NAME}")) == [
        "00001",
        "00001",
        "00002",
    ]


def test_a_name_that_cannot_be_published_is_passed_over_once_said(
    tmp_path: Path, remote: Path
) -> None:
    """A checkpoint file whose name holds a newline cannot be published: it is left out with
    one warning (not one a sync), and every other file is still synced."""
    local = tmp_path / "ckpt"
    _fill(local)
    (local / "new\nline.txt").write_text("odd")
    warnings: list[str] = []
    checkpoint = _checkpoint(local, remote, warnings=warnings)
    checkpoint.sync()
    (local / "model.bin").write_bytes(b"newer")
    checkpoint.sync()
    assert len(warnings) == 1
    assert "its name cannot be published" in warnings[0]
    again = tmp_path / "again"
    assert _checkpoint(again, remote).restore() == 2
    assert _contents(again) == {"model.bin": b"newer", "sub/step.txt": b"epoch 3\n"}


def test_no_sync_of_this_work_leaves_the_directory_empty(tmp_path: Path, remote: Path) -> None:
    """A named checkpoint directory in a working directory that other work (or an attempt
    killed before its first sync) left files in: with no sync of this work to restore, the
    attempt starts from an empty directory, not from files no sync holds."""
    local = tmp_path / "ckpt"
    _fill(local)
    _checkpoint(local, remote, fingerprint=OTHER_FP).sync()  # another work's sync
    (local / ".model.bin.tmp").write_text("half written")
    assert _checkpoint(local, remote).restore() == 0
    assert _contents(local) == {}


def test_a_run_again_under_the_same_attempt_never_writes_over_the_last_sync(
    tmp_path: Path, remote: Path
) -> None:
    """A second process with the same attempt number (one whose syncs went only into slot
    a/) syncs into b/: a failure half-way through it still leaves a/ to restore."""
    local = tmp_path / "ckpt"
    _fill(local)
    _checkpoint(local, remote).sync()  # attempt 1, slot a/: the only complete sync
    first = _contents(local)
    dest = f"file://{remote}/"
    with Stores() as plain:
        inner, _ = plain.open(dest)
        stuck = [  # model.bin cannot be written in either slot; the rest goes through
            Fault.sometimes(op, probability=1.0, kind="precondition", key=key)
            for op in ("put", "write", "commit", "append")
            for key in (f"{remote}/00001/a/model.bin", f"{remote}/00001/b/model.bin")
        ]
        with Stores(mounts={dest: FaultyStore(inner, stuck)}) as stores:
            again = _checkpoint(local, remote, stores=stores)
            assert again.restore() == 2
            (local / "model.bin").write_bytes(b"changed")
            again.sync()  # fails: model.bin cannot be written
    assert (remote / "00001" / "a" / MANIFEST_NAME).exists()
    latest = tmp_path / "latest"
    assert _checkpoint(latest, remote).restore() == 2
    assert _contents(latest) == first


def test_retired_attempts_folders_go_once_this_attempt_has_a_sync(
    tmp_path: Path, remote: Path
) -> None:
    """Attempt 2 restores attempt 1's sync; once its own first sync is complete, attempt 1's
    folder (retired: it ended or is gone) is removed, and the next attempt restores from 2."""
    first = tmp_path / "one"
    _fill(first)
    _attempt(first, remote, 1).sync()
    second = tmp_path / "two"
    two = Checkpoint(
        str(second), f"file://{remote}/", FP, task={**TASK, "attempt": 2}, interval=3600.0,
        warn=[].append, retired=[1],
    )  # fmt: skip
    assert two.restore() == 2
    assert (remote / "00001").exists()  # not before a sync of its own
    (second / "more.txt").write_text("epoch 4")
    two.sync()
    assert not list((remote / "00001").rglob("*.*"))
    third = tmp_path / "three"
    assert _attempt(third, remote, 3).restore() == 3
    assert _contents(third) == _contents(second)


def test_a_sync_with_files_missing_gives_way_to_the_one_before(
    tmp_path: Path, remote: Path
) -> None:
    """The newest manifest names a file that is gone from the store (its folder pruned under
    a copy still running): the restore says so once and takes the complete sync before it."""
    local = tmp_path / "ckpt"
    _fill(local)
    checkpoint = _checkpoint(local, remote)
    checkpoint.sync()  # sync 1, slot a/
    before = _contents(local)
    (local / "model.bin").write_bytes(b"newer weights")
    checkpoint.sync()  # sync 2, slot b/
    (remote / "00001" / "b" / "model.bin").unlink()
    warnings: list[str] = []
    again = tmp_path / "again"
    assert _checkpoint(again, remote, warnings=warnings).restore() == 2
    assert _contents(again) == before
    assert len(warnings) == 1
    assert "cannot be restored" in warnings[0]
