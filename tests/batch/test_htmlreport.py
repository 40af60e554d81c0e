"""taskkit.batch.htmlreport: the page of a job's timeline — what a real browser draws from it
(Debian's Chromium, headless), what it escapes, that it needs no network, and that it is
written whole or not at all."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import uuid
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from journal_fakes import FakeJob

from taskkit.batch.htmlreport import render, write_report
from taskkit.exceptions import IOFailure
from taskkit.runner.timeline import KINDS, Timeline, read_timeline
from taskkit.storage.stores import Stores

HOSTILE_NODE = "</script><img src=x onerror=alert(1)>"
HOSTILE_REASON = "exit 1 </script><script>alert(2)</script> & <b>bold</b>"
HOSTILE_TASK = "<img src=y onerror=alert(3)>"


def chromium() -> str:
    """Debian's Chromium; the test fails (never skips) without it: ``make test`` installs it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "chromium was not found: the browser test needs Debian's Chromium "
        "(apt-get install -y chromium; `make test` installs it)"
    )


def dump_dom(page: Path) -> str:
    """The page's DOM once its scripts ran, as headless Chromium serialises it."""
    done = subprocess.run(
        [
            chromium(),
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--window-size=1280,900",
            f"--user-data-dir={page.parent / 'chromium-profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _Dom(HTMLParser):
    """Every element of a serialised DOM: its tag, attributes and the text right inside it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[int, str] = {}
        self._open: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in ("rect", "line", "meta", "br", "img", "input", "link"):
            self._open.append(len(self.elements) - 1)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            index = self._open.pop()
            if self.elements[index][0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            index = self._open[-1]
            self.texts[index] = self.texts.get(index, "") + data

    def having(self, tag: str, cls: str) -> list[int]:
        return [
            i
            for i, (t, attrs) in enumerate(self.elements)
            if t == tag and cls in attrs.get("class", "").split()
        ]

    def by_id(self, ident: str) -> int:
        return next(i for i, (_, attrs) in enumerate(self.elements) if attrs.get("id") == ident)


def drawn(page: Path) -> _Dom:
    dom = _Dom()
    dom.feed(dump_dom(page))
    return dom


@pytest.fixture
def job(tmp_path: Path, stores: Stores) -> FakeJob:
    return FakeJob(stores, f"file://{tmp_path}/state")


def _page(tmp_path: Path, timeline: Timeline) -> Path:
    path = tmp_path / "report.html"
    write_report(render(timeline), str(path))
    return path


def _mixed_job(job: FakeJob) -> None:
    """Twelve attempts and runs of every kind but running, on three nodes."""
    for n in range(4):
        task = f"ok-{n}"
        job.attempt(task, 1, node=f"node-{n % 2}", start=n, end=n + 3)
        job.outcome(task, "success", 1)
        job.skip(task, "met", 1, start=30 + n, node="node-2")
    job.attempt("flaky", 1, start=0, end=2, verdict="retryable", exit_code=1)
    job.attempt(
        "flaky", 2, node="node-1", start=3, end=5, verdict="retryable", exit_code=143,
        reason="taskkit was stopped by SIGTERM (retryable)",
    )  # fmt: skip
    job.attempt("flaky", 3, start=6, end=None, heartbeat=7)
    job.attempt("bad", 1, node="node-2", start=1, end=2, verdict="permanent", exit_code=3)
    job.outcome("bad", "permanent", 1, exit_code=3, reason="exit code 3 is a permanent code")
    job.skip("bad", "permanent", 1, start=31, node="node-2")


def test_the_browser_draws_every_bar_by_kind_every_lane_the_totals_and_legend(
    job: FakeJob, tmp_path: Path
) -> None:
    """In headless Chromium, after the page's script ran: one bar per attempt or run of each
    kind, as many as the timeline holds; one lane per node, named; the totals; a legend entry
    per kind with its count."""
    _mixed_job(job)
    timeline = read_timeline(job.stores, job.state, job.job)
    expected = Counter(b.kind for b in timeline.bars)
    assert expected == {
        "success": 4,
        "met": 4,
        "retryable": 1,
        "killed": 1,
        "interrupted": 1,
        "permanent": 1,
        "refused": 1,
    }
    dom = drawn(_page(tmp_path, timeline))
    assert dom.elements[dom.by_id("timeline")][0] == "svg"
    for kind in KINDS:
        assert len(dom.having("rect", f"k-{kind}")) == expected[kind], kind
    assert len(dom.having("rect", "bar")) == len(timeline.bars) == 13
    lanes = dom.having("g", "lane")
    assert [dom.elements[i][1]["data-node"] for i in lanes] == list(timeline.nodes)
    assert sorted(timeline.nodes) == ["node-0", "node-1", "node-2"]
    names = [dom.texts.get(i) for i in dom.having("text", "node")]
    assert sorted(n or "" for n in names) == ["node-0", "node-1", "node-2"]
    assert dom.texts[dom.by_id("n-tasks")] == "6"
    assert dom.texts[dom.by_id("n-attempts")] == "8"
    assert dom.texts[dom.by_id("n-nodes")] == "3"
    legend = dom.having("li", "item")
    assert [dom.elements[i][1]["data-kind"] for i in legend] == list(KINDS)
    counts = [int(dom.texts[i]) for i in dom.having("b", "count")]
    assert counts == [expected[k] for k in KINDS]
    body = next(attrs for tag, attrs in dom.elements if tag == "body")
    assert body["data-drawn"] == "13"


def test_hostile_text_from_the_journal_is_shown_as_text_never_run(
    job: FakeJob, tmp_path: Path
) -> None:
    """A node name, a reason and a task folder holding markup and ``</script>``: the page
    holds them escaped, the browser makes no element of them (no img, no extra script), and
    the lane shows the node's name as text."""
    job.attempt(HOSTILE_TASK, 1, node=HOSTILE_NODE, start=0, end=1, verdict="permanent",
                exit_code=1, reason=HOSTILE_REASON)  # fmt: skip
    job.outcome(HOSTILE_TASK, "permanent", 1, exit_code=1, reason=HOSTILE_REASON)
    timeline = read_timeline(job.stores, job.state, job.job)
    page = render(timeline)
    assert page.count("</script>") == 2  # the page's own two script elements
    assert "<img" not in page
    assert "<b>bold" not in page
    dom = drawn(_page(tmp_path, timeline))
    tags = Counter(tag for tag, _ in dom.elements)
    assert tags["img"] == 0
    assert tags["b"] == len(KINDS)
    assert tags["script"] == 2
    [lane] = dom.having("g", "lane")
    assert dom.elements[lane][1]["data-node"] == HOSTILE_NODE
    cells = [text for text in dom.texts.values() if HOSTILE_REASON in text]
    assert cells, "the reason is shown as text in the table of tasks that did not succeed"
    assert any(text == HOSTILE_TASK for text in dom.texts.values())


def test_the_page_asks_for_nothing_over_the_network(job: FakeJob) -> None:
    """No src or href attribute, no URL but the SVG namespace, and a policy that forbids
    loading anything: the page is whole when opened offline."""
    _mixed_job(job)
    page = render(read_timeline(job.stores, job.state, job.job))
    assert " src=" not in page
    assert " href=" not in page
    assert "@import" not in page
    urls = {w for w in page.replace('"', " ").replace("<", " ").split() if "://" in w}
    shown = {w for w in urls if w.startswith(f"{job.state}/")}  # the journal's, as text
    assert urls - shown == {"http://www.w3.org/2000/svg", f"{job.state};"}
    assert "default-src 'none'" in page


def test_an_empty_job_draws_no_lane_and_says_why(tmp_path: Path) -> None:
    """A job with nothing in its journal (local run of plain commands) still gets a page:
    no lane, no bar, zero totals, and the reason named."""
    timeline = Timeline.empty("j", "file:///nowhere/state", "no task of job j has a journal")
    dom = drawn(_page(tmp_path, timeline))
    assert dom.having("g", "lane") == []
    assert dom.having("rect", "bar") == []
    assert dom.texts[dom.by_id("n-tasks")] == "0"
    assert any("no task of job j has a journal" in t for t in dom.texts.values())


def test_a_job_of_one_task_draws_one_bar_on_one_lane(job: FakeJob, tmp_path: Path) -> None:
    """One task, one attempt: one lane, one success bar, "every task succeeded"."""
    job.attempt("only", 1, node="tvmps_1", start=0, end=0.5)
    job.outcome("only", "success", 1)
    dom = drawn(_page(tmp_path, read_timeline(job.stores, job.state, job.job)))
    assert len(dom.having("g", "lane")) == 1
    assert len(dom.having("rect", "k-success")) == len(dom.having("rect", "bar")) == 1
    assert dom.by_id("all-succeeded") >= 0


def test_a_stale_claim_draws_the_killed_holder_as_interrupted(job: FakeJob, tmp_path: Path) -> None:
    """A publishing claim whose holder was killed: its attempt is an interrupted bar, and the
    task is listed as open (no outcome), not as publishing."""
    job.attempt("t", 1, start=0, end=None, heartbeat=2)
    job.outcome("t", "publishing", 1)
    dom = drawn(_page(tmp_path, read_timeline(job.stores, job.state, job.job)))
    assert len(dom.having("rect", "k-interrupted")) == len(dom.having("rect", "bar")) == 1
    rows = [t for t in dom.texts.values() if t in ("open", "publishing")]
    assert rows == ["open"]


def test_ten_thousand_bars_stay_small(job: FakeJob) -> None:
    """The data of each bar is a few dozen bytes: a page of 10,000 attempts stays near a
    megabyte (the bench measures it at scale)."""
    from taskkit.runner.timeline import Bar, Saved

    bars = tuple(
        Bar(f"task-{n:05d}", 1, f"node-{n % 50}", 1e9 + n, 1e9 + n + 30, "success", 0, "", n % 4)
        for n in range(10_000)
    )
    nodes = tuple(f"node-{n}" for n in range(50))
    from taskkit.runner.timeline import TaskRow

    rows = tuple(TaskRow(b.task, "success", 1, 0, "", None) for b in bars)
    page = render(Timeline("j", "file:///s", 1e9, bars, rows, nodes, Saved()))
    assert len(page.encode()) < 10_000 * 80


def test_the_page_is_written_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing rename leaves neither the page nor its temporary file; a missing folder or
    a directory as target is refused before writing (local I/O, 74)."""
    target = tmp_path / "r.html"

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device", str(dst))

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", refuse)
        with pytest.raises(IOFailure, match="cannot write the report"):
            write_report("<p>page</p>", str(target))
    assert list(tmp_path.iterdir()) == []
    assert write_report("<p>page</p>", str(target)) == len("<p>page</p>")
    assert target.read_text() == "<p>page</p>"
    with pytest.raises(IOFailure, match="does not exist") as missing:
        write_report("x", str(tmp_path / "nowhere" / "r.html"))
    assert missing.value.exit_code == 74
    with pytest.raises(IOFailure, match="is a directory"):
        write_report("x", str(tmp_path))


def test_a_memory_journal_makes_the_same_page(tmp_path: Path, stores: Stores) -> None:
    """Read through the one storage seam: the same records in memory give the same bars."""
    on_disk = FakeJob(stores, f"file://{tmp_path}/state")
    in_memory = FakeJob(stores, f"memory://report-{uuid.uuid4().hex}/state")
    for job in (on_disk, in_memory):
        _mixed_job(job)
    one, two = (read_timeline(stores, j.state, j.job) for j in (on_disk, in_memory))
    assert [(b.task, b.attempt, b.kind, b.row) for b in one.bars] == [
        (b.task, b.attempt, b.kind, b.row) for b in two.bars
    ]


def test_a_clock_far_off_still_draws_a_few_ticks(job: FakeJob, tmp_path: Path) -> None:
    """One attempt stamped thousands of years later (a node's clock gone wrong): the page
    still draws, with at most a handful of ticks on its time axis, not one a day."""
    job.attempt("now", 1, start=0, end=1)
    job.outcome("now", "success", 1)
    job.attempt("future", 1, start=250_000_000_000, end=250_000_000_001)
    job.outcome("future", "success", 1)
    dom = drawn(_page(tmp_path, read_timeline(job.stores, job.state, job.job)))
    assert len(dom.having("rect", "bar")) == 2
    assert 1 <= len(dom.having("line", "tick")) <= 11


def test_a_device_or_fifo_is_written_through_never_replaced(tmp_path: Path) -> None:
    """-o /dev/null or a FIFO: the page goes through it; the device or the FIFO stays what it
    was (a rename over it would put a file in its place)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert write_report("<p>page</p>", str(fifo)) == len(b"<p>page</p>")
    reader.join(timeout=30)
    assert received == [b"<p>page</p>"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    write_report("<p>page</p>", os.devnull)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
