"""taskkit.observer: the one channel the library speaks through, and its logging default.

A program that calls ``taskkit.stage``, ``taskkit.upload`` and ``taskkit.run`` in its own
process (as a decorated function will) hears nothing it did not ask for: run as a real child
process with logging unconfigured, the calls print nothing at all, warnings included; with
``logging.basicConfig`` the same lines arrive as records. A custom observer hears the notes,
warnings, plans and progress in the order they happen.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from observing import Recorder, taskkit_records

import taskkit
from taskkit.observer import (
    OBSERVED,
    LoggingObserver,
    NullObserver,
    Observer,
    Observers,
    Progress,
)
from taskkit.runner.spec import RunSpec
from taskkit.transfer.telling import Telling

SECRET = "sig=c2VjcmV0c2VjcmV0c2VjcmV0"

#: A program using the library: stages, uploads and runs a task whose upload meets a link
#: out of the working directory (a warning) with a damaged stat-cache (a warning logged deep
#: inside), then says "done" itself. ``sys.argv[1]``: the folder to work in; ``[2]``: "log"
#: to configure logging first.
PROGRAM = textwrap.dedent(
    """
    import logging, os, sys
    root = sys.argv[1]
    if sys.argv[2] == "log":
        shown = "%(levelname)s %(message)s"
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format=shown)
    import taskkit
    src, work = os.path.join(root, "src"), os.path.join(root, "work")
    taskkit.stage([f"file://{src}/=in/"], workdir=work)
    taskkit.upload([f"in/**=file://{root}/dest/"], workdir=work)
    spec = taskkit.RunSpec(
        command=["sh", "-c", "mkdir -p out && echo x > out/a.txt && ln -sf /etc/hostname out/l"],
        inputs=[f"file://{src}/=in/"],
        outputs=[f"out/**=file://{root}/results/"],
        state=f"file://{root}/state",
        job_id="job",
        task_id="task",
        workdir=work,
    )
    code = taskkit.run(spec, environ={})
    sys.stdout.write(f"done {code}\\n")
    """
)


def _program(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    work = tmp_path / "work" / "in"
    work.mkdir(parents=True)
    os.symlink("/etc/hostname", work / "outside")  # the upload passes it over, warning
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "statcache-v1.sqlite3").write_bytes(b"this is not a database" * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKKIT_", "AZ_BATCH_"))}
    env.update(TASKKIT_CACHE_DIR=str(cache), PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_a_program_that_configures_no_logging_hears_nothing(tmp_path: Path) -> None:
    """stage, upload and run in a program's own process, with warnings on the way (a link
    passed over, a damaged stat-cache): not one byte on its stdout or stderr but its own."""
    done = _program(tmp_path, "quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done 0\n"
    assert done.stderr == ""
    assert (tmp_path / "results" / "a.txt").read_text() == "x\n"  # the work was done


def test_a_program_that_configures_logging_gets_the_lines_as_records(tmp_path: Path) -> None:
    """With logging.basicConfig the same calls arrive as records: the summary lines and
    notes at INFO, the warnings (the link passed over, the stat-cache set aside) at WARNING,
    progress at DEBUG."""
    done = _program(tmp_path, "log")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done 0\n"
    lines = done.stderr.splitlines()
    assert any(line.startswith("WARNING not uploading 'in/outside'") for line in lines), lines
    assert any(line.startswith("WARNING not uploading 'out/l'") for line in lines), lines
    assert any(line.startswith("WARNING stat-cache") for line in lines), lines
    assert any(line.startswith("INFO staged 1 files") for line in lines), lines
    assert any(line.startswith("INFO uploaded 1 files") for line in lines), lines
    plan = [line for line in lines if line.startswith("INFO download ")]  # a plan's line
    assert any(line.endswith("src/a.txt -> in/a.txt  (2 B; not present)") for line in plan), lines
    assert any(line.startswith("DEBUG staging: ") for line in lines), lines
    assert all(line.split(" ")[0] in ("DEBUG", "INFO", "WARNING") for line in lines), lines


def test_a_custom_observer_hears_each_kind_in_order(tmp_path: Path) -> None:
    """run() with an observer: the attempt's first note, then staging's plan, progress from
    the plan's totals to its end and its summary note, the link's warning before the upload's
    plan, the upload's progress and summary, and the attempt's last note; nothing logged."""
    work = tmp_path / "work"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"12345")
    spec = RunSpec(
        command=("sh", "-c", "mkdir -p out && echo x > out/a.txt && ln -sf /etc/hostname out/l"),
        inputs=(f"file://{tmp_path}/src/=in/",),
        outputs=(f"out/**=file://{tmp_path}/results/",),
        state=f"file://{tmp_path}/state",
        job_id="job",
        task_id="task",
        workdir=str(work),
    )
    heard = Recorder()
    with taskkit_records(logging.INFO) as records:
        assert taskkit.run(spec, environ={}, observer=heard) == 0
    assert [r for r in records if getattr(r, OBSERVED, False)] == []
    kinds = [kind for kind, _ in heard.calls]
    texts = [str(value) for _, value in heard.calls]

    def at(kind: str, start: str, after: int = -1) -> int:
        for i, (k, text) in enumerate(zip(kinds, texts, strict=True)):
            if i > after and k == kind and text.startswith(start):
                return i
        raise AssertionError(f"no {kind} {start!r} after {after}: {heard.calls}")

    began = at("note", "attempt 1")
    staged = at("note", "staged 1 files", began)
    passed = at("warning", "not uploading 'out/l'", staged)
    uploaded = at("note", "uploaded 1 files", passed)
    at("note", "attempt 1: success", uploaded)
    plans = [i for i, k in enumerate(kinds) if k == "plan"]
    assert len(plans) == 2
    assert began < plans[0] < staged
    assert passed < plans[1] < uploaded
    for first, last in ((plans[0], staged), (plans[1], uploaded)):
        progress = [v for k, v in heard.calls[first:last] if k == "progress"]
        assert all(isinstance(p, Progress) for p in progress)
        first_report, last_report = progress[0], progress[-1]
        assert isinstance(first_report, Progress)
        assert isinstance(last_report, Progress)
        assert (first_report.bytes, first_report.files, first_report.total_files) == (0, 0, 1)
        assert (last_report.ended, last_report.files) == (True, 1)
        assert [p.ended for p in progress if isinstance(p, Progress)].count(True) == 1
    assert next(v.doing for _, v in heard.calls if isinstance(v, Progress)) == "staging"


def test_the_logging_observer_maps_each_kind_to_a_level_and_hides_credentials() -> None:
    """note and plan lines INFO, warning WARNING, problem ERROR, debug and progress DEBUG;
    every record marked as the observer's and redacted."""
    told = LoggingObserver()
    plan = type("P", (), {"lines": lambda self: [f"download https://a/b?{SECRET} -> b"]})()
    with taskkit_records() as records:
        told.note("a note")
        told.warning(f"a warning https://a/b?{SECRET}")
        told.problem(ValueError("a problem"))
        told.debug("a debug line")
        told.progress(Progress("staging", 5, 10, 0, 1))
        told.progress(Progress("staging", 10, 10, 1, 1, file="download a -> b"))
        told.plan(plan)
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "a note"),
        (logging.WARNING, "a warning https://a/b?sig=***"),
        (logging.ERROR, "a problem"),
        (logging.DEBUG, "a debug line"),
        (logging.DEBUG, "staging: 5 of 10 bytes, 0/1 files"),
        (logging.DEBUG, "download a -> b"),
        (logging.INFO, "download https://a/b?sig=*** -> b"),
    ]
    assert all(getattr(r, OBSERVED) for r in records)


