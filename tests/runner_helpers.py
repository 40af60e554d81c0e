"""A task for the process tests of ``taskkit run``, ``taskkit step`` and ``taskkit status``.

Every call is a real ``python -m taskkit`` process in a clean environment (no Batch or
taskkit variables of the machine running the tests), with ``file://`` state, a working
directory and a ``box`` for counters and markers outside it, all under the test's tmp_path.
Nothing sleeps for luck: :func:`wait_for` polls an observable condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from taskkit.cli import main

TASKKIT = (sys.executable, "-m", "taskkit")
#: ``taskkit`` as a command inside a shell script that ``taskkit run`` runs.
SH_TASKKIT = shlex.join(TASKKIT)
#: No taskkit process of these tests may take longer than this.
TIMEOUT = 60.0
_OWN_PREFIXES = ("AZ_BATCH_", "TASKKIT_", "AZURE_STORAGE_")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def kill_9_once(
    argv: Sequence[str], env: Mapping[str, str], ready: Sequence[tuple[Callable[[], bool], str]]
) -> None:
    """Start ``argv``, wait for each ``(condition, what)`` of ``ready`` in turn (the process
    must still be alive then), SIGKILL it and reap it; it never outlives the call."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        for condition, what in ready:
            wait_for(_or_ended(condition, proc), what)
            assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _or_ended(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: condition() or proc.poll() is not None


def clean_environment(root: Path) -> dict[str, str]:
    """This process's environment without Batch, taskkit or storage settings, and a
    stat-cache under ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env["TASKKIT_CACHE_DIR"] = str(root / "cache")
    return env


def invoke(args: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """``taskkit ARGS`` in this process (for refusals that run nothing), in a clean
    environment with ``env`` added: exit code, stdout, stderr."""
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith(_OWN_PREFIXES)}
    with (
        CliRunner().isolation(env={**cleared, **(env or {})}) as (out, err, _),
        pytest.raises(SystemExit) as info,
    ):
        main(list(args))
    stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    assert "Traceback" not in stdout + stderr, stderr
    code = info.value.code
    assert isinstance(code, int)
    return code, stdout, stderr


def no_traceback(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def one_error(stderr: str, *fragments: str) -> str:
    """The one ``taskkit: error:`` line of ``stderr``, holding every fragment."""
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("taskkit: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def sh(script: str) -> list[str]:
    """A command running ``script`` in ``sh``, exiting at the first failure."""
    return ["sh", "-ec", script]


def q(path: Path | str) -> str:
    return shlex.quote(str(path))


def snapshot(*roots: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and directory under ``roots``: size, mtime_ns and content (the bytes'
    hex for a file), so any write shows."""
    seen: dict[str, tuple[int, int, str]] = {}
    for root in roots:
        if not root.exists():
            seen[str(root)] = (-1, -1, "absent")
            continue
        for path in sorted([root, *root.rglob("*")]):
            info = path.lstat()
            content = path.read_bytes().hex() if path.is_file() else "dir"
            seen[str(path)] = (info.st_size, info.st_mtime_ns, content)
    return seen


class Task:
    """One task of one job, its journal under ``state_dir``; ``box`` holds what commands
    count and signal through, outside the working directory."""

    def __init__(self, root: Path, job: str = "job-1", task: str = "task-1") -> None:
        self.root, self.job, self.task = root, job, task
        self.state_dir = root / "state"
        self.state = f"file://{self.state_dir}"
        self.workdir = root / "work"
        self.box = root / "box"
        for folder in (self.workdir, self.box):
            folder.mkdir(exist_ok=True)
        self.env = clean_environment(root)
        self._started: list[subprocess.Popen[str]] = []

    # -- running ---------------------------------------------------------------------------------

    def args(
        self,
        command: Sequence[str],
        *options: str,
        ids: bool = True,
        state: bool = True,
        workdir: Path | None = None,
        own_workdir: bool = True,
    ) -> list[str]:
        """The arguments of ``taskkit run OPTIONS -- COMMAND`` with this task's ids, state and
        working directory (or ``workdir``); each left out when false."""
        given = ["--workdir", str(workdir or self.workdir)] if own_workdir else []
        if state:
            given += ["--state", self.state]
        if ids:
            given += ["--job-id", self.job, "--task-id", self.task]
        return ["run", *given, *options, "--", *command]

    def argv(self, command: Sequence[str], *options: str, **where: Any) -> list[str]:
        """:meth:`args` as a process's command line."""
        return [*TASKKIT, *self.args(command, *options, **where)]

    def run(
        self,
        command: Sequence[str],
        *options: str,
        env: Mapping[str, str] | None = None,
        timeout: float = TIMEOUT,
        **where: Any,
    ) -> subprocess.CompletedProcess[str]:
        """``taskkit run`` to its end (``where``: as for :meth:`argv`)."""
        return self.taskkit(self.argv(command, *options, **where), env=env, timeout=timeout)

    def taskkit(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Any taskkit command line (``argv`` in full) to its end, in the clean environment
        with ``env`` added."""
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=self.root,
            timeout=timeout,
            check=False,
        )
        return no_traceback(proc)

    def start(
        self,
        command: Sequence[str],
        *options: str,
        env: Mapping[str, str] | None = None,
        **where: Any,
    ) -> subprocess.Popen[str]:
        """``taskkit run`` started, not waited for; :meth:`close` kills it if a test does not."""
        proc = subprocess.Popen(
            self.argv(command, *options, **where),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **(env or {})},
            cwd=self.root,
        )
        self._started.append(proc)
        return proc

    def status(self) -> dict[str, Any]:
        ids = ["--job-id", self.job, "--task-id", self.task]
        proc = self.taskkit([*TASKKIT, "status", "--state", self.state, *ids, "--json"])
        assert proc.returncode == 0, proc.stderr
        found: dict[str, Any] = json.loads(proc.stdout)
        return found

    def close(self) -> None:
        """Kill what a failed test left running: taskkit processes, and every process group
        a command noted in ``box/*.pid`` (commands run in sessions of their own)."""
        for proc in self._started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for pidfile in self.box.glob("*.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.killpg(int(pidfile.read_text().split()[0]), signal.SIGKILL)

    # -- commands --------------------------------------------------------------------------------

    def counted(self, name: str) -> str:
        """A shell line appending one line to ``box/NAME.count``: how often it ran."""
        return f"echo run >> {q(self.box / (name + '.count'))}"

    def count(self, name: str) -> int:
        path = self.box / f"{name}.count"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def block(self, name: str) -> str:
        """Shell lines noting the command's process group in ``box/NAME.pid``, marking
        ``box/NAME.started``, then waiting until ``box/NAME.go`` exists."""
        go = q(self.box / f"{name}.go")
        return (
            f"echo $$ > {q(self.box / (name + '.pid'))}\n"
            f"touch {q(self.box / (name + '.started'))}\n"
            f"while [ ! -e {go} ]; do sleep 0.02; done\n"
        )

    def wait_started(self, name: str, proc: subprocess.Popen[str] | None = None) -> None:
        started = self.box / f"{name}.started"

        def ready() -> bool:
            if proc is not None and proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"taskkit ended ({proc.returncode}) before {name} started: {err}")
            return started.exists()

        wait_for(ready, f"the command to reach {started.name}")

    def release(self, name: str) -> None:
        (self.box / f"{name}.go").touch()

    # -- the journal -----------------------------------------------------------------------------

    @property
    def journal(self) -> Path:
        return self.state_dir / self.job / self.task

    def attempt(self, number: int) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            (self.journal / "attempts" / f"{number:05d}.json").read_text()
        )
        return found

    def attempts(self) -> list[int]:
        folder = self.journal / "attempts"
        return sorted(int(p.stem) for p in folder.glob("*.json")) if folder.exists() else []

    def outcome(self) -> dict[str, Any] | None:
        path = self.journal / "outcome.json"
        if not path.exists():
            return None
        found: dict[str, Any] = json.loads(path.read_text())
        return found

    def log(self, number: int, name: str) -> str:
        """The stored log ``name`` (stdout, stderr, taskkit) of attempt ``number``."""
        return (self.journal / "logs" / f"{number:05d}" / f"{name}.txt").read_text()

    def journal_files(self) -> list[Path]:
        return sorted(p for p in self.journal.rglob("*") if p.is_file())


@contextlib.contextmanager
def opened_task(root: Path, job: str = "job-1", task: str = "task-1") -> Iterator[Task]:
    made = Task(root, job, task)
    try:
        yield made
    finally:
        made.close()


#: ``taskkit run`` stopped at a chosen moment of its publish (see that file).
GATED_PUBLISH = str(Path(__file__).with_name("gated_publish_child.py"))


def interrupted_publish(
    task: Task, gate: str, signum: int, command: Sequence[str], *options: str
) -> subprocess.CompletedProcess[str]:
    """``taskkit run`` of ``task`` stopped by ``signum`` at ``gate`` of its publish, to its
    end (gates ``claim``, ``begun``, ``ended`` signal the process themselves: ``signum`` is
    not sent; see tests/gated_publish_child.py)."""
    marker = task.box / f"gate-{gate}"
    marker.unlink(missing_ok=True)
    argv = [sys.executable, GATED_PUBLISH, gate, str(marker), "--"]
    argv += task.args(command, *options)[1:]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=task.env,
        cwd=task.root,
    )
    task._started.append(proc)
    wait_for(lambda: marker.exists() or proc.poll() is not None, f"the publish to reach {gate}")
    if gate.partition(":")[0] not in ("claim", "begun", "recorded", "ended", "ended-twice"):
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=TIMEOUT)
    return no_traceback(subprocess.CompletedProcess(argv, proc.returncode, out, err))


def newest_checkpoint(checkpoint: Path) -> Path:
    """The slot of a task's checkpoint (``STATE/JOB/TASK/checkpoint``) holding its last complete
    sync: the one whose manifest has the highest number (the later attempt's on a tie)."""
    from taskkit.transfer.upload_plan import MANIFEST_NAME

    found = []
    for manifest in checkpoint.glob(f"*/*/{MANIFEST_NAME}"):
        task = json.loads(manifest.read_bytes())["task"]
        found.append(((task["sync"], task.get("attempt", 0)), manifest.parent))
    assert found, f"no complete sync under {checkpoint}"
    return max(found)[1]
