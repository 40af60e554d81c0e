"""taskkit.runner.timeline: a job's journal read as bars on node lanes, task rows and the work
saved, from the journal alone, on a local directory and in memory."""

from __future__ import annotations

import datetime
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from journal_fakes import ELSEWHERE, T0, FakeJob, at

from taskkit.exceptions import InputNotFound, UsageError
from taskkit.runner.journal import Moved
from taskkit.runner.timeline import KINDS, read_timeline
from taskkit.storage.stores import Stores


@pytest.fixture(params=["file", "memory"])
def job(request: pytest.FixtureRequest, tmp_path: Path, stores: Stores) -> FakeJob:
    """An empty job's journal, on a local directory and in memory."""
    if request.param == "file":
        return FakeJob(stores, f"file://{tmp_path}/state")
    return FakeJob(stores, f"memory://timeline-{uuid.uuid4().hex}/state")


def _seconds_now() -> float:
    return (datetime.datetime.now(datetime.timezone.utc) - T0).total_seconds()


def test_every_kind_of_bar_is_told_apart(job: FakeJob) -> None:
    """Verdicts, a signal's stop, an end never written (stale or fresh heartbeat) and the two
    runs that start no attempt each make their own kind of bar."""
    job.attempt("a", 1, start=0, end=5, verdict="retryable", exit_code=1)
    job.attempt("a", 2, start=6, end=9, verdict="success")
    job.outcome("a", "success", 2)
    job.skip("a", "met", 2, start=20)
    job.attempt("b", 1, start=0, end=2, verdict="permanent", exit_code=3)
    job.outcome("b", "permanent", 1, exit_code=3)
    job.skip("b", "permanent", 1, start=21)
    job.attempt(
        "c", 1, start=1, end=4, verdict="retryable", exit_code=143,
        reason="taskkit was stopped by SIGTERM (retryable)",
    )  # fmt: skip
    job.attempt("c", 2, start=5, end=None, heartbeat=7)
    job.attempt("d", 1, start=3, end=None, heartbeat=_seconds_now())
    timeline = read_timeline(job.stores, job.state, job.job)
    kinds = {(b.task, b.attempt, b.kind) for b in timeline.bars}
    assert kinds == {
        ("a", 1, "retryable"),
        ("a", 2, "success"),
        ("a", 2, "met"),
        ("b", 1, "permanent"),
        ("b", 1, "refused"),
        ("c", 1, "killed"),
        ("c", 2, "interrupted"),
        ("d", 1, "running"),
    }
    assert {timeline.count(k) for k in KINDS} == {1}
    interrupted = next(b for b in timeline.bars if b.kind == "interrupted")
    assert interrupted.end - interrupted.start == pytest.approx(2.0)  # to its last heartbeat
    rows = {r.task: r.outcome for r in timeline.tasks}
    assert rows == {"a": "success", "b": "permanent", "c": "open", "d": "running"}


def test_times_nodes_and_exit_codes_come_from_the_records(job: FakeJob) -> None:
    """A bar spans its attempt's start to end on its node's lane, with its exit code and
    reason; an attempt outside Batch (no node) is drawn on its machine's lane."""
    job.attempt("t1", 1, node="tvmps_0", start=10, end=12.5, verdict="retryable", exit_code=7,
                reason="exit code 7 is not a success")  # fmt: skip
    job.attempt("t1", 2, node="", host="laptop/boot-1", start=13, end=14)
    timeline = read_timeline(job.stores, job.state, job.job)
    first, second = sorted(timeline.bars, key=lambda b: b.attempt)
    t0 = T0.timestamp()
    assert (first.start - t0, first.end - t0, first.node) == (10.0, 12.5, "tvmps_0")
    assert (first.exit_code, first.reason) == (7, "exit code 7 is not a success")
    assert second.node == "laptop"
    assert timeline.nodes == ("tvmps_0", "laptop")
    assert (timeline.start - t0, timeline.end - t0) == (10.0, 14.0)


def test_overlapping_attempts_of_a_node_take_rows_of_their_own(job: FakeJob) -> None:
    """Bars of one node that overlap are put in different rows; a bar that starts once
    another ended takes its row again; another node's bars start at row 0."""
    job.attempt("a", 1, start=0, end=10)
    job.attempt("b", 1, start=2, end=4)
    job.attempt("c", 1, start=5, end=12)
    job.attempt("d", 1, start=11, end=13)
    job.attempt("e", 1, node="node-2", start=1, end=3)
    rows = {b.task: b.row for b in read_timeline(job.stores, job.state, job.job).bars}
    assert rows == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 0}


