"""An OSError about the user's own local paths is one line naming what the user typed.

A DEST the filesystem cannot hold (a name over 255 bytes, a path over PATH_MAX) is a bad value:
64 in ``taskkit stage``, 200 in ``taskkit run``. A ``--cache-dir`` (or ``TASKKIT_NODE_CACHE``)
that cannot be made or written, a file where the working directory should be, and a full disk
under the task directory are local I/O: 74 in stage, 203 in run. Never the internal error
206, never a message naming taskkit's ``.taskkit-*.partial`` file or a file deep inside the
cache, never a traceback; the attempt's record always gets its end. ``TASKKIT_DEBUG`` adds a
traceback and changes nothing else.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from observing import Recorder
from runner_helpers import Task, invoke, opened_task, q, sh

from taskkit.runner.run import run
from taskkit.runner.spec import RunSpec

LONG_NAME = "N" * 300  # one segment over NAME_MAX (255 bytes)
LONG_PATH = "/".join(["M" * 250] * 18)  # every segment fine, the whole over PATH_MAX (4096)


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        (opened.root / "src").mkdir()
        (opened.root / "src" / "a.txt").write_text("alpha\n")
        yield opened


def source(task: Task) -> str:
    return f"file://{task.root / 'src' / 'a.txt'}"


def marker(task: Task) -> list[str]:
    """A command that leaves a mark in the box: whether it ran."""
    return sh(f"touch {q(task.box / 'ran')}")


def the_line(stderr: str, *fragments: str) -> str:
    """The one line of ``stderr`` holding every fragment; nothing on stderr is an internal
    error, a traceback or taskkit's partial file."""
    found = [line for line in stderr.splitlines() if all(f in line for f in fragments)]
    assert len(found) == 1, (fragments, stderr)
    assert "internal error" not in stderr
    assert "Traceback" not in stderr
    assert ".taskkit-" not in stderr
    return found[0]


