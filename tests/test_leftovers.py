"""Outputs left by earlier work (taskkit/leftovers.py): the pure plan, the ledger, and real
``taskkit run`` processes changing their work in one working directory.

The process tests use the ``runner_helpers.Task`` harness (``file://`` state and outputs under
tmp_path); commands mark what they saw in ``box``, outside the working directory.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import Task, opened_task, q, sh, snapshot

from taskkit.leftovers import (
    LEDGER_PREFIX,
    Ledger,
    Opened,
    Product,
    Removal,
    Tidy,
    plan,
)
from taskkit.outputs import MANIFEST_NAME
from taskkit.testing import Azurite

A, B, C = "xxh3-128:" + "a" * 32, "xxh3-128:" + "b" * 32, "xxh3-128:" + "c" * 32


def dead(entry: Opened) -> bool:
    return False


def running(entry: Opened) -> bool:
    return True


def opened(work: str, before: dict[str, tuple[int, int, int]], *patterns: str) -> Opened:
    return Opened(1, work, patterns or ("out/**",), "host/boot", 4242, "77", before)


# -- the plan, pure ------------------------------------------------------------------------------


def test_without_a_ledger_nothing_is_removed() -> None:
    """No ledger (first attempt here, or an older taskkit): whatever matches is kept."""
    tidy = plan(None, {"out/a.csv": (1, 2, 3)}, {"out/**": {"out/a.csv"}}, A, (), dead)
    assert tidy == Tidy((), {}, (), ())


def test_products_of_other_work_go_and_those_of_this_work_stay() -> None:
    """Each recorded product still as recorded: removed when another work made it, kept (and
    still recorded) when this work did; removals come sorted."""
    ledger = Ledger(
        {
            "out/b.csv": Product(A, (2, 1, 1)),
            "out/a.csv": Product(A, (1, 1, 1)),
            "out/mine.csv": Product(B, (3, 1, 1)),
            "out/older.csv": Product(C, (4, 1, 1)),
        },
        (),
    )
    files = {"out/a.csv": (1, 1, 1), "out/b.csv": (2, 1, 1), "out/mine.csv": (3, 1, 1)}
    files["out/older.csv"] = (4, 1, 1)
    tidy = plan(ledger, files, {"out/**": set(files)}, B, (), dead)
    assert tidy.removals == (
        Removal("out/a.csv", A),
        Removal("out/b.csv", A),
        Removal("out/older.csv", C),
    )
    assert tidy.products == {"out/mine.csv": Product(B, (3, 1, 1))}
    assert plan(ledger, files, {"out/**": set(files)}, A, (), dead).removals == (
        Removal("out/mine.csv", B),
        Removal("out/older.csv", C),
    )


@pytest.mark.parametrize(
    "now",
    [
        None,  # gone
        (1, 1, 2),  # rewritten (mtime)
        (1, 5, 1),  # size
        (9, 1, 1),  # replaced by another file (inode)
    ],
)
def test_a_product_changed_or_gone_since_is_not_ours_any_more(
    now: tuple[int, int, int] | None,
) -> None:
    """A product whose identity moved since it was recorded (someone else wrote there) is
    neither removed nor kept in the ledger."""
    ledger = Ledger({"out/a.csv": Product(A, (1, 1, 1))}, ())
    files = {} if now is None else {"out/a.csv": now}
    tidy = plan(ledger, files, {"out/**": set(files)}, B, (), dead)
    assert tidy.removals == ()
    assert tidy.products == {}


def test_an_input_staged_now_is_never_removed() -> None:
    """A product of other work at a path this attempt staged an input to (e.g. skipped as
    identical) is the input now: kept, and dropped from the products."""
    ledger = Ledger({"out/ref.fa": Product(A, (1, 1, 1)), "out/x": Product(A, (2, 1, 1))}, ())
    files = {"out/ref.fa": (1, 1, 1), "out/x": (2, 1, 1)}
    tidy = plan(ledger, files, {"out/**": set(files)}, B, {"out/ref.fa"}, dead)
    assert tidy.removals == (Removal("out/x", A),)
    assert tidy.products == {}


def test_an_attempt_killed_mid_command_is_closed_from_what_it_left() -> None:
    """An open entry whose process is gone: what its patterns match that was not there before
    its command, or is there changed, is its work's product; what was there unchanged (the
    user's) is not; a path its patterns do not cover is not looked at."""
    before = {"out/user.txt": (1, 1, 1), "out/rewritten.csv": (2, 1, 1)}
    ledger = Ledger({}, (opened(A, before, "out/*"),))
    files = {
        "out/user.txt": (1, 1, 1),
        "out/rewritten.csv": (2, 9, 9),
        "out/new.csv": (3, 1, 1),
        "other/new.csv": (4, 1, 1),
    }
    matched = {"out/*": {"out/user.txt", "out/rewritten.csv", "out/new.csv"}}
    matched["other/*"] = {"other/new.csv"}
    tidy = plan(ledger, files, matched, B, (), dead)
    assert tidy.removals == (Removal("out/new.csv", A), Removal("out/rewritten.csv", A))
    assert tidy.running == ()
    same = plan(ledger, files, matched, A, (), dead)
    assert same.removals == ()
    assert same.products == {
        "out/new.csv": Product(A, (3, 1, 1)),
        "out/rewritten.csv": Product(A, (2, 9, 9)),
    }


