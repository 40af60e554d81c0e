"""taskkit/published.py through ``taskkit run``: "goal met" checks the published manifests.

Real ``python -m taskkit run`` processes (``runner_helpers.Task``) with ``file://`` state and
outputs. After a success, the test deletes or rewrites what was published, or the working
directory's copy of it, and checks what the next run does: met (nothing written), republish
(the command not run: it counts its runs outside the working directory), or run again. A
republish stopped part way (``runner_helpers.interrupted_publish``: SIGTERM or kill -9 at a
chosen moment) leaves the success to republish next time.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import TASKKIT, Task, interrupted_publish, opened_task, sh, snapshot

from taskkit.content.digest import hash_bytes
from taskkit.runner.journal import Outcome
from taskkit.runner.published import copy_name, gone
from taskkit.storage.stores import Stores
from taskkit.transfer.upload_plan import MANIFEST_NAME

GONE = "published outputs are gone"
REPUBLISH = "republishing them from the working directory (the command is not run)"
RUN_AGAIN = "running the command again"


class Published:
    """A task whose command writes out/a.txt and out/sub/b.txt, published to ``dest``."""

    def __init__(self, task: Task, root: Path) -> None:
        self.task, self.dest = task, root / "dest"
        self.command = sh(
            f"{task.counted('cmd')}\nmkdir -p out/sub\necho alpha > out/a.txt\n"
            "echo beta > out/sub/b.txt\n"
        )
        self.options = ("--max-retries", "3", "-o", f"out/**=file://{self.dest}/")

    def run(self, *more: str) -> subprocess.CompletedProcess[str]:
        return self.task.run(self.command, *self.options, *more)

    def plan(self) -> str:
        done = self.run("--dry-run")
        assert done.returncode == 0, done.stderr
        return done.stdout

    @property
    def manifest(self) -> Path:
        return self.dest / MANIFEST_NAME

    def outcome(self) -> dict[str, Any]:
        found = self.task.outcome()
        assert found is not None
        return found


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Published]:
    with opened_task(tmp_path) as task:
        made = Published(task, tmp_path)
        first = made.run()
        assert first.returncode == 0, first.stderr
        assert made.task.count("cmd") == 1
        yield made


def note_lines(stderr: str, fragment: str) -> list[str]:
    return [line for line in stderr.splitlines() if fragment in line]


def test_a_success_records_each_manifest_with_its_version_and_keeps_a_copy(
    world: Published,
) -> None:
    """The success outcome names each manifest's URL, its version and the journal's copy,
    which holds the very bytes published."""
    outcome = world.outcome()
    [record] = outcome["published"]
    assert record["url"] == str(world.manifest)
    assert record["kept"] == copy_name(1, 1)
    assert (world.task.journal / record["kept"]).read_bytes() == world.manifest.read_bytes()
    with Stores() as stores:
        store, key = stores.open(str(world.manifest))
        assert store.stat(key).version == record["version"]


def test_a_met_goal_is_checked_against_the_store_and_writes_nothing(world: Published) -> None:
    """With the manifest in place, a re-run is met: nothing runs, nothing is written but
    the run's one note under the journal's skips/."""
    before = snapshot(world.task.state_dir, world.dest, world.task.workdir)
    again = world.run()
    assert again.returncode == 0, again.stderr
    assert "goal met by attempt 1" in again.stderr
    assert world.task.count("cmd") == 1
    after = snapshot(world.task.state_dir, world.dest, world.task.workdir)
    skips = world.task.journal / "skips"
    assert len(list(skips.iterdir())) == 1
    noted = {str(world.task.journal), str(skips)}
    assert {p: v for p, v in after.items() if p not in noted and not p.startswith(f"{skips}/")} == {
        p: v for p, v in before.items() if p not in noted
    }


@pytest.mark.parametrize("lost", ["manifest", "everything"])
def test_deleted_outputs_are_republished_without_running_the_command(
    world: Published, lost: str
) -> None:
    """The manifest (or the whole published folder) deleted: the next run says why in one
    line, publishes the working directory's files again without running the command, in a
    new attempt that says so; the run after it is met again."""
    published = world.manifest.read_bytes()
    if lost == "manifest":
        world.manifest.unlink()
    else:
        for path in sorted(world.dest.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    assert "would republish them from the working directory" in world.plan()

    again = world.run()
    assert again.returncode == 0, again.stderr
    assert world.task.count("cmd") == 1, "the command ran again"
    [said] = note_lines(again.stderr, GONE)
    assert f"{world.manifest} is missing" in said
    assert said.endswith(REPUBLISH)
    assert (world.dest / "a.txt").read_text() == "alpha\n"
    assert (world.dest / "sub" / "b.txt").read_text() == "beta\n"
    files = json.loads(world.manifest.read_bytes())["files"]
    assert files == json.loads(published)["files"]

    assert world.task.attempts() == [1, 2]
    second = world.task.attempt(2)
    assert (second["verdict"], second["exit_code"]) == ("success", 0)
    assert second["reason"].startswith("republished the outputs of attempt 1")
    outcome = world.outcome()
    assert outcome["attempt"] == 2
    assert outcome["published"][0]["kept"] == copy_name(2, 1)
    assert REPUBLISH in world.task.log(2, "taskkit")

    third = world.run()
    assert "goal met by attempt 2" in third.stderr, third.stderr
    assert world.task.attempts() == [1, 2]


def test_a_manifest_rewritten_with_other_content_is_not_met(world: Published) -> None:
    """Someone else's manifest at the DEST (same name, other files): the goal is not met;
    the working directory's files are published again under the manifest they had."""
    original = json.loads(world.manifest.read_bytes())
    world.manifest.write_text(json.dumps({**original, "files": []}))
    again = world.run()
    assert again.returncode == 0, again.stderr
    [said] = note_lines(again.stderr, GONE)
    assert f"{world.manifest} changed since attempt 1 published it" in said
    assert said.endswith(REPUBLISH)
    assert world.task.count("cmd") == 1
    assert json.loads(world.manifest.read_bytes())["files"] == original["files"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("delete", "the working directory no longer holds 'a.txt'"),
        ("edit", "'a.txt' in the working directory is not the file published"),
        ("same size", "'a.txt' in the working directory is not the file published"),
        ("add", "the working directory holds 'extra.txt', which"),
    ],
)
def test_gone_outputs_the_working_directory_no_longer_holds_run_the_command_again(
    world: Published, change: str, why: str
) -> None:
    """Manifest deleted and the working directory's outputs changed (deleted, edited, edited
    at the same size, one more file): not republished; the command runs again, saying why."""
    out = world.task.workdir / "out"
    if change == "delete":
        (out / "a.txt").unlink()
    elif change == "edit":
        (out / "a.txt").write_text("something else\n")
    elif change == "same size":
        (out / "a.txt").write_text("ALPHA\n")
    else:
        (out / "extra.txt").write_text("x\n")
    world.manifest.unlink()
    plan = world.plan()
    assert why in plan
    assert "would run the command again" in plan

    again = world.run()
    assert again.returncode == 0, again.stderr
    assert world.task.count("cmd") == 2
    [said] = note_lines(again.stderr, GONE)
    assert why in said
    assert said.endswith(RUN_AGAIN)
    assert world.outcome()["attempt"] == 2
    assert world.task.attempt(2)["reason"] == "exit code 0 is a success code"
    assert hash_bytes(b"alpha\n") == hash_bytes((world.dest / "a.txt").read_bytes())
    assert GONE in world.task.log(2, "taskkit")