def test_the_logging_observer_makes_no_line_its_logger_would_drop() -> None:
    """Below the logger's level nothing is formatted: a plan's lines are not even asked for
    (a plan of many files costs nothing when nobody listens)."""
    asked: list[str] = []

    class Plan:
        def lines(self) -> list[str]:
            asked.append("lines")
            return ["x"]

    with taskkit_records(logging.WARNING) as records:
        LoggingObserver().plan(Plan())
        LoggingObserver().note("quiet")
    assert asked == []
    assert records == []


def test_import_taskkit_silences_the_taskkit_logger_until_the_program_speaks(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The taskkit logger has a NullHandler: a warning is not printed by logging's last
    resort when the program configured nothing."""
    logger = logging.getLogger("taskkit")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    code = "import taskkit, logging; logging.getLogger('taskkit').warning('unheard')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_observers_pass_each_call_to_each_and_the_null_one_says_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Observers fans every call out in order; NullObserver is silent."""
    one, two = Recorder(), Recorder()
    both: Observer = Observers(one, NullObserver(), two)
    progress = Progress("uploading", 1, 2, 0, 1)
    plan = type("P", (), {"lines": lambda self: []})()
    both.note("n")
    both.warning("w")
    both.problem("p")
    both.debug("d")
    both.progress(progress)
    both.plan(plan)
    expected = [
        ("note", "n"),
        ("warning", "w"),
        ("problem", "p"),
        ("debug", "d"),
        ("progress", progress),
        ("plan", plan),
    ]
    assert one.calls == two.calls == expected
    assert capfd.readouterr() == ("", "")


def test_a_transfer_ends_its_progress_once_even_when_it_raises() -> None:
    """Telling: the first report after the plan, in order, and one ended report whatever the
    execution raised; a dry run reports no progress at all."""
    heard = Recorder()
    telling = Telling(heard, "staging", dry_run=False)
    entry = type("E", (), {"action": "download", "source": type("S", (), {"size": 7})()})()
    plan = type("P", (), {"problems": (), "entries": (entry,), "lines": lambda self: []})()

    def execute() -> None:
        telling.moved(7, False)
        raise OSError("the disk went away")

    telling.staging_planned(plan)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="the disk went away"):
        telling.executing(execute)()
    with telling:
        pass  # a second end says nothing more
    progress = heard.progresses()
    assert [(p.bytes, p.total_bytes, p.ended) for p in progress] == [
        (0, 7, False),
        (7, 7, False),
        (7, 7, True),
    ]
    dry = Recorder()
    with Telling(dry, "staging", dry_run=True) as told:
        told.staging_planned(plan)  # type: ignore[arg-type]
    assert [k for k, _ in dry.calls] == ["plan"]