def test_a_stale_publishing_claim_shows_what_it_replaced(job: FakeJob) -> None:
    """A claim whose holder was killed (an end never written, its heartbeat stale) draws
    that attempt as interrupted; the task shows the success the claim replaced, or open."""
    kept = job.outcome("r", "success", 1)
    job.attempt("r", 1, start=0, end=1)
    job.attempt("r", 2, start=2, end=None, heartbeat=3)
    job.outcome("r", "publishing", 2, replaced=kept)
    job.attempt("s", 1, start=0, end=None, heartbeat=1)
    job.outcome("s", "publishing", 1)
    timeline = read_timeline(job.stores, job.state, job.job)
    assert {r.task: r.outcome for r in timeline.tasks} == {"r": "success", "s": "open"}
    assert [(b.task, b.attempt) for b in timeline.bars if b.kind == "interrupted"] == [
        ("s", 1),
        ("r", 2),
    ]


def test_the_work_saved_is_summed_from_the_records(job: FakeJob) -> None:
    """Files and bytes moved and not moved add up over attempts; steps an earlier attempt
    finished count as not recomputed by the success; a met run counts the transfers of the
    success it relied on; an ended attempt without transfer figures is counted apart."""
    staged = Moved(files=3, transferred=1, skipped=1, linked=1, bytes_transferred=100,
                   bytes_kept=50, bytes_reused=5)  # fmt: skip
    uploaded = Moved(files=2, transferred=2, bytes_transferred=30)
    job.attempt("a", 1, start=0, end=1, verdict="retryable", exit_code=1, staged=staged)
    job.attempt("a", 2, start=2, end=3, staged=staged, uploaded=uploaded)
    job.outcome("a", "success", 2)
    job.step("a", "fetch", 1)
    job.step("a", "align", 2)
    job.skip("a", "met", 2, start=10)
    job.skip("a", "met", 2, start=11)
    job.attempt("b", 1, start=0, end=1)
    saved = read_timeline(job.stores, job.state, job.job).saved
    assert (saved.files_moved, saved.bytes_moved) == (4, 230)
    assert (saved.files_not_moved, saved.bytes_not_moved) == (4, 110)
    assert (saved.steps_done, saved.steps_not_recomputed) == (2, 1)
    assert (saved.runs_met, saved.runs_refused) == (2, 0)
    assert (saved.files_not_moved_by_met, saved.bytes_not_moved_by_met) == (10, 370)
    assert saved.unrecorded == 1


def test_a_damaged_record_is_named_and_the_rest_is_read(job: FakeJob) -> None:
    """One record that is not what the journal writes does not end the report: it is named
    among the problems, the other tasks are drawn."""
    job.attempt("a", 1, start=0, end=1)
    job.attempt("b", 1, start=0, end=1)
    journal = job.journal("b")
    journal.store.put(journal.root + "attempts/00002.json", b"{not json", {})
    timeline = read_timeline(job.stores, job.state, job.job)
    assert [(b.task, b.attempt) for b in timeline.bars] == [("a", 1), ("b", 1)]
    [problem] = timeline.problems
    assert "b/attempts/00002.json" in problem


def test_a_job_without_a_journal_is_not_found(job: FakeJob) -> None:
    """A job none of whose tasks has an attempt recorded is a missing input (66)."""
    with pytest.raises(InputNotFound, match="no task of job job-1 has a journal"):
        read_timeline(job.stores, job.state, job.job)


@pytest.mark.parametrize(
    ("state", "job_id", "says"),
    [("az:///runs", "j", "names no container"), ("file:///tmp/s", "../up", "--job-id")],
)
def test_a_bad_state_or_job_id_is_refused_before_anything_is_read(
    stores: Stores, state: str, job_id: str, says: str
) -> None:
    """A state URL that cannot be parsed or a job id Batch would refuse is a usage error."""
    with pytest.raises(UsageError, match=says):
        read_timeline(stores, state, job_id)


def test_the_time_a_timeline_is_read_comes_from_its_clock(job: FakeJob) -> None:
    """The clock given is when the timeline says it was read (a page's "read at")."""
    job.attempt("a", 1, start=0, end=1)
    read = read_timeline(job.stores, job.state, job.job, clock=lambda: 1234.5, host=ELSEWHERE)
    assert read.read_at == 1234.5
    assert at(0).endswith("Z")
