"""``taskkit run`` as a real process stopped at a chosen moment of its publish, for
tests/runner/test_goal_manifests.py and tests/runner/test_run.py: a deterministic "killed while
publishing".

    python tests/gated_publish_child.py GATE MARKER -- RUN-ARGUMENTS...

Between the publishing claim and the success record, at GATE, the process touches MARKER and
then blocks until a signal ends it (the test sends SIGTERM or SIGKILL):

* ``phase``: the ``uploading`` phase note, before its log flush;
* ``upload``: the outputs' upload;
* ``uploaded``: after the upload, before the success is recorded.

GATEs ``manifest`` (before each DEST's manifest is written) and ``unpublish`` (before the
published manifests are deleted) pause instead: MARKER is touched and the upload goes on once
``MARKER.go`` exists (another attempt may take the claim over meanwhile).

GATE ``claim`` sends SIGTERM to the process itself right after the claim is written, before
the write returns its version, then lets it go on. So do, with SIGTERM or (a ``:INT`` suffix)
SIGINT: ``begun``, right after the attempt's record is written; ``recorded``, right after its
success is written in the claim's place, before the write returns; ``ended``, once the
attempt's end is decided and recorded, before its last log line (``ended-twice``: two
signals).
Everything else is the real thing: this is ``taskkit run RUN-ARGUMENTS``.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import taskkit.runner.attempt
from taskkit.cli import main
from taskkit.runner.journal import Journal, Outcome
from taskkit.runner.logs import LogSink, Phase

GATES = ("phase", "upload", "uploaded", "claim", "manifest", "unpublish")
SELF_SIGNALLED = ("begun", "recorded", "ended", "ended-twice")


def blocked(marker: Path) -> None:
    marker.touch()
    threading.Event().wait()  # never set: only a signal ends this wait


def paused(marker: Path) -> None:
    marker.touch()
    go = marker.with_name(marker.name + ".go")
    while not go.exists():
        threading.Event().wait(0.01)


def signalled(where: str, signum: int, marker: Path) -> None:
    """The process signals itself at ``where`` (one of :data:`SELF_SIGNALLED`) and goes on."""

    def send(times: int) -> None:
        marker.touch()
        for _ in range(times):
            os.kill(os.getpid(), signum)

    if where == "begun":
        real_begin = Journal.begin

        def begin(self: Journal, **kwargs: Any) -> Any:
            begun = real_begin(self, **kwargs)
            send(1)
            return begun

        Journal.begin = begin  # type: ignore[method-assign]
    elif where == "recorded":
        real_write = Journal.write_outcome

        def write_outcome(self: Journal, outcome: Outcome, **kwargs: Any) -> str:
            version = real_write(self, outcome, **kwargs)
            if outcome.state == "success":
                send(1)
            return version

        Journal.write_outcome = write_outcome  # type: ignore[method-assign]
    else:
        real_phase = LogSink.phase

        def phase(self: LogSink, reached: Phase, line: str = "") -> bool:
            if reached is Phase.ENDED:
                send(2 if where == "ended-twice" else 1)
            return real_phase(self, reached, line)

        LogSink.phase = phase  # type: ignore[method-assign]


def gate(where: str, marker: Path) -> None:
    """Make the publish stop at ``where`` (one of :data:`GATES`, or of
    :data:`SELF_SIGNALLED` with an optional ``:INT``)."""
    point, _, name = where.partition(":")
    if point in SELF_SIGNALLED:
        signalled(point, signal.SIGINT if name == "INT" else signal.SIGTERM, marker)
    elif where == "phase":
        real_phase = LogSink.phase

        def phase(self: LogSink, reached: Phase, line: str = "") -> bool:
            if reached is Phase.UPLOADING:
                blocked(marker)
            return real_phase(self, reached, line)

        LogSink.phase = phase  # type: ignore[method-assign]
    elif where == "upload":

        def upload_outputs(*args: Any, **kwargs: Any) -> Any:
            blocked(marker)

        taskkit.runner.attempt.upload_outputs = upload_outputs
    elif where == "uploaded":
        real_url = taskkit.runner.attempt._manifest_url

        def manifest_url(output: Any) -> str:
            blocked(marker)
            return real_url(output)

        taskkit.runner.attempt._manifest_url = manifest_url
    elif where in ("manifest", "unpublish"):
        name = "_publish" if where == "manifest" else "_unpublish"
        module = importlib.import_module("taskkit.transfer.upload")
        real = getattr(module, name)

        def pausing(*args: Any, **kwargs: Any) -> Any:
            paused(marker)
            return real(*args, **kwargs)

        setattr(module, name, pausing)
    elif where == "claim":
        real_write = Journal.write_outcome

        def write_outcome(self: Journal, outcome: Outcome, **kwargs: Any) -> str:
            version = real_write(self, outcome, **kwargs)
            if outcome.state == "publishing":
                marker.touch()
                os.kill(os.getpid(), signal.SIGTERM)
            return version

        Journal.write_outcome = write_outcome  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown gate {where!r}; one of {GATES}")


if __name__ == "__main__":
    split = sys.argv.index("--")
    gate(sys.argv[1], Path(sys.argv[2]))
    main(["run", *sys.argv[split + 1 :]])