def test_a_dry_run_of_gone_outputs_changes_nothing(world: Published) -> None:
    """The dry run reads what the real run reads, and writes nothing, even the stat-cache."""
    world.manifest.unlink()
    watched = (world.task.state_dir, world.dest, world.task.workdir, world.task.root / "cache")
    before = snapshot(*watched)
    assert "would republish" in world.plan()
    assert snapshot(*watched) == before
    assert world.task.count("cmd") == 1


def test_a_record_without_versions_reads_and_is_checked_for_presence(world: Published) -> None:
    """A success written before versions were kept still reads: met while its manifest is
    there; once it is gone, no copy can vouch for the working directory: run again."""
    path = world.task.journal / "outcome.json"
    old = json.loads(path.read_text())
    del old["published"]
    path.write_text(json.dumps(old))
    met = world.run()
    assert "goal met by attempt 1" in met.stderr, met.stderr

    world.manifest.unlink()
    again = world.run()
    assert again.returncode == 0, again.stderr
    [said] = note_lines(again.stderr, GONE)
    assert "no copy of its manifests was kept" in said
    assert world.task.count("cmd") == 2


def test_gone_checks_the_destinations_of_the_work_not_the_stored_url(
    tmp_path: Path, stores: Stores
) -> None:
    """gone() opens the manifests from the work's outputs (one stat each, deduplicated
    across two spellings of one DEST), never from the URL text the record holds."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / MANIFEST_NAME).write_text("{}")
    store, key = stores.open(str(dest / MANIFEST_NAME))
    version = store.stat(key).version
    outcome = Outcome.model_validate(
        {
            "state": "success",
            "fingerprint": "f",
            "attempt": 1,
            "at": "2026-01-01T00:00:00.000Z",
            "published": [{"url": "nowhere://shown", "version": version, "kept": "k"}],
        }
    )
    outputs = [f"a/*={dest}/", f"b/*=file://{dest}"]
    assert gone(stores, outputs, outcome) is None
    (dest / MANIFEST_NAME).write_text("{} ")
    assert "changed since attempt 1" in (gone(stores, outputs, outcome) or "")
    (dest / MANIFEST_NAME).unlink()
    assert "is missing" in (gone(stores, outputs, outcome) or "")


def test_an_upload_reports_each_manifest_it_leaves_published_with_its_version(
    tmp_path: Path, stores: Stores
) -> None:
    """upload()'s summary names each DEST's manifest with the version and bytes now there,
    whether written now or found saying the same (then not rewritten)."""
    from taskkit.transfer.upload import upload

    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "out" / "a.txt").write_text("alpha\n")
    outputs = [f"out/*=file://{tmp_path}/one/", f"out/*=file://{tmp_path}/two/"]
    versions = []
    for _ in range(2):  # written, then found saying the same
        summary = upload(outputs, workdir=work, task={"job": "j"})
        versions.append([p.version for p in summary.published])
        assert summary.exit_error() is None
        assert [p.url for p in summary.published] == [
            str(tmp_path / d / MANIFEST_NAME) for d in ("one", "two")
        ]
        for published in summary.published:
            store, key = stores.open(published.url)
            assert store.stat(key).version == published.version
            assert Path(published.url).read_bytes() == published.data
    assert versions[0] == versions[1]  # the second upload rewrote nothing


def status_text(task: Task) -> list[str]:
    """``taskkit status`` of the task, as a person reads it."""
    ids = ["--job-id", task.job, "--task-id", task.task]
    shown = task.taskkit([*TASKKIT, "status", "--state", task.state, *ids])
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.splitlines()


@pytest.mark.parametrize("gate", ["phase", "upload", "uploaded", "claim"])
def test_a_republish_stopped_by_sigterm_gives_the_success_back(world: Published, gate: str) -> None:
    """SIGTERM anywhere between the republish's claim and its success record: the attempt
    ends 143 and the journal holds attempt 1's success again, as status says; the next run
    republishes (the command is not run again)."""
    success = world.outcome()
    world.manifest.unlink()
    stopped = interrupted_publish(world.task, gate, signal.SIGTERM, world.command, *world.options)
    assert stopped.returncode == 143, stopped.stderr
    assert world.outcome() == success
    assert world.task.attempt(2)["exit_code"] == 143
    assert world.task.status()["outcome"]["state"] == "success"
    assert status_text(world.task)[1].startswith("outcome: success in attempt 1 at")
    assert_republished_next(world)


@pytest.mark.parametrize("gate", ["phase", "upload", "uploaded"])
def test_a_republish_killed_leaves_a_claim_that_reads_as_the_success(
    world: Published, gate: str
) -> None:
    """kill -9 anywhere between the republish's claim and its success record: the claim
    left behind carries attempt 1's success; status shows that success and the claim as
    stale; the dry run and the next run republish (the command is not run again)."""
    success = world.outcome()
    world.manifest.unlink()
    killed = interrupted_publish(world.task, gate, signal.SIGKILL, world.command, *world.options)
    assert killed.returncode == -signal.SIGKILL
    claim = world.outcome()
    assert (claim["state"], claim["attempt"], claim["replaced"]) == ("publishing", 2, success)
    shown = world.task.status()["outcome"]
    assert (shown["stale"], shown["replaced"]["attempt"]) == ("interrupted", 1)
    text = status_text(world.task)
    assert text[1].startswith("outcome: success in attempt 1 at")
    assert "stale publishing claim of attempt 2" in text[3]
    assert "that attempt was interrupted; the next run checks them again" in text[3]
    assert "would republish them from the working directory" in world.plan()
    assert_republished_next(world)


def assert_republished_next(world: Published) -> None:
    again = world.run()
    assert again.returncode == 0, again.stderr
    assert world.task.count("cmd") == 1, "the command ran again"
    [said] = note_lines(again.stderr, GONE)
    assert said.endswith(REPUBLISH)
    outcome = world.outcome()
    assert (outcome["state"], outcome["attempt"]) == ("success", 3)
    assert outcome["reason"].startswith("republished the outputs of attempt 1")
    assert outcome["replaced"] is None
    assert json.loads(world.manifest.read_bytes())["files"]
    assert status_text(world.task)[1].startswith("outcome: success in attempt 3 at")
    assert "goal met by attempt 3" in world.run().stderr


def test_a_failed_republish_on_the_last_attempt_leaves_the_success(world: Published) -> None:
    """A republish whose upload fails, on the last attempt Batch allows: it exits non-zero
    but records no failure over the success; once the DEST can be written again, the next
    run republishes (the command is not run)."""
    success = world.outcome()
    world.manifest.unlink()
    shutil.rmtree(world.dest / "sub")
    (world.dest / "sub").write_text("a file where a folder must be\n")
    failed = world.run("--max-retries", "0")
    assert failed.returncode != 0, failed.stderr
    assert REPUBLISH in failed.stderr
    assert world.task.attempt(2)["last"] is True
    assert world.outcome() == success
    (world.dest / "sub").unlink()
    assert_republished_next(world)
