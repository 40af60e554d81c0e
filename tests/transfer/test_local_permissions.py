"""A local path this node may not write (EACCES/EPERM) is node-local, never a verdict on the work.

In ``taskkit run`` it is local I/O: 203, retryable, one error line, the attempt's record ended
with that verdict and nothing permanent recorded, so a later attempt on a node that can write
runs the command. ``taskkit stage`` keeps 77. A permission refused by storage (HTTP 403) stays
a permanent 200. The directories are made unwritable for real (``chattr +i``, or else a
read-only bind mount), which needs root; the tests are skipped, saying why, where neither works.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runner_helpers import TASKKIT, Task, opened_task, q, sh

from taskkit.exceptions import (
    ConfigError,
    IOFailure,
    LocalPermissionDenied,
    PermissionDenied,
    from_os_error,
)
from taskkit.runner.policy import Verdict, error_verdict

Lock = Callable[[Path], None]


def _quiet(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


@pytest.fixture
def lock(tmp_path: Path) -> Iterator[Lock]:
    """Makes a directory unwritable to this process, root included: ``chattr +i`` where the
    filesystem has it, else a read-only bind mount of the directory onto itself; undone at the
    end of the test. Skips the test, saying why, when neither can be done here."""
    undo: list[list[str]] = []

    def locking(path: Path) -> None:
        tried = _quiet(["chattr", "+i", str(path)]) if _has("chattr") else None
        if tried is not None and tried.returncode == 0:
            undo.append(["chattr", "-i", str(path)])
            return
        bound = _quiet(["mount", "--bind", str(path), str(path)])
        if bound.returncode != 0:
            why = (tried.stderr.strip() if tried else "no chattr") + "; " + bound.stderr.strip()
            pytest.skip(f"cannot make a directory unwritable (chattr +i, bind mount): {why}")
        undo.append(["umount", str(path)])
        remounted = _quiet(["mount", "-o", "remount,ro,bind", str(path)])
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount a bind mount read-only: {remounted.stderr.strip()}")

    try:
        yield locking
    finally:
        for argv in reversed(undo):
            subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _has(program: str) -> bool:
    return _quiet(["sh", "-c", f"command -v {program}"]).returncode == 0


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        (opened.root / "src").mkdir()
        (opened.root / "src" / "a.txt").write_text("alpha\n")
        yield opened


def marker(task: Task) -> list[str]:
    """A command that leaves a mark in the box: whether it ran."""
    return sh(f"touch {q(task.box / 'ran')}")


def one_line(stderr: str, *fragments: str) -> str:
    """The one line of ``stderr`` holding every fragment; no internal error, no traceback."""
    found = [line for line in stderr.splitlines() if all(f in line for f in fragments)]
    assert len(found) == 1, (fragments, stderr)
    assert "internal error" not in stderr
    assert "Traceback" not in stderr
    return found[0]


def assert_retryable_end(task: Task) -> None:
    """Attempt 1 ended 203, retryable; no permanent outcome is recorded for the work."""
    record = task.attempt(1)
    assert record["ended"] is not None
    assert (record["exit_code"], record["verdict"]) == (203, "retryable"), record
    outcome = task.outcome()
    assert outcome is None or outcome.get("verdict") != "permanent", outcome


def src_url(task: Task) -> str:
    return f"file://{task.root / 'src'}/"


#: What the attempt needs to write in the locked working directory: the inputs' folder, the
#: outputs ledger (no inputs), or a file straight into it.
NEEDS = {
    "inputs' folder": lambda task: ["-i", f"{src_url(task)}=in/"],
    "a file in it": lambda task: ["-i", f"file://{task.root / 'src' / 'a.txt'}=a.txt"],
    "outputs ledger": lambda task: [
        "--allow-empty",
        "-o",
        f"out/*.txt=file://{task.root / 'dest'}/",
    ],
}


@pytest.mark.parametrize("need", list(NEEDS))
def test_an_unwritable_workdir_is_retryable_and_a_writable_one_then_runs(
    task: Task, lock: Lock, need: str
) -> None:
    """A working directory this node may not write: 203, one line, the attempt ended
    retryable; the same work on another (writable) working directory then runs, exit 0."""
    options = ["--max-retries", "3", *NEEDS[need](task)]
    locked = task.root / "locked"
    locked.mkdir()
    lock(locked)
    proc = task.run(marker(task), *options, workdir=locked)
    assert proc.returncode == 203, proc.stderr
    one_line(proc.stderr, str(locked), "not permitted", "(exit 203)")
    assert not (task.box / "ran").exists()
    assert_retryable_end(task)
    again = task.run(marker(task), *options, workdir=task.root / "healthy")
    assert again.returncode == 0, again.stderr
    assert (task.box / "ran").exists()


def test_an_unwritable_inputs_folder_is_retryable(task: Task, lock: Lock) -> None:
    """The inputs' own folder (not the working directory) locked: 203, and a later attempt
    once it is writable stages and runs."""
    workdir = task.root / "w"
    (workdir / "in").mkdir(parents=True)
    lock(workdir / "in")
    options = ["--max-retries", "3", "-i", f"{src_url(task)}=in/"]
    proc = task.run(marker(task), *options, workdir=workdir)
    assert proc.returncode == 203, proc.stderr
    one_line(proc.stderr, str(workdir / "in"), "(exit 203)")
    assert_retryable_end(task)
    again = task.run(marker(task), *options, workdir=task.root / "w2")
    assert again.returncode == 0, again.stderr
    assert (task.root / "w2" / "in" / "a.txt").read_text() == "alpha\n"


def test_stage_into_an_unwritable_folder_keeps_77(task: Task, lock: Lock) -> None:
    """``taskkit stage`` is not in the run band: a local permission error is still 77."""
    workdir = task.root / "w"
    workdir.mkdir()
    lock(workdir)
    argv = [*TASKKIT, "stage", "--workdir", str(workdir), "-i", f"{src_url(task)}=in/"]
    proc = task.taskkit(argv)
    assert proc.returncode == 77, proc.stderr
    one_line(proc.stderr, "taskkit: error: ", str(workdir), "not permitted")


# -- the classes behind it ------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_a_local_permission_error_is_local_io_in_run(code: int) -> None:
    """from_os_error makes EACCES and EPERM a LocalPermissionDenied: 77 for stage/upload,
    203 and retryable for run."""
    made = from_os_error(PermissionError(code, "denied", "/w/in"), "cannot create")
    assert isinstance(made, LocalPermissionDenied)
    assert made.exit_code == 77
    assert made.run_code == 203
    assert error_verdict(made) is Verdict.RETRYABLE


def test_other_permissions_stay_permanent() -> None:
    """A permission storage refused (403 is a ConfigError) or a plain PermissionDenied is
    still 200, permanent; a local I/O error is still 203."""
    for error in (ConfigError("access denied (HTTP 403)"), PermissionDenied("may not write")):
        assert error.run_code == 200
        assert error_verdict(error) is Verdict.PERMANENT
    assert IOFailure("disk full").run_code == 203
