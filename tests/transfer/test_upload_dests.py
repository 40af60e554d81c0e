"""An output's DEST whose path has an empty, '.' or '..' segment is refused when it is read.

Blob names are the DEST's path joined to the outputs' names: ``x//y`` would be published as is
(names ``stage`` then refuses) and ``..`` is refused by the service only after a request. Both
are a bad value of the command line: 64 in ``taskkit upload``, 200 in ``taskkit run`` before
any attempt, one line naming the DEST, nothing read from or written to storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_helpers import TASKKIT, Task, opened_task, q, sh

from taskkit.exceptions import UsageError
from taskkit.transfer.patterns import Output, parse_output

#: Every way a URL DEST's path can hold a segment no blob name may hold, for az:// and file://.
BAD_DESTS = [
    "az://results/x//y/",
    "az://results//x/",
    "az://results/x//",
    "az://results/x/../../y/",
    "az://results/../y/",
    "az://results/x/..",
    "az://results/./y/",
    "abfs://results/x/./",
    "file:///tmp/x//y/",
    "file:///tmp/x/../y/",
    "file://..",
]


@pytest.mark.parametrize("dest", ["az://results/a\nb/", "file:///tmp/x\ty/", "az://r/\x01/"])
def test_a_dest_with_a_control_character_is_a_usage_error(dest: str) -> None:
    """parse_output refuses the DEST (64) before anything runs, on one line."""
    with pytest.raises(UsageError, match="control character") as info:
        parse_output(f"out/**={dest}")
    assert info.value.exit_code == 64
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("dest", BAD_DESTS)
def test_a_dest_with_an_empty_dot_or_dotdot_segment_is_a_usage_error(dest: str) -> None:
    """parse_output refuses the DEST (64), naming it and the segment."""
    with pytest.raises(UsageError) as info:
        parse_output(f"out/**={dest}")
    assert info.value.exit_code == 64
    message = str(info.value)
    assert repr(dest) in message
    assert any(what in message for what in ("'//'", "'.'", "'..'")), message


@pytest.mark.parametrize(
    ("dest", "kept"),
    [
        ("az://results/x/y/", "az://results/x/y/"),
        ("az://results/x", "az://results/x/"),
        ("az://results", "az://results/"),
        ("az://results/x..y/.z/", "az://results/x..y/.z/"),
        ("file:///tmp/x/", "file:///tmp/x/"),
        ("file:///", "file:///"),
        ("memory://d/", "memory://d/"),
        ("results/../elsewhere", "results/../elsewhere/"),  # a local path: resolved by the OS
    ],
)
def test_good_dests_are_kept(dest: str, kept: str) -> None:
    """Segments that only look like dots (``x..y``, ``.z``), one trailing '/', file:///'s
    leading '/' and local paths are accepted as before."""
    assert parse_output(f"out/**={dest}") == Output("out/**", kept)


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        (opened.workdir / "out" / "sub").mkdir(parents=True)
        (opened.workdir / "out" / "sub" / "a.txt").write_text("alpha\n")
        yield opened


def one_line(stderr: str, *fragments: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, stderr)


@pytest.mark.parametrize("how", ["//", ".."])
def test_upload_refuses_it_before_any_request(task: Task, how: str) -> None:
    """``taskkit upload``: 64, one line naming the DEST; with no credentials at all, so a
    request would have failed 78 instead, and nothing is published to a file:// DEST."""
    bad = {"//": "x//y/", "..": "x/../../y/"}[how]
    for dest in (f"az://results/{bad}", f"file://{task.root / 'dest'}/{bad}"):
        argv = [*TASKKIT, "upload", "--workdir", str(task.workdir), "-o", f"out/sub/**={dest}"]
        proc = task.taskkit(argv)
        assert proc.returncode == 64, proc.stderr
        one_line(proc.stderr, "taskkit: error: ", repr(dest))
    assert not (task.root / "dest").exists()


@pytest.mark.parametrize("how", ["//", ".."])
def test_run_refuses_it_as_a_bad_value_before_any_attempt(task: Task, how: str) -> None:
    """``taskkit run``: 200, one line naming the DEST; no attempt starts, the command does
    not run."""
    dest = f"file://{task.root / 'dest'}/" + {"//": "x//y/", "..": "x/../../y/"}[how]
    proc = task.run(sh(f"touch {q(task.box / 'ran')}"), "-o", f"out/sub/**={dest}")
    assert proc.returncode == 200, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if repr(dest) in line]) == 1
    assert "Traceback" not in proc.stderr
    assert not (task.box / "ran").exists()
    assert task.attempts() == []
    assert not (task.root / "dest").exists()
