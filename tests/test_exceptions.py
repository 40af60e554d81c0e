"""taskkit.exceptions: one tree, each class with its exit code, the README table in step."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

import taskkit.exceptions as exc_module
from taskkit.exceptions import (
    ConfigError,
    Conflict,
    DataError,
    InputNotFound,
    IOFailure,
    MisuseError,
    PermissionDenied,
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
