"""How a task function's failures are classified, and what a permanent one keeps."""

from __future__ import annotations

import pytest

from taskkit.exceptions import ConfigError, InputNotFound, TransientError
from taskkit.function.failures import (
    PROGRAMMING_ERRORS,
    Permanent,
    PermanentFailure,
    Retryable,
    classify,
    failure_text,
)
from taskkit.runner.policy import Verdict


@pytest.mark.parametrize("kind", PROGRAMMING_ERRORS)
def test_programming_errors_are_permanent(kind: type[Exception]) -> None:
    """Each error of the default table is permanent."""
    assert classify(kind("x")).verdict is Verdict.PERMANENT


@pytest.mark.parametrize(
    "error",
    [OSError("disk"), TimeoutError(), ConnectionError(), MemoryError(), RuntimeError("?")],
)
def test_everything_else_is_retryable(error: Exception) -> None:
    """I/O, timeouts, lost connections, memory and unknown errors may pass: retryable."""
    assert classify(error).verdict is Verdict.RETRYABLE


def test_the_markers_say_it_outright_also_as_a_cause() -> None:
    """Permanent/Retryable (or a subclass, or as the cause) win over the table."""

    class BadRecord(Permanent, OSError):
        pass

    assert classify(BadRecord()).verdict is Verdict.PERMANENT
    assert classify(Retryable("later")).verdict is Verdict.RETRYABLE
    wrapped = ValueError("wrapped")
    wrapped.__cause__ = Retryable("busy")
    assert classify(wrapped).verdict is Verdict.RETRYABLE


def test_retry_on_and_permanent_on_override_with_the_most_specific_first() -> None:
    """The task's classes decide before the table; the nearer class wins a tie."""
    assert classify(ValueError(), retry_on=[ValueError]).verdict is Verdict.RETRYABLE
    assert classify(OSError(), permanent_on=[OSError]).verdict is Verdict.PERMANENT
    found = classify(FileNotFoundError(), retry_on=[FileNotFoundError], permanent_on=[OSError])
    assert found.verdict is Verdict.RETRYABLE
    found = classify(FileNotFoundError(), retry_on=[OSError], permanent_on=[FileNotFoundError])
    assert found.verdict is Verdict.PERMANENT


def test_taskkits_own_errors_keep_their_verdict() -> None:
    """A transient storage error is retryable although it is no OSError; a config error is
    permanent; a missing input permanent although it is a FileNotFoundError."""
    assert classify(TransientError("throttled")).verdict is Verdict.RETRYABLE
    assert classify(ConfigError("bad")).verdict is Verdict.PERMANENT
    assert classify(InputNotFound("gone")).verdict is Verdict.PERMANENT
    assert classify(PermanentFailure("m:f", "ValueError", "x", "", 1)).verdict is Verdict.PERMANENT


def test_failure_text_keeps_type_message_traceback_without_a_credential() -> None:
    """The record keeps text, redacted: never a SAS token."""
    try:
        raise KeyError("https://a.blob.core.windows.net/c/x?sv=2024&sig=SECRETSIG")
    except KeyError as exc:
        type_name, message, text = failure_text(exc)
    assert type_name == "KeyError"
    assert "SECRETSIG" not in message + text
    assert "Traceback" in text
    assert "raise KeyError" in text


def test_a_permanent_failure_carries_the_original_text() -> None:
    """PermanentFailure says the task, attempt, type and message in one line."""
    exc = PermanentFailure("m:f", "ValueError", "bad row 7", "Traceback ...", 3)
    assert (exc.type_name, exc.message, exc.traceback_text, exc.attempt) == (
        "ValueError",
        "bad row 7",
        "Traceback ...",
        3,
    )
    assert "m:f" in str(exc)
    assert "attempt 3" in str(exc)
    assert "ValueError: bad row 7" in str(exc)
    assert "\n" not in str(exc)
