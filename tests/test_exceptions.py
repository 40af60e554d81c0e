"""taskkit.exceptions: one tree, each class with its exit code, the README table in step."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

import taskkit.exceptions as exc_module
from taskkit.exceptions import (
    EX_RUN_CONFIG,
    EX_RUN_DATA,
    EX_RUN_DEADLINE,
    EX_RUN_IOERR,
    EX_RUN_NOINPUT,
    EX_RUN_SOFTWARE,
    EX_RUN_TEMPFAIL,
    BadTask,
    ConfigError,
    Conflict,
    DataError,
    InputNotFound,
    IOFailure,
    LinkOut,
    LocalPermissionDenied,
    MisuseError,
    PermissionDenied,
    SourceChanged,
    TaskFailure,
    TaskkitError,
    TransientError,
    UsageError,
    from_os_error,
)

FAILURES = [
    UsageError,
    DataError,
    InputNotFound,
    IOFailure,
    TransientError,
    PermissionDenied,
    ConfigError,
]
README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_failure_has_a_distinct_exit_code() -> None:
    """Operational failures map to distinct sysexits codes; only TransientError is retryable."""
    codes = [cls.exit_code for cls in FAILURES]
    assert len(set(codes)) == len(codes)
    assert all(64 <= code <= 78 for code in codes)
    assert [cls for cls in FAILURES if cls.retryable] == [TransientError]


def test_the_tree_has_two_branches() -> None:
    """Failures of the work and misuse of the API are separate branches of one root."""
    assert all(issubclass(cls, TaskFailure) for cls in FAILURES)
    assert issubclass(MisuseError, TaskkitError)
    assert not issubclass(MisuseError, TaskFailure)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InputNotFound, FileNotFoundError),
        (PermissionDenied, PermissionError),
        (IOFailure, OSError),
        (DataError, ValueError),
        (ConfigError, ValueError),
        (MisuseError, TypeError),
    ],
)
def test_failures_are_the_builtins_callers_already_catch(cls: type, builtin: type) -> None:
    """except FileNotFoundError (and friends) still catches taskkit's versions."""
    assert issubclass(cls, builtin)


def test_path_failures_keep_errno_and_filename() -> None:
    """A path failure reads like the OSError it came from."""
    failure = from_os_error(
        FileNotFoundError(errno.ENOENT, "No such file or directory", "a"), "cannot hash"
    )
    assert isinstance(failure, InputNotFound)
    assert (failure.errno, failure.filename) == (errno.ENOENT, "a")
    assert str(failure) == "cannot hash 'a': no such file or directory"
    denied = from_os_error(PermissionError(errno.EACCES, "Permission denied", "b"), "x")
    assert isinstance(denied, PermissionDenied)
    other = from_os_error(OSError(errno.ENOSPC, "No space left on device", "c"), "x")
    assert type(other) is IOFailure


def test_readme_exit_code_table_matches_the_code() -> None:
    """The README's exit-code table lists exactly the codes and classes the code defines."""
    text = README.read_text()
    table = dict(re.findall(r"^\| (\d+) \| `?(\w+)`? \|", text, flags=re.MULTILINE))
    for cls in [*FAILURES, MisuseError]:
        assert table.get(str(cls.exit_code)) == cls.__name__, cls
    assert table.get("0") == "success"
    assert table.get(str(exc_module.EX_INTERRUPTED)) == "interrupted"


def test_conflict_is_a_transient_error_in_the_tree() -> None:
    """Conflict (another writer won) exits 75 as a TransientError, is exported, and is drawn."""
    assert issubclass(Conflict, TransientError)
    assert Conflict.exit_code == 75
    assert "Conflict" in exc_module.__all__
    assert re.search(r"^ +\| +\| +\+-- Conflict +75 ", exc_module.__doc__ or "", re.MULTILINE)


def test_all_is_sorted_and_names_every_exception_class() -> None:
    """__all__ lists every public exception class of the module, sorted as ruff sorts it."""
    assert list(exc_module.__all__) == sorted(exc_module.__all__)
    classes = {
        name
        for name, value in vars(exc_module).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == exc_module.__name__
        and not name.startswith("_")
    }
    assert classes == set(exc_module.__all__)


@pytest.mark.parametrize(
    "cls", [UsageError, DataError, InputNotFound, IOFailure, TransientError, ConfigError]
)
def test_a_message_holds_no_credential_whoever_built_it(cls: type[TaskkitError]) -> None:
    """A message quoting a SAS URL or a connection string is redacted when the exception is
    made, so no console line, log or journal record built from it can hold the secret."""
    error = cls("output 'x=https://a/c/?sv=1&sig=U0VDUkVU%3D' and AccountKey=a2V5a2V5;x")
    assert "U0VDUkVU" not in str(error)
    assert "a2V5a2V5" not in str(error)
    assert "https://a/c/?sv=1&sig=***" in str(error)


