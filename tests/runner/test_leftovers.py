"""Outputs left by earlier work (taskkit/runner/leftovers.py): one attempt's side of the ledger,
and real ``taskkit run`` processes changing their work in one working directory.

The process tests use the ``runner_helpers.Task`` harness (``file://`` state and outputs under
tmp_path); commands mark what they saw in ``box``, outside the working directory.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import Task, opened_task, q, sh, snapshot, wait_for

from taskkit.runner.journal import host_identity
from taskkit.runner.leftovers import Leftovers
from taskkit.runner.leftovers_ledger import LEDGER_PREFIX, Ledger, Opened, Product
from taskkit.runner.lifetime import MARK
from taskkit.testing import Azurite
from taskkit.transfer.patterns import Output
from taskkit.transfer.upload_plan import MANIFEST_NAME

A, B = "xxh3-128:" + "a" * 32, "xxh3-128:" + "b" * 32


# -- mixed: files of other work among what would be published ------------------------------------


def beside(tmp_path: Path, ledger: Ledger | None, work: str = B) -> Leftovers:
    """This attempt (2, work ``work``, ``out/**``) in ``tmp_path/wd``, the ledger there as
    given."""
    (tmp_path / "wd" / "out").mkdir(parents=True, exist_ok=True)
    leftovers = Leftovers(
        tmp_path / "wd", ("s", "j", "t"), [Output("out/**", "file:///d/")], work, 2, print
    )
    if ledger is not None:
        leftovers.path.write_bytes(ledger.to_bytes())
    return leftovers


def this_process(work: str, host: str | None = None) -> Opened:
    """An open entry of attempt 1 whose process is this very (live) one."""
    pid = os.getpid()
    start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    return Opened(1, work, ("out/**",), host or host_identity(), pid, start, {})


def test_mixed_names_a_live_attempt_of_other_work_and_nothing_else(tmp_path: Path) -> None:
    """An open entry of other work whose process lives on this host is named (whatever the
    journal says); one whose process is gone, and one of this same work, are not."""
    live = beside(tmp_path, Ledger({}, (this_process(A),)))
    assert live.mixed(lambda n: False) == (
        "attempt 1 of other work is running in this working directory"
    )
    gone = this_process(A)._replace(pid_start="0")
    assert beside(tmp_path, Ledger({}, (gone,))).mixed(lambda n: True) is None
    assert beside(tmp_path, Ledger({}, (this_process(B),))).mixed(lambda n: True) is None


def test_mixed_asks_the_journal_about_an_entry_of_another_host_or_boot(tmp_path: Path) -> None:
    """An entry of another host (or an earlier boot of this one) cannot be judged by its
    process: the journal's word decides, so a dead one does not block publishing for ever."""
    entry = this_process(A, host="other-host/other-boot")
    asked: list[int] = []

    def journal(says: bool) -> Callable[[int], bool]:
        def running(number: int) -> bool:
            asked.append(number)
            return says

        return running

    leftovers = beside(tmp_path, Ledger({}, (entry,)))
    assert leftovers.mixed(journal(True)) is not None
    assert leftovers.mixed(journal(False)) is None
    assert asked == [1, 1]


def test_mixed_names_unchanged_files_other_work_made_that_the_patterns_match(
    tmp_path: Path,
) -> None:
    """A product of other work (recorded when it ended beside this attempt) that the patterns
    match, unchanged, is named; changed since, outside the patterns, or of this work: not."""
    out = tmp_path / "wd" / "out"
    out.mkdir(parents=True)
    for name in ("theirs.txt", "changed.txt", "mine.txt"):
        (out / name).write_text(name)
    (tmp_path / "wd" / "elsewhere.txt").write_text("x")

    def product(work: str, path: Path) -> Product:
        st = path.stat()
        return Product(work, (st.st_ino, st.st_size, st.st_mtime_ns))

    products = {
        "out/theirs.txt": product(A, out / "theirs.txt"),
        "out/changed.txt": product(A, out / "changed.txt"),
        "out/mine.txt": product(B, out / "mine.txt"),
        "elsewhere.txt": product(A, tmp_path / "wd" / "elsewhere.txt"),
    }
    (out / "changed.txt").write_text("changed since, by someone")
    leftovers = beside(tmp_path, Ledger(products, ()))
    assert leftovers.mixed(lambda n: True) == (
        f"out/theirs.txt: an output of other work ({A}) made beside this one"
    )
    (out / "theirs.txt").unlink()
    assert leftovers.mixed(lambda n: True) is None


def test_mixed_says_nothing_without_a_ledger_or_with_a_damaged_one(tmp_path: Path) -> None:
    """No ledger, or one that cannot be read: nothing is known to be other work's."""
    leftovers = beside(tmp_path, None)
    assert leftovers.mixed(lambda n: True) is None
    leftovers.path.write_text("{not json")
    assert leftovers.mixed(lambda n: True) is None


# -- real runs -----------------------------------------------------------------------------------


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened_:
        yield opened_


def names(dest: Path) -> list[str]:
    found: dict[str, Any] = json.loads((dest / MANIFEST_NAME).read_text())
    return sorted(f["name"] for f in found["files"])


def writes(*files: str, then: str = "") -> list[str]:
    """A command writing each of ``files`` (relative to the working directory)."""
    lines = [f'mkdir -p $(dirname {q(f)}) && echo "$TASKKIT_ATTEMPT {f}" > {q(f)}' for f in files]
    return sh("\n".join([*lines, then]))


def ledgers(task: Task) -> list[Path]:
    return sorted(task.workdir.glob(LEDGER_PREFIX + "*.json"))


def test_outputs_of_the_earlier_work_are_not_published_and_are_removed(
    task: Task, tmp_path: Path
) -> None:
    """Work A writes a.csv and b.csv; work B (another command) writes only a.csv: B's manifest
    does not name b.csv, b.csv is gone before B's command runs, the note says so, and the
    user's file placed before the first attempt is still there."""
    dest = tmp_path / "dest"
    output = ("-o", f"out/**=file://{dest}/")
    (task.workdir / "out").mkdir()
    (task.workdir / "out" / "user.txt").write_text("the user's\n")
    first = task.run(writes("out/a.csv", "out/b.csv"), *output)
    assert first.returncode == 0, first.stderr
    assert names(dest) == ["a.csv", "b.csv", "user.txt"]
    assert (
        "taskkit: note: no ledger of earlier outputs in this working directory: 1 file the "
        "output patterns match now are kept\n"
    ) in first.stderr

    seen = task.box / "seen.txt"
    second = task.run(writes("out/a.csv", then=f"ls out > {q(seen)}"), *output)
    assert second.returncode == 0, second.stderr
    assert names(dest) == ["a.csv", "user.txt"]
    assert seen.read_text().split() == ["a.csv", "user.txt"]  # the command never saw b.csv
    assert not (task.workdir / "out" / "b.csv").exists()
    assert (task.workdir / "out" / "user.txt").read_text() == "the user's\n"
    removed = [line for line in second.stderr.splitlines() if "removed" in line]
    assert removed == [
        f"taskkit: note: removed 2 outputs of earlier work ({task.attempt(1)['fingerprint']}): "
        "out/a.csv, out/b.csv"
    ]
    assert "removed 2 outputs of earlier work" in task.log(2, "taskkit")


def test_a_retry_of_the_same_work_keeps_what_the_failed_attempt_wrote(
    task: Task, tmp_path: Path
) -> None:
    """Attempt 1 writes part1 and fails; attempt 2 of the same work finds part1 (make-like
    resume), writes part2, and both are published."""
    dest = tmp_path / "dest"
    command = sh(
        "mkdir -p out\n"
        f"if [ -e out/part1 ]; then echo found > {q(task.box / 'resumed')}; fi\n"
        'if [ "$TASKKIT_ATTEMPT" = 1 ]; then echo one > out/part1; exit 1; fi\n'
        "echo two > out/part2\n"
    )
    options = ("--max-retries", "2", "-o", f"out/**=file://{dest}/")
    assert task.run(command, *options).returncode == 1
    second = task.run(command, *options)
    assert second.returncode == 0, second.stderr
    assert (task.box / "resumed").exists()
    assert names(dest) == ["part1", "part2"]
    assert "removed" not in second.stderr


def test_files_no_attempt_wrote_are_never_removed(task: Task, tmp_path: Path) -> None:
    """Through three works: the user's file from before the first attempt, a file the user
    adds between attempts, and another task's file in the shared directory all stay; each
    work's own outputs go when the work changes."""
    dest = tmp_path / "dest"
    output = ("-o", f"out/**=file://{dest}/")
    (task.workdir / "out").mkdir()
    (task.workdir / "out" / "before.txt").write_text("before\n")
    assert task.run(writes("out/a1.csv"), *output).returncode == 0
    (task.workdir / "out" / "between.txt").write_text("between\n")
    (tmp_path / "other").mkdir()
    with opened_task(tmp_path / "other", task="task-2") as other:
        other_run = other.run(
            writes("out/theirs.csv"), *output, workdir=task.workdir, timeout=60
        )  # another task sharing the directory
        assert other_run.returncode == 0, other_run.stderr
    assert task.run(writes("out/a2.csv"), *output).returncode == 0
    third = task.run(writes("out/a3.csv"), *output)
    assert third.returncode == 0, third.stderr
    left = sorted(p.name for p in (task.workdir / "out").iterdir())
    assert left == ["a3.csv", "before.txt", "between.txt", "theirs.csv"]
    assert len(ledgers(task)) == 2  # one per task


def test_a_work_killed_mid_command_has_its_outputs_removed_by_the_next_work(
    task: Task, tmp_path: Path
) -> None:
    """kill -9 of attempt 1 of work A (``out/**``) after its command wrote a.csv and sub/b.csv
    (its entry was never closed): work B (``out/*.csv``, which does not match sub/b.csv)
    removes both before its command, keeps the user's file, and publishes only what it
    wrote."""
    (task.workdir / "out").mkdir()
    (task.workdir / "out" / "user.csv").write_text("the user's\n")
    proc = task.start(
        writes("out/a.csv", "out/sub/b.csv", then=task.block("cmd")),
        "-o",
        f"out/**=file://{tmp_path / 'd1'}/",
    )
    task.wait_started("cmd", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    os.killpg(int((task.box / "cmd.pid").read_text()), signal.SIGKILL)
    assert (task.workdir / "out" / "sub" / "b.csv").exists()

    second = task.run(writes("out/c.csv"), "-o", f"out/*.csv=file://{tmp_path / 'd2'}/")
    assert second.returncode == 0, second.stderr
    assert names(tmp_path / "d2") == ["c.csv", "user.csv"]
    assert not (task.workdir / "out" / "a.csv").exists()
    assert not (task.workdir / "out" / "sub" / "b.csv").exists()
    assert "removed 2 outputs of earlier work" in second.stderr


def test_a_killed_attempt_of_the_same_work_leaves_its_outputs_to_the_retry(task: Task) -> None:
    """kill -9 mid-command, then the same work again: nothing is removed, the retry finds
    what the killed attempt wrote."""
    command = sh(
        f"if [ -e out/a.csv ]; then echo found > {q(task.box / 'resumed')}; fi\n"
        'if [ "$TASKKIT_ATTEMPT" = 1 ]; then\n'
        "  mkdir -p out && echo a > out/a.csv\n"
        f"{task.block('cmd')}"
        "fi\n"
    )
    output = ("-o", f"out/**=file://{task.root / 'dest'}/")
    proc = task.start(command, *output)
    task.wait_started("cmd", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    os.killpg(int((task.box / "cmd.pid").read_text()), signal.SIGKILL)
    task.release("cmd")
    retry = task.run(command, *output)
    assert retry.returncode == 0, retry.stderr
    assert (task.box / "resumed").exists()
    assert "removed" not in retry.stderr


def test_an_input_at_an_earlier_output_path_is_kept(task: Task, tmp_path: Path) -> None:
    """Work A's command writes out/ref.txt; work B stages an input to that path (a file://
    source declares no digest, so it is fetched again): B's command reads B's input."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "ref.txt").write_text("1 out/ref.txt\n")  # what attempt 1 writes
    output = ("-o", f"out/**=file://{tmp_path / 'dest'}/")
    assert task.run(writes("out/ref.txt"), *output).returncode == 0
    seen = task.box / "seen.txt"
    second = task.run(
        sh(f"cat out/ref.txt > {q(seen)}"), "-i", f"file://{source}/ref.txt=out/", *output
    )
    assert second.returncode == 0, second.stderr
    assert seen.read_text() == "1 out/ref.txt\n"
    assert "removed" not in second.stderr


def test_outputs_of_a_narrower_earlier_pattern_are_removed_too(task: Task, tmp_path: Path) -> None:
    """Work A publishes out/*.csv, work B out/*.txt: A's a.csv is removed though B's patterns
    do not match it (the command must not find it either); B's own file stays."""
    assert task.run(writes("out/a.csv"), "-o", f"out/*.csv=file://{tmp_path}/d1/").returncode == 0
    second = task.run(writes("out/b.txt"), "-o", f"out/*.txt=file://{tmp_path}/d2/")
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (task.workdir / "out").iterdir()) == ["b.txt"]


def test_a_damaged_ledger_removes_nothing_and_says_so(task: Task, tmp_path: Path) -> None:
    """A ledger that cannot be read: one note, nothing removed, and a fresh ledger from then
    on (the next change of work removes what this attempt wrote)."""
    output = ("-o", f"out/**=file://{tmp_path / 'dest'}/")
    assert task.run(writes("out/a.csv"), *output).returncode == 0
    (ledger,) = ledgers(task)
    ledger.write_text('{"version": 1, "products": ')
    second = task.run(writes("out/b.csv"), *output)
    assert second.returncode == 0, second.stderr
    notes = [line for line in second.stderr.splitlines() if "the ledger of" in line]
    assert len(notes) == 1, notes
    assert "cannot be read" in notes[0]
    assert "no earlier output is removed" in notes[0]
    assert (task.workdir / "out" / "a.csv").exists()
    third = task.run(writes("out/c.csv"), *output)
    assert third.returncode == 0, third.stderr
    assert sorted(p.name for p in (task.workdir / "out").iterdir()) == ["a.csv", "c.csv"]


def test_the_dry_run_lists_the_removals_and_removes_nothing(task: Task, tmp_path: Path) -> None:
    """After work A, a dry run of work B prints one ``remove`` line per output of A and
    changes nothing; the real run then removes exactly those."""
    dest = tmp_path / "dest"
    output = ("-o", f"out/**=file://{dest}/")
    assert task.run(writes("out/a.csv", "out/b.csv"), *output).returncode == 0
    work_a = task.attempt(1)["fingerprint"]
    before = snapshot(task.workdir, task.state_dir, dest)
    dry = task.run(writes("out/a.csv"), *output, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert snapshot(task.workdir, task.state_dir, dest) == before
    removals = [line for line in dry.stdout.splitlines() if line.startswith("remove ")]
    assert removals == [
        f"remove      out/a.csv  (an output of earlier work {work_a})",
        f"remove      out/b.csv  (an output of earlier work {work_a})",
    ]
    same = task.run(writes("out/a.csv", "out/b.csv"), *output, "--dry-run")
    assert not [line for line in same.stdout.splitlines() if line.startswith("remove")]


def test_a_running_attempt_of_other_work_keeps_its_files(task: Task, tmp_path: Path) -> None:
    """While attempt 1 (work A) blocks mid-command in the directory, attempt 2 of work B does
    not remove what attempt 1 is writing, and says why."""
    output = ("-o", f"out/**=file://{tmp_path / 'dest'}/")
    proc = task.start(writes("out/a.csv", then=task.block("cmd")), *output)
    task.wait_started("cmd", proc)
    seen = task.box / "seen.txt"
    second = task.run(sh(f"ls out > {q(seen)}"), *output)
    assert "a.csv" in seen.read_text().split()
    assert "may still be running in this working directory" in second.stderr
    task.release("cmd")
    proc.communicate(timeout=60)


@pytest.mark.azurite
def test_an_input_skipped_as_identical_at_an_earlier_output_path_is_kept(
    task: Task, azurite: Azurite, azurite_container: str
) -> None:
    """Work A publishes out/ref.txt to Azurite (with its taskkit digest); work B stages that
    blob back to out/ref.txt, which staging skips as identical (the file is A's product,
    unchanged): it is B's input now, so it is not removed and B's command reads it."""
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    first = task.run(writes("out/ref.txt"), "-o", f"out/**=az://{azurite_container}/a/", env=env)
    assert first.returncode == 0, first.stderr
    seen = task.box / "seen.txt"
    work_b = [
        "-i",
        f"az://{azurite_container}/a/ref.txt=out/",
        "-o",
        f"out/**=az://{azurite_container}/b/",
    ]
    reads = sh(f"cat out/ref.txt > {q(seen)}")
    dry = task.run(reads, *work_b, "--dry-run", env=env)
    skips = [line for line in dry.stdout.splitlines() if line.startswith("skip")]
    assert len(skips) == 1, dry.stdout  # the case under test: staging skips the file
    assert skips[0].startswith(f"skip     az://{azurite_container}/a/ref.txt -> out/ref.txt")
    assert not [line for line in dry.stdout.splitlines() if line.startswith("remove")]
    second = task.run(reads, *work_b, env=env)
    assert second.returncode == 0, second.stderr
    assert seen.read_text() == "1 out/ref.txt\n"
    assert "removed" not in second.stderr


def test_a_tampered_ledger_never_removes_a_file_outside_the_working_directory(
    task: Task, tmp_path: Path
) -> None:
    """The ledger is within the command's reach: a product it names through a link to a
    directory outside (with the outside file's true identity) is not removed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.csv"
    victim.write_text("not taskkit's\n")
    output = ("-o", f"out/**=file://{tmp_path / 'dest'}/")
    assert task.run(writes("out/a.csv"), *output).returncode == 0
    (task.workdir / "out" / "link").symlink_to(outside)
    (ledger,) = ledgers(task)
    data = json.loads(ledger.read_text())
    st = victim.stat()
    work_a = task.attempt(1)["fingerprint"]
    data["products"]["out/link/victim.csv"] = [work_a, st.st_ino, st.st_size, st.st_mtime_ns]
    ledger.write_text(json.dumps(data))
    second = task.run(writes("out/b.csv"), *output)
    assert second.returncode == 0, second.stderr
    assert victim.read_text() == "not taskkit's\n"
    assert not (task.workdir / "out" / "a.csv").exists()  # the ledger's true entry still holds


# -- a killed attempt bounded by when its command was gone ---------------------------------------


def tombstones(task: Task, attempt: int) -> list[Path]:
    return sorted(task.workdir.glob(f"{LEDGER_PREFIX}*-{attempt:05d}.ended"))


def wait_for_tombstone(task: Task, attempt: int) -> Path:
    wait_for(lambda: len(tombstones(task, attempt)) == 1, f"the tombstone of attempt {attempt}")
    (found,) = tombstones(task, attempt)
    return found


def after(task: Task, moment: Path) -> None:
    """Wait until the filesystem's clock has passed ``moment``'s change time: it ticks
    coarsely, and a file written in the same tick is not later."""
    probe = task.box / "clock"

    def past() -> bool:
        probe.write_bytes(b"")
        return probe.stat().st_ctime_ns > moment.stat().st_ctime_ns

    wait_for(past, "the filesystem's clock to pass the tombstone")


def removed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "removed" in line]


def test_a_file_the_user_adds_after_a_killed_attempt_is_kept(task: Task, tmp_path: Path) -> None:
    """The reviewer's case: work A is killed -9 mid-command after writing w1-partial.txt; its
    watchdog ends the command and leaves the tombstone. Then the user adds mine.txt and edits
    before.txt (there before A ran). Work B removes only A's partial output, keeps and
    publishes the user's files with its own, and the settled tombstone is gone."""
    out = task.workdir / "out"
    out.mkdir()
    (out / "before.txt").write_text("before\n")
    proc = task.start(
        writes("out/w1-partial.txt", then=task.block("cmd")),
        "-o",
        f"out/**=file://{tmp_path / 'd1'}/",
    )
    task.wait_started("cmd", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    stone = wait_for_tombstone(task, 1)
    after(task, stone)
    (out / "mine.txt").write_text("mine\n")
    (out / "before.txt").write_text("before, edited by the user\n")

    second = task.run(writes("out/w2.txt"), "-o", f"out/**=file://{tmp_path / 'd2'}/")
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in out.iterdir()) == ["before.txt", "mine.txt", "w2.txt"]
    assert (out / "mine.txt").read_text() == "mine\n"
    assert names(tmp_path / "d2") == ["before.txt", "mine.txt", "w2.txt"]
    assert removed_lines(second.stderr) == [
        f"taskkit: note: removed 1 output of earlier work ({task.attempt(1)['fingerprint']}): "
        "out/w1-partial.txt"
    ]
    assert "is not known" not in second.stderr
    assert tombstones(task, 1) == []


def watchdog_of(leader: int) -> int:
    """The watchdog of the command led by ``leader``: its pid is the command's mark."""
    environ = Path(f"/proc/{leader}/environ").read_bytes().split(b"\0")
    (mark,) = [v for v in environ if v.startswith(MARK.encode() + b"=")]
    return int(mark.split(b"=", 1)[1])


def test_with_its_watchdog_killed_too_the_next_attempt_bounds_the_killed_one(
    task: Task, tmp_path: Path
) -> None:
    """Runner and watchdog of work A killed -9 mid-command: the command runs on. Attempt 2
    (work B, whose input does not exist) kills it before anything else, leaves the tombstone
    then, and fails. A file the user adds after that is kept by attempt 3 (work C), which
    removes A's partial output and needs no note of an unknown end."""
    out = task.workdir / "out"
    proc = task.start(
        writes("out/w1-partial.txt", then=task.block("cmd")),
        "--max-retries",
        "5",
        "-o",
        f"out/**=file://{tmp_path / 'd1'}/",
    )
    task.wait_started("cmd", proc)
    leader = int((task.box / "cmd.pid").read_text())
    os.kill(watchdog_of(leader), signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert Path(f"/proc/{leader}").exists()  # nothing ended the command
    assert tombstones(task, 1) == []

    missing = ("-i", f"file://{tmp_path / 'no-such-input.txt'}=in/")
    second = task.run(
        ["true"], "--max-retries", "5", *missing, "-o", f"out/**=file://{tmp_path}/d2/"
    )
    assert second.returncode == 201, second.stderr
    assert "killed what was left of attempt 1's command" in second.stderr
    stone = wait_for_tombstone(task, 1)
    after(task, stone)
    (out / "mine.txt").write_text("mine\n")

    third = task.run(
        writes("out/w3.txt"), "--max-retries", "5", "-o", f"out/**=file://{tmp_path}/d3/"
    )
    assert third.returncode == 0, third.stderr
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "w3.txt"]
    assert removed_lines(third.stderr) == [
        f"taskkit: note: removed 1 output of earlier work ({task.attempt(1)['fingerprint']}): "
        "out/w1-partial.txt"
    ]
    assert "is not known" not in third.stderr
    assert tombstones(task, 1) == []


def test_a_tombstone_in_a_shared_working_directory_is_not_published(
    task: Task, tmp_path: Path
) -> None:
    """A killed attempt's tombstone waiting in the working directory: another task's run
    there with the widest patterns publishes none of taskkit's own files, and leaves the
    tombstone to its task."""
    proc = task.start(
        writes("out/a.csv", then=task.block("cmd")), "-o", f"out/**=file://{tmp_path}/d1/"
    )
    task.wait_started("cmd", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    stone = wait_for_tombstone(task, 1)
    (tmp_path / "other").mkdir()
    with opened_task(tmp_path / "other", task="task-2") as other:
        wide = ("-o", f"**=file://{tmp_path}/wide/", "-o", f"*=file://{tmp_path}/top/")
        run = other.run(writes("b.csv"), *wide, workdir=task.workdir)
        assert run.returncode == 0, run.stderr
    assert names(tmp_path / "wide") == ["b.csv", "out/a.csv"]
    assert names(tmp_path / "top") == ["b.csv"]
    assert stone.exists()


def test_when_no_moment_is_known_all_is_charged_and_a_note_names_the_files(
    task: Task, tmp_path: Path
) -> None:
    """Runner and watchdog of work A killed -9, and its record without the runner's start
    time (as where there is no /proc): the next attempt ends the group but cannot tell that
    nothing of the command is left, so no tombstone; work B then takes every new file for A's
    (the user's too, as before) and a note names them and says why."""
    out = task.workdir / "out"
    proc = task.start(
        writes("out/w1-partial.txt", then=task.block("cmd")),
        "--max-retries",
        "5",
        "-o",
        f"out/**=file://{tmp_path}/d1/",
    )
    task.wait_started("cmd", proc)
    leader = int((task.box / "cmd.pid").read_text())
    wait_for(lambda: task.attempt(1).get("command_pgid") == leader, "the recorded group")
    os.kill(watchdog_of(leader), signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    record = task.journal / "attempts" / "00001.json"
    data = json.loads(record.read_text())
    data["pid_start"] = None
    record.write_text(json.dumps(data))
    (out / "mine.txt").write_text("mine\n")

    second = task.run(
        writes("out/w2.txt"), "--max-retries", "5", "-o", f"out/**=file://{tmp_path}/d2/"
    )
    assert second.returncode == 0, second.stderr
    assert "killed what was left of attempt 1's command" in second.stderr
    work_a = task.attempt(1)["fingerprint"]
    assert (
        f"taskkit: note: attempt 1 ({work_a}) was interrupted and when its command ended is not "
        "known, so what its output patterns match that is new or changed since it started is "
        "taken for its outputs (2 files): out/mine.txt, out/w1-partial.txt\n"
    ) in second.stderr
    assert sorted(p.name for p in out.iterdir()) == ["w2.txt"]
    assert tombstones(task, 1) == []