def test_a_killed_attempt_does_not_take_over_what_another_attempt_recorded() -> None:
    """An attempt of work A killed while an attempt of work B ran beside it and ended: B's
    recorded products (unchanged) stay B's, though they appeared after A's command began;
    one A rewrote becomes A's."""
    ledger = Ledger(
        {"out/b.csv": Product(B, (2, 1, 1)), "out/both.csv": Product(B, (3, 1, 1))},
        (opened(A, {}, "out/**"),),
    )
    files = {"out/a.csv": (1, 1, 1), "out/b.csv": (2, 1, 1), "out/both.csv": (3, 7, 7)}
    tidy = plan(ledger, files, {"out/**": set(files)}, B, (), dead)
    assert tidy.removals == (Removal("out/a.csv", A), Removal("out/both.csv", A))
    assert tidy.products == {"out/b.csv": Product(B, (2, 1, 1))}


def test_an_attempt_still_running_here_keeps_its_files() -> None:
    """An open entry whose process lives: the files it is writing and its work's recorded
    products are left alone, its entry stays open, and a note says why; products of a third
    work still go."""
    ledger = Ledger(
        {"out/old.csv": Product(A, (5, 1, 1)), "out/third.csv": Product(C, (6, 1, 1))},
        (opened(A, {"out/old.csv": (5, 1, 1), "out/third.csv": (6, 1, 1)}, "out/**"),),
    )
    files = {"out/writing.csv": (1, 1, 1), "out/old.csv": (5, 1, 1), "out/third.csv": (6, 1, 1)}
    tidy = plan(ledger, files, {"out/**": set(files)}, B, (), running)
    assert tidy.removals == (Removal("out/third.csv", C),)
    assert tidy.running == ledger.opened
    assert len(tidy.notes) == 1
    assert "attempt 1 of other work" in tidy.notes[0]
    assert "left alone" in tidy.notes[0]


def test_removal_notes_name_the_work_and_the_first_few_files() -> None:
    """One line per earlier work, counting every file and naming five."""
    removals = (*(Removal(f"out/{n}.csv", A) for n in range(7)), Removal("x", B))
    lines = Tidy(removals, {}, (), ()).removal_notes()
    assert lines == [
        f"removed 7 outputs of earlier work ({A}): "
        "out/0.csv, out/1.csv, out/2.csv, out/3.csv, out/4.csv and 2 more",
        f"removed 1 output of earlier work ({B}): x",
    ]


def test_the_ledger_reads_back_what_it_wrote_and_refuses_anything_else() -> None:
    """Round trip of products and open entries (odd names too); a damaged or foreign file,
    or one naming a path or pattern that leaves the working directory, is a ValueError,
    never a wrong ledger."""
    ledger = Ledger(
        {"out/a b\u00e9.csv": Product(A, (1, 2, 3)), "out/\udcff.csv": Product(A, (4, 5, 6))},
        (opened(B, {"out/u.txt": (4, 5, 6)}, "out/*", "x/**"),),
    )
    assert Ledger.from_bytes(ledger.to_bytes()) == ledger
    for damaged in (
        b"",
        b"{",
        b"[]",
        b'{"version": 2, "products": {}, "opened": []}',
        b'{"version": 1, "products": {"a": ["w", 1]}, "opened": []}',
        b'{"version": 1, "products": {}}',
        b'{"version": 1, "products": {"../x": ["w", 1, 2, 3]}, "opened": []}',
        b'{"version": 1, "products": {"/etc/x": ["w", 1, 2, 3]}, "opened": []}',
        b'{"version": 1, "products": {"out//x": ["w", 1, 2, 3]}, "opened": []}',
        ledger.to_bytes().replace(b'"out/u.txt"', b'"out/./u.txt"'),
        ledger.to_bytes().replace(b'"x/**"', b'"../**"'),
        ledger.to_bytes()[:-5],
    ):
        with pytest.raises(ValueError, match="not a ledger"):
            Ledger.from_bytes(damaged)


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
