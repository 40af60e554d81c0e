"""taskkit.cli.report: the console's observers; every line they write leaves without a
credential, whatever it quotes."""

from __future__ import annotations

import contextlib

import pytest

from taskkit.cli.report import Report, RunReport, echo, say
from taskkit.observer import Progress


def test_say_and_echo_redact_what_they_print(capsys: pytest.CaptureFixture[str]) -> None:
    """A warning on stderr and a plan line on stdout that quote a SAS URL show no signature."""
    say("warning", "cannot read https://a/c/x?sv=1&sig=U0VDUkVU%3D; trying again")
    echo("download https://a/c/x?sv=1&sig=U0VDUkVU%3D -> x")
    out, err = capsys.readouterr()
    assert "U0VDUkVU" not in out + err
    assert err == "taskkit: warning: cannot read https://a/c/x?sv=1&sig=***; trying again\n"
    assert out == "download https://a/c/x?sv=1&sig=*** -> x\n"


def test_the_run_report_says_every_kind_on_stderr_as_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """taskkit run's observer: notes, warnings, problems and debug lines on stderr, each one
    line with its kind, redacted; a debug line only when asked for (TASKKIT_DEBUG, or -v); a
    file's -v line only when verbose; stdout stays the command's."""
    monkeypatch.delenv("TASKKIT_DEBUG", raising=False)
    told = RunReport(verbose=False, interval=10)
    told.note("staged 1 files")
    told.warning("two\nlines https://a/c/x?sig=U0VDUkVU")
    told.problem(ValueError("cannot read x"))
    told.debug("not asked for")
    monkeypatch.setenv("TASKKIT_DEBUG", "1")
    told.debug("Traceback (most recent call last):")
    told.progress(Progress("staging", 1, 1, 1, 1, file="download a -> b"))
    verbose = RunReport(verbose=True, interval=10)
    verbose.progress(Progress("staging", 1, 1, 1, 1, file="sent b"))
    # Each transfer ends, as a real one does: no progress thread outlives the test.
    for report in (told, verbose):
        report.progress(Progress("staging", 1, 1, 1, 1, ended=True))
        assert report.shown is None
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "taskkit: note: staged 1 files",
        "taskkit: warning: two\\nlines https://a/c/x?sig=***",
        "taskkit: error: cannot read x",
        "taskkit: debug: Traceback (most recent call last):",
        "taskkit: note: sent b",
    ]


def test_the_transfer_report_shows_a_plan_only_for_a_dry_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """taskkit stage/upload's observer: the plan's lines on stdout for a dry run, nothing for
    a real one; notes on stdout, -v lines only when verbose."""
    plan = type("P", (), {"lines": lambda self: ["download u -> d  (1 B; not present)"]})()
    with contextlib.ExitStack() as stack:
        dry = Report(stack, doing="staging", dry_run=True, verbose=False, interval=10)
        dry.plan(plan)
        real = Report(stack, doing="staging", dry_run=False, verbose=False, interval=10)
        real.plan(plan)
        real.note("staged 0 files")
    out, err = capsys.readouterr()
    assert out.splitlines() == ["download u -> d  (1 B; not present)", "staged 0 files"]
    assert err == ""
