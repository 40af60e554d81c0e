"""taskkit.runner.diagnostics: what a failing task's last attempt writes down, and what it never
does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from observing import Warnings, taskkit_records

import taskkit
from taskkit.runner.diagnostics import LISTED_FILES, diagnostics, write_diagnostics
from taskkit.runner.policy import Decision, Verdict

DECISION = Decision(Verdict.PERMANENT, 3, "exit code 3 is a permanent code")
SECRET = "supersecretvalue"
ENV = {
    "TASKKIT_STATE": "memory://state",
    "TASKKIT_MAX_RETRIES": "2",
    "AZ_BATCH_TASK_ID": "task-7",
    "AZ_BATCH_NODE_ID": "tvm-1",
    "MY_TOKEN": SECRET,
    "HOME": "/home/secret-home-dir",
    "PATH": "/usr/bin",
}


def _lines(workdir: Path | str, env: dict[str, str] | None = None) -> list[str]:
    return list(diagnostics(str(workdir), ENV if env is None else env, DECISION))


def test_the_first_line_says_why_the_attempt_failed(workdir: Path) -> None:
    """The reason and the exit code lead."""
    first = _lines(workdir)[0]
    assert "exit code 3 is a permanent code" in first
    assert "(exit 3)" in first


def test_names_taskkit_and_python_versions(workdir: Path) -> None:
    """A line gives taskkit's version and Python's."""
    assert any(f"taskkit {taskkit.__version__}, Python " in line for line in _lines(workdir))


def test_every_line_is_one_diagnostics_line(workdir: Path) -> None:
    """Each item is one line starting "diagnostics: ", even for a file name with a newline."""
    (workdir / "bad\nname.txt").write_bytes(b"x")
    lines = _lines(workdir)
    assert lines
    for line in lines:
        assert line.startswith("diagnostics: ")
        assert "\n" not in line


def test_lists_the_working_directory_files(workdir: Path) -> None:
    """Each file of the working directory (also in subdirectories) with its size, and a count."""
    (workdir / "sub").mkdir()
    (workdir / "a.txt").write_bytes(b"abc")
    (workdir / "sub" / "b.bin").write_bytes(b"12345")
    lines = _lines(workdir)
    assert "diagnostics: file 'a.txt' 3 bytes" in lines
    assert f"diagnostics: file {os.path.join('sub', 'b.bin')!r} 5 bytes" in lines
    assert f"diagnostics: 2 files in the working directory {workdir}" in lines


def test_an_empty_working_directory_is_zero_files(workdir: Path) -> None:
    """No files: the count says 0."""
    assert f"diagnostics: 0 files in the working directory {workdir}" in _lines(workdir)


def test_a_missing_working_directory_is_not_an_error(tmp_path: Path) -> None:
    """Facts that cannot be had are left out; the reason is still there."""
    gone = tmp_path / "gone"
    lines = _lines(gone)
    assert "exit code 3" in lines[0]
    assert f"diagnostics: 0 files in the working directory {gone}" in lines


def test_more_than_listed_files_are_summarised(workdir: Path) -> None:
    """Past LISTED_FILES files, the rest are counted, not listed."""
    extra = 7
    for n in range(LISTED_FILES + extra):
        (workdir / f"f{n:04d}").write_bytes(b"")
    lines = _lines(workdir)
    listed = [line for line in lines if line.startswith("diagnostics: file '")]
    assert len(listed) == LISTED_FILES
    total = LISTED_FILES + extra
    assert (
        f"diagnostics: {total} files in the working directory {workdir} ({extra} not listed)"
        in lines
    )


def test_exactly_listed_files_are_all_listed(workdir: Path) -> None:
    """At LISTED_FILES files nothing is left out."""
    for n in range(LISTED_FILES):
        (workdir / f"f{n:04d}").write_bytes(b"")
    lines = _lines(workdir)
    assert len([line for line in lines if line.startswith("diagnostics: file '")]) == LISTED_FILES
    assert lines[-1] == f"diagnostics: {LISTED_FILES} files in the working directory {workdir}"


def test_shows_taskkit_and_batch_variables_with_their_values(workdir: Path) -> None:
    """TASKKIT_* and AZ_BATCH_* variables are written with their values."""
    lines = _lines(workdir)
    assert "diagnostics: env TASKKIT_STATE=memory://state" in lines
    assert "diagnostics: env TASKKIT_MAX_RETRIES=2" in lines
    assert "diagnostics: env AZ_BATCH_TASK_ID=task-7" in lines
    assert "diagnostics: env AZ_BATCH_NODE_ID=tvm-1" in lines


def test_other_variables_by_name_only(workdir: Path) -> None:
    """Other variables are listed by name; their values never appear in any line."""
    lines = _lines(workdir)
    names = next(line for line in lines if "names only" in line)
    assert names.endswith("HOME MY_TOKEN PATH")
    text = "\n".join(lines)
    assert SECRET not in text
    assert "secret-home-dir" not in text


def test_a_secret_never_appears_even_as_a_file_listing_neighbour(workdir: Path) -> None:
    """With files to list and many variables, the secret value is still nowhere."""
    (workdir / "out.txt").write_bytes(b"data")
    env = {**ENV, **{f"VAR_{n}": SECRET for n in range(5)}}
    assert all(SECRET not in line for line in _lines(workdir, env))


def test_the_batch_authentication_token_is_never_written(workdir: Path) -> None:
    """AZ_BATCH_AUTHENTICATION_TOKEN is a credential Batch gives the task: its value must not
    reach the durable logs, although other AZ_BATCH_* values do."""
    token = "eyJhbGciOiJSUzI1NiJ9.batch-auth-token-value"
    lines = _lines(workdir, {**ENV, "AZ_BATCH_AUTHENTICATION_TOKEN": token})
    assert all(token not in line for line in lines)


class _Sink:
    """Collects what would be written to taskkit.txt."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.notes: list[str] = []
        self.fail_after = fail_after

    def note(self, line: str) -> None:
        if self.fail_after is not None and len(self.notes) >= self.fail_after:
            raise RuntimeError("sink is broken")
        self.notes.append(line)


def test_write_diagnostics_redacts_each_line(workdir: Path) -> None:
    """Lines go to the sink redacted: a SAS signature in a TASKKIT_* value is hidden."""
    env = {**ENV, "TASKKIT_STATE": "https://acct.blob.core.windows.net/c/s?sv=1&sig=SIGSECRET"}
    sink = _Sink()
    write_diagnostics(sink, str(workdir), env, DECISION)  # type: ignore[arg-type]
    assert sink.notes
    assert "exit code 3 is a permanent code" in sink.notes[0]
    assert all("SIGSECRET" not in note for note in sink.notes)
    assert any("sig=***" in note for note in sink.notes)
    assert all(SECRET not in note for note in sink.notes)


def test_write_diagnostics_never_raises(workdir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A failure while writing diagnostics is a warning to the observer, not an exception;
    without one, a record of the taskkit logger and nothing on the console."""
    sink = _Sink(fail_after=1)
    warnings = Warnings()
    write_diagnostics(sink, str(workdir), ENV, DECISION, warnings)  # type: ignore[arg-type]
    assert len(sink.notes) == 1
    assert warnings == ["diagnostics incomplete: sink is broken"]
    with taskkit_records() as records:
        write_diagnostics(_Sink(fail_after=1), str(workdir), ENV, DECISION)  # type: ignore[arg-type]
    assert [r.getMessage() for r in records] == ["diagnostics incomplete: sink is broken"]
    assert capfd.readouterr() == ("", "")
