"""A checkpoint directory the user names is a subdirectory of the working directory.

Given as ``--checkpoint-dir``, ``TASKKIT_CHECKPOINT_DIR`` or a spec file's ``checkpoint_dir``,
an absolute path, a ``..`` segment, or the working directory itself is refused with the rest
of the command line (one line naming the setting, 200, no attempt begun); one leaving the
working directory through a link is refused when the attempt makes it (200, the record
ended). Either way nothing outside is synced to the store, and nothing is made or restored
there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_helpers import Task, invoke, opened_task, q, sh, snapshot

from taskkit.runner.checkpoint import checkpoint_dir_problem

REFUSED = ["/etc", "../outside", "a/../../outside", "..", ".", "./", "a/..", ""]


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


def marker(task: Task) -> list[str]:
    return sh(f"touch {q(task.box / 'ran')}")


def assert_refused_before_anything(task: Task, code: int, stderr: str, named: str) -> None:
    """200, one error line naming the setting and saying what it must be; no attempt."""
    assert code == 200, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("taskkit: error: "), lines
    assert named in lines[0], lines[0]
    assert "must be a subdirectory of the working directory" in lines[0]
    assert not (task.box / "ran").exists()
    assert not task.state_dir.exists()


@pytest.mark.parametrize("given", REFUSED)
def test_the_option_is_refused_outside_the_working_directory(task: Task, given: str) -> None:
    """--checkpoint-dir absolute, with '..', the working directory itself or empty: 200 at
    parse time, one line naming --checkpoint-dir; the state is not touched."""
    code, _, stderr = invoke(task.args(marker(task), "--checkpoint-dir", given))
    assert_refused_before_anything(task, code, stderr, "--checkpoint-dir")


@pytest.mark.parametrize("given", ["/etc", "../outside", "."])
def test_the_variable_and_the_spec_file_are_refused_too(task: Task, given: str) -> None:
    """TASKKIT_CHECKPOINT_DIR and a spec file's checkpoint_dir are held to the same rule."""
    code, _, stderr = invoke(task.args(marker(task)), env={"TASKKIT_CHECKPOINT_DIR": given})
    assert_refused_before_anything(task, code, stderr, "TASKKIT_CHECKPOINT_DIR")
    spec = task.root / "spec.toml"
    spec.write_text(f'checkpoint_dir = "{given}"\n')
    code, _, stderr = invoke(task.args(marker(task), "--spec", str(spec)))
    assert_refused_before_anything(task, code, stderr, "checkpoint")


def test_a_link_out_of_the_working_directory_is_refused_by_the_attempt(task: Task) -> None:
    """A subdirectory name that leads outside through a link that is there on this node:
    203 (local, retryable: nothing permanent recorded) when the attempt makes it, the record
    ended, the command not run, nothing synced and nothing made outside; once the link is
    gone, the same work runs."""
    outside = task.root / "outside"
    outside.mkdir()
    (outside / "theirs.txt").write_text("not taskkit's\n")
    (task.workdir / "link").symlink_to(outside)
    before = snapshot(outside)
    proc = task.run(marker(task), "--checkpoint-dir", "link/ck", "--max-retries", "2")
    assert proc.returncode == 203, proc.stderr
    assert "leads to" in proc.stderr
    assert "--checkpoint-dir" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (task.box / "ran").exists()
    record = task.attempt(1)
    assert record["ended"] is not None
    assert (record["exit_code"], record["verdict"]) == (203, "retryable")
    assert "must be a subdirectory of the working directory" in record["reason"]
    assert snapshot(outside) == before
    assert not (task.journal / "checkpoint").exists()
    (task.workdir / "link").unlink()
    again = task.run(marker(task), "--checkpoint-dir", "link/ck", "--max-retries", "2")
    assert again.returncode == 0, again.stderr
    assert (task.box / "ran").exists()


def test_a_subdirectory_is_synced_and_restored(task: Task) -> None:
    """A plain subdirectory still works: the command's file is synced, and a retry of the
    same work restores it."""
    ck = "state/ck"
    script = f'test -f "$TASKKIT_CHECKPOINT_DIR/n" && exit 0; echo 1 > {ck}/n; exit 3'
    first = task.run(sh(script), "--checkpoint-dir", ck, "--max-retries", "1")
    assert first.returncode == 3, first.stderr
    (task.workdir / ck / "n").unlink()
    second = task.run(sh(script), "--checkpoint-dir", ck, "--max-retries", "1")
    assert second.returncode == 0, second.stderr
    assert "restored 1 checkpoint files" in second.stderr


@pytest.mark.parametrize(
    ("name", "fine"),
    [("ck", True), ("a/b", True), ("./ck", True), ("ck/", True), ("a/../b", False)]
    + [(given, False) for given in REFUSED],
)
def test_checkpoint_dir_problem_is_the_rule(name: str, fine: bool) -> None:
    """The rule itself: relative, no '..' segment, not the working directory."""
    assert (checkpoint_dir_problem(name) is None) is fine


def test_an_input_staged_into_the_checkpoint_directory_is_refused() -> None:
    """The checkpoint directory holds only the restored checkpoint: an input whose
    destination lies in it is a configuration error naming both."""
    from taskkit.exceptions import ConfigError
    from taskkit.runner.spec import resolve

    inside = {"checkpoint_dir": "ck", "inputs": ("file:///x/a.bin=ck/sub/a.bin",)}
    with pytest.raises(ConfigError, match="inside the checkpoint directory 'ck'"):
        resolve(inside, environ={})
    beside = {"checkpoint_dir": "ck", "inputs": ("file:///x/a.bin=ckx/a.bin",)}
    assert resolve(beside, environ={}).checkpoint_dir == "ck"