def test_the_library_imports_no_click() -> None:
    """The runner's and the transfers' entry points load no console toolkit."""
    code = (
        "import sys, taskkit.runner.run, taskkit.runner.steps, taskkit.runner.attempt, "
        "taskkit.transfer.stage, taskkit.transfer.upload, taskkit.observer; "
        "print('click' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout == "False\n", done.stderr


@pytest.mark.parametrize("call", ["stage", "upload"])
def test_an_outage_is_told_to_the_transfers_observer_not_the_logger(
    tmp_path: Path, call: str
) -> None:
    """A storage outage met by ``stage`` or ``upload`` is a warning of the call's observer (its
    start, and its end when the requests give up), and no record of the "taskkit" logger."""
    unreachable = "http://127.0.0.1:9/nothing/here"  # the discard port: refused at once
    (tmp_path / "out.txt").write_text("x")
    heard = Recorder()
    retry = taskkit.RetryBudget(attempts=2, first_delay=0.0, max_delay=0.0, budget=5.0)
    with taskkit_records() as records:
        if call == "stage":
            taskkit.stage(
                [f"{unreachable}=f.txt"], workdir=tmp_path / "w", retry=retry, observer=heard
            )
        else:
            nowhere = (  # an account at a port nothing listens on
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
            )
            taskkit.upload(
                ["out.txt=az://results/run/"],
                workdir=tmp_path,
                retry=retry,
                storage_options={"connection_string": nowhere},
                observer=heard,
            )
    warnings = [str(value) for kind, value in heard.calls if kind == "warning"]
    assert any(w.startswith("storage unreachable: ") for w in warnings), heard.calls
    assert any("giving up" in w or "still unreachable" in w for w in warnings), heard.calls
    assert not [r for r in records if "unreachable" in r.getMessage()]
