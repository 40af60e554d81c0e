"""taskkit.runner.logs LogSink.keeping: the warnings taskkit's library logs while an attempt runs (a
storage outage, a stat-cache set aside) are in the stored ``taskkit.txt`` too, not only on the
console."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_helpers import Task, opened_task

from taskkit.runner.logs import LogSink


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as made:
        yield made


def test_warnings_of_the_logger_are_noted_while_kept_and_only_then(tmp_path: Path) -> None:
    """A warning and an error logged inside ``keeping`` become notes; an info line and
    anything logged after the block do not; the handler is gone afterwards."""
    logger = logging.getLogger("taskkit.test-keeping")
    store = tmp_path / "store"
    with LogSink(tmp_path / "logs", f"file://{store}/", interval=86400) as sink:
        before = list(logger.handlers)
        with sink.keeping(logger):
            logger.warning("storage unreachable: %s; retrying", "connection refused")
            logger.error("giving up")
            logger.info("not a note")
        assert logger.handlers == before
        logger.warning("after the block")
    text = (store / "taskkit.txt").read_text()
    assert "taskkit: warning: storage unreachable: connection refused; retrying" in text
    assert "taskkit: error: giving up" in text
    assert "not a note" not in text
    assert "after the block" not in text


def test_a_record_that_cannot_be_formatted_is_dropped_quietly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A warning whose arguments do not fit its format fails neither the caller nor prints
    a traceback (the library never prints)."""
    logger = logging.getLogger("taskkit.test-keeping-bad")
    logger.propagate = False  # only the sink's handler hears it
    with LogSink(tmp_path / "logs", None) as sink, sink.keeping(logger):
        logger.warning("%d files", "not a number")
    assert capsys.readouterr().err == ""


def test_a_warning_during_an_attempt_is_in_its_stored_log(task: Task, tmp_path: Path) -> None:
    """A real ``taskkit run`` whose stat-cache is damaged: the warning that it was set aside
    and rebuilt, which the console shows, is in the attempt's stored taskkit.txt too."""
    cache = Path(task.env["TASKKIT_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "statcache-v1.sqlite3").write_bytes(b"this is not a database" * 100)
    source = tmp_path / "input.txt"
    source.write_text("data\n")
    done = task.run(["true"], "-i", f"file://{source}=in.txt")
    assert done.returncode == 0, done.stderr
    assert "set aside" in done.stderr
    stored = task.log(1, "taskkit")
    (line,) = [x for x in stored.splitlines() if "set aside" in x]
    assert "taskkit: warning: stat-cache" in line


def test_a_logging_observers_line_is_noted_once(tmp_path: Path) -> None:
    """With the default observer, a sink's own warning (a store it cannot write) is in
    taskkit.txt once, not again through the logger the sink keeps: the observer's records
    are marked, and whoever told the observer noted the line."""
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the store needs a folder")
    logger = logging.getLogger("taskkit")
    with LogSink(tmp_path / "logs", f"file://{blocker}/logs/", interval=86400) as sink:
        with sink.keeping(logger):
            assert not sink.flush()
            logger.warning("a warning logged deep inside")
        text = (tmp_path / "logs" / "taskkit.txt").read_text()
    assert text.count("warning: cannot upload logs to") == 1
    assert text.count("warning: a warning logged deep inside") == 1