def test_the_run_band_is_200_to_206() -> None:
    """The EX_RUN codes are 200-206, away from the codes commands use."""
    codes = [
        EX_RUN_CONFIG,
        EX_RUN_NOINPUT,
        EX_RUN_DATA,
        EX_RUN_IOERR,
        EX_RUN_TEMPFAIL,
        EX_RUN_DEADLINE,
        EX_RUN_SOFTWARE,
    ]
    assert codes == list(range(200, 207))


def _tree_classes() -> list[type[TaskkitError]]:
    """Every exception class the module defines, the private base of path failures too."""
    return [
        value
        for value in vars(exc_module).values()
        if isinstance(value, type)
        and issubclass(value, TaskkitError)
        and value.__module__ == exc_module.__name__
    ]


def test_every_class_carries_both_codes() -> None:
    """Each class of the tree has an exit code of the sysexits range and a run code of the
    run band, both plain ints on the class; no exception stands for the deadline (205)."""
    classes = _tree_classes()
    assert len(classes) >= 15
    for cls in classes:
        assert type(cls.exit_code) is int, cls
        assert 64 <= cls.exit_code <= 78, cls
        assert type(cls.run_code) is int, cls
        assert cls.run_code in range(200, 207), cls
        assert cls.run_code != EX_RUN_DEADLINE, cls


#: Each exception class, and the words of the README's exit-code policy row it falls under.
RUN_ROWS = {
    ConfigError: "configuration",
    UsageError: "usage",
    PermissionDenied: "a permission storage refused",
    InputNotFound: "an input does not exist",
    DataError: "bad data",
    IOFailure: "local I/O on this node",
    LocalPermissionDenied: "a local path this node may not write or read",
    LinkOut: "led out of the working directory by a link",
    TransientError: "storage unreachable",
    Conflict: "a lost race",
    SourceChanged: "storage unreachable",
    MisuseError: "an internal error",
    BadTask: "a task function that cannot be",
    TaskFailure: "an internal error",
    TaskkitError: "an internal error",
}


def _policy_rows() -> list[tuple[str, str, int]]:
    """The README's exit-code policy rows that end in one code: (what happened, verdict, code)."""
    section = README.read_text().split("### The exit-code policy", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| (\w+) \| (\d+) \|$", section, flags=re.MULTILINE)
    return [(what, verdict, int(code)) for what, verdict, code in rows]


def test_run_codes_match_the_readme_policy_table() -> None:
    """Every public class's run code and verdict are those of its row in the README's exit-code
    policy table, and the table's taskkit rows are exactly the codes the classes use."""
    from taskkit.runner.policy import error_verdict

    assert set(RUN_ROWS) >= {cls for cls in _tree_classes() if not cls.__name__.startswith("_")}
    rows = _policy_rows()
    for cls, words in RUN_ROWS.items():
        matching = [(verdict, code) for what, verdict, code in rows if words in what]
        assert len(matching) == 1, (cls, words)
        assert matching[0] == (error_verdict(cls("x")).value, cls.run_code), cls
    listed = {code for _what, _verdict, code in rows if 200 <= code <= 206}
    assert listed == {cls.run_code for cls in RUN_ROWS} | {EX_RUN_DEADLINE}


def test_readme_exit_table_notes_match_run_codes() -> None:
    """Where the README's exit-code table says a class exits otherwise in ``taskkit run``
    (LinkOut, LocalPermissionDenied), that code is the class's run code."""
    notes = re.findall(r"`(\w+)` for [^:|]*: (\d+) in `taskkit run`", README.read_text())
    assert {name for name, _code in notes} == {"LinkOut", "LocalPermissionDenied"}
    for name, code in notes:
        assert getattr(exc_module, name).run_code == int(code), name


def test_the_drawn_tree_shows_both_codes_of_every_class() -> None:
    """The module docstring's tree names every public class with its exit and run codes."""
    drawn = {
        name: (int(exit_code), int(run_code))
        for name, exit_code, run_code in re.findall(
            r"\+-- (\w+) +(\d+) (\d+) ", exc_module.__doc__ or ""
        )
    }
    drawn_root = re.search(r"^ +TaskkitError +(\d+) (\d+) ", exc_module.__doc__ or "", re.M)
    assert drawn_root is not None
    drawn["TaskkitError"] = (int(drawn_root[1]), int(drawn_root[2]))
    public = [cls for cls in _tree_classes() if not cls.__name__.startswith("_")]
    assert set(drawn) == {cls.__name__ for cls in public}
    for cls in public:
        assert drawn[cls.__name__] == (cls.exit_code, cls.run_code), cls