def one_error_line(stderr: str, *fragments: str) -> str:
    """Exactly one ``taskkit: error:`` line, holding every fragment (in ``run`` the attempt's
    closing note repeats it as its reason); nothing is an internal error, a traceback or
    taskkit's partial file."""
    errors = [line for line in stderr.splitlines() if line.startswith("taskkit: error: ")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert "internal error" not in stderr
    assert "Traceback" not in stderr
    assert ".taskkit-" not in stderr
    return errors[0]


def nothing_partial(*roots: Path) -> None:
    for root in roots:
        left = [p for p in root.rglob("*") if p.name.startswith(".taskkit-")]
        assert not left, left


def assert_ended(task: Task, code: int, verdict: str, *fragments: str) -> None:
    """Attempt 1 has its end: ``code``, ``verdict``, a reason holding ``fragments``; status
    shows it ended, not interrupted."""
    record = task.attempt(1)
    assert record["ended"] is not None
    assert (record["exit_code"], record["verdict"]) == (code, verdict)
    for fragment in fragments:
        assert fragment in record["reason"], (fragment, record["reason"])
    (shown,) = task.status()["attempts"]
    assert shown["state"] == "ended"


# -- a DEST the filesystem cannot hold ------------------------------------------------------------


@pytest.mark.parametrize("dest", [LONG_NAME, LONG_PATH, f"in/{LONG_NAME}/a.txt"])
def test_stage_refuses_a_dest_too_long_naming_it(task: Task, dest: str) -> None:
    """`stage` with a DEST segment over 255 bytes or a path over PATH_MAX: 64, one error line
    naming the DEST as typed (not the partial file), nothing written."""
    code, _, stderr = invoke(
        ["stage", "--workdir", str(task.workdir), "-i", f"{source(task)}={dest}"],
        env=task.env,
    )
    assert code == 64, stderr
    one_error_line(stderr, dest, "too long")
    assert list(task.workdir.iterdir()) == []


@pytest.mark.parametrize("dest", [LONG_NAME, LONG_PATH])
def test_run_refuses_a_dest_too_long_with_the_command_line(task: Task, dest: str) -> None:
    """`run` with such a DEST: 200 (a bad value; a retry cannot help), not 206, one line,
    refused with the rest of the command line: no attempt begins, the command does not run."""
    proc = task.run(marker(task), "-i", f"{source(task)}={dest}")
    assert proc.returncode == 200, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    one_error_line(proc.stderr, dest, "too long")
    assert not (task.box / "ran").exists()
    assert task.attempts() == []


def test_run_with_a_dest_too_long_below_its_workdir_ends_the_attempt(task: Task) -> None:
    """A DEST that fits alone but not below the working directory is known once the attempt
    plans: 200, not 206; the command does not run and the attempt's record is ended."""
    workdir = task.root / "w" / ("W" * 250)
    dest = "/".join(["M" * 250] * 15)  # 3779 bytes: fits alone, not below `workdir`
    proc = task.run(marker(task), "-i", f"{source(task)}={dest}", workdir=workdir)
    assert proc.returncode == 200, proc.stderr
    one_error_line(proc.stderr, dest, "too long")
    assert not (task.box / "ran").exists()
    assert_ended(task, 200, "permanent", "too long")
    nothing_partial(task.root / "w")


def test_a_short_name_below_a_long_dest_is_a_bad_remote_name(task: Task) -> None:
    """A prefix DEST that fits, with a file whose path below it does not: that file is
    refused (65, naming it), never an OSError on the partial file."""
    deep = task.root / "src" / "p" / ("D" * 250) / ("E" * 250)
    deep.mkdir(parents=True)
    (deep / "x.txt").write_text("x\n")
    # Fits below the working directory with 10 bytes to spare, whatever tmp_path's length
    # (3840 bytes: the longest local path taskkit makes), and nothing more does.
    room = 3840 - len(os.fsencode(str(task.workdir))) - 1 - 10
    dest = "/".join(["M" * 250] * (room // 251) + ["M" * max(room % 251 - 1, 1)]) + "/"
    given = f"file://{task.root / 'src' / 'p'}/={dest}"
    code, _, stderr = invoke(["stage", "--workdir", str(task.workdir), "-i", given], env=task.env)
    assert code == 65, stderr
    one_error_line(stderr, "x.txt", "too long")
    nothing_partial(task.workdir)


# -- a node cache that cannot be made or written --------------------------------------------------


def a_file(path: Path) -> Path:
    path.write_text("not a directory\n")
    return path


@pytest.mark.parametrize("how", ["--cache-dir a file", "--cache-dir below a file", "env a file"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_stage_with_an_unusable_cache_names_the_setting(
    task: Task, how: str, dry_run: bool
) -> None:
    """`stage` with a node cache where a file is in the way: 74 (local I/O), one line naming
    the setting the user gave and its value, not a path inside the cache; nothing staged."""
    blocker = a_file(task.root / "afile")
    cache = blocker / "sub" if "below" in how else blocker
    options = ["--cache-dir", str(cache)] if how.startswith("--") else []
    env = {**task.env, **({} if options else {"TASKKIT_NODE_CACHE": str(cache)})}
    code, _, stderr = invoke(
        ["stage", "--workdir", str(task.workdir), "-i", source(task), *options]
        + (["--dry-run"] if dry_run else []),
        env=env,
    )
    assert code == 74, stderr
    named = "--cache-dir" if options else "TASKKIT_NODE_CACHE"
    line = one_error_line(stderr, named, str(cache), "not a directory")
    assert "locks" not in line
    assert list(task.workdir.iterdir()) == []


@pytest.mark.parametrize("how", ["--cache-dir", "TASKKIT_NODE_CACHE"])
def test_run_with_a_cache_dir_that_is_a_file_is_local_io(task: Task, how: str) -> None:
    """`run` with the node cache on a file: 203, retryable, never 206; the command does not
    run and the record is ended."""
    cache = a_file(task.root / "afile")
    options = ("--cache-dir", str(cache)) if how == "--cache-dir" else ()
    env = {} if options else {"TASKKIT_NODE_CACHE": str(cache)}
    proc = task.run(marker(task), "-i", source(task), *options, env=env)
    assert proc.returncode == 203, proc.stderr
    the_line(proc.stderr, how, "not a directory", "exit 203")
    assert not (task.box / "ran").exists()
    assert_ended(task, 203, "retryable", how, str(cache))


@pytest.fixture
def read_only(small_disk: Path) -> Path:
    """The small disk, remounted read-only."""
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True, timeout=30)
    return small_disk


def test_a_read_only_cache_dir_is_local_io_in_stage_and_run(task: Task, read_only: Path) -> None:
    """A --cache-dir on a read-only filesystem: 74 in stage, 203 in run, one line naming
    --cache-dir and saying read-only."""
    cache = read_only / "cache"
    code, _, stderr = invoke(
        ["stage", "--workdir", str(task.workdir), "-i", source(task), "--cache-dir", str(cache)],
        env=task.env,
    )
    assert code == 74, stderr
    one_error_line(stderr, "--cache-dir", str(cache), "read-only file system")
    proc = task.run(marker(task), "-i", source(task), "--cache-dir", str(cache))
    assert proc.returncode == 203, proc.stderr
    the_line(proc.stderr, "--cache-dir", "read-only file system", "exit 203")
    assert_ended(task, 203, "retryable", "read-only file system")


# -- a file where the working directory should be ------------------------------------------------


@pytest.mark.parametrize("inputs", [True, False], ids=["inputs", "no-inputs"])
def test_a_working_directory_that_is_a_file_is_local_io_everywhere(
    task: Task, inputs: bool
) -> None:
    """stage (74), run --dry-run (203) and run (203) agree: a file in the way of the working
    directory is local I/O, one line naming it."""
    workdir = a_file(task.root / "wd-file")
    given = ("-i", source(task)) if inputs else ()
    if inputs:
        code, _, stderr = invoke(
            ["stage", "--workdir", str(workdir), *given, "--dry-run"], env=task.env
        )
        assert code == 74, stderr
        one_error_line(stderr, str(workdir), "not a directory")
    dry = task.run(marker(task), *given, "--dry-run", workdir=workdir)
    assert dry.returncode == 203, dry.stderr
    one_error_line(dry.stderr, "wd-file", "not a directory")
    real = task.run(marker(task), *given, workdir=workdir)
    assert real.returncode == 203, real.stderr
    assert not (task.box / "ran").exists()
    assert_ended(task, 203, "retryable", "wd-file")


# -- a full disk under the task directory ---------------------------------------------------------


def fill(disk: Path) -> None:
    """Write ``disk`` full: unbuffered writes until one fails for want of space."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError, match="No space left on device"):
            _write_forever(fd)
    finally:
        os.close(fd)


def _write_forever(fd: int) -> None:
    while True:
        os.write(fd, b"\0" * 65536)


def test_a_full_task_directory_ends_the_attempt_before_its_command(
    task: Task, small_disk: Path
) -> None:
    """$AZ_BATCH_TASK_DIR on a full disk (the attempt's folders can be made, no byte can be
    written): 203 before the command runs, one line naming the log, the record ended; not a
    successful attempt with empty stored logs."""
    task_dir = small_disk / "task"
    task_dir.mkdir()
    fill(small_disk)
    proc = task.run(marker(task), env={"AZ_BATCH_TASK_DIR": str(task_dir)})
    assert proc.returncode == 203, proc.stderr
    the_line(proc.stderr, "cannot write the attempt's log", "no space left on device")
    assert not (task.box / "ran").exists()
    assert_ended(task, 203, "retryable", "cannot write the attempt's log", "taskkit.txt")


# -- TASKKIT_DEBUG shows a traceback and changes nothing else -------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize(
    ("raised", "code", "shown"),
    [
        (OSError(errno.ENAMETOOLONG, "File name too long", "/x/long"), 203, "file name too long"),
        (RuntimeError("a bug"), 206, "internal error: RuntimeError: a bug"),
    ],
    ids=["oserror", "bug"],
)
def test_an_untranslated_exception_still_ends_the_attempt(
    task: Task,
    monkeypatch: pytest.MonkeyPatch,
    debug: bool,
    raised: Exception,
    code: int,
    shown: str,
) -> None:
    """An exception escaping inside the attempt: an OSError is local I/O (203), anything else
    an internal error (206); either way the attempt's record is ended and run's band code
    returned. TASKKIT_DEBUG adds the traceback and nothing else."""
    for name in [n for n in os.environ if n.startswith(("TASKKIT_", "AZ_BATCH_"))]:
        monkeypatch.delenv(name)
    if debug:
        monkeypatch.setenv("TASKKIT_DEBUG", "1")
    heard = Recorder()

    def launch(*args: Any, **kwargs: Any) -> Any:
        raise raised

    spec = RunSpec.model_validate(
        {
            "command": ["true"],
            "state": task.state,
            "job_id": task.job,
            "task_id": task.task,
            "workdir": str(task.workdir),
        }
    )
    result = run(spec, environ={}, launch=launch, observer=heard)
    assert result == code
    assert_ended(task, code, "retryable", shown)
    traceback = [str(m) for m in heard.of("debug")]
    if debug:
        assert traceback[0].startswith("Traceback"), traceback
        assert type(raised).__name__ in traceback[-1]
    else:
        assert traceback == []
