"""Local mode: a Batch-like node in a folder, so a laptop runs a task as a Batch node would.

``taskkit run --local [DIR]`` (or ``TASKKIT_LOCAL=DIR``) lays out under ``DIR`` what Azure Batch
lays out on a node, and gives the command the variables Batch gives a task::

    DIR/
      node/                                 AZ_BATCH_NODE_ROOT_DIR
        shared/                             AZ_BATCH_NODE_SHARED_DIR (stat-cache, node cache)
        startup/                            AZ_BATCH_NODE_STARTUP_DIR
          wd/                               AZ_BATCH_NODE_STARTUP_WORKING_DIR
        workitems/JOB/job-1/TASK/           AZ_BATCH_TASK_DIR
          wd/                               AZ_BATCH_TASK_WORKING_DIR
          stdout.txt, stderr.txt            the command's output, as Batch keeps it
      state/                                the default TASKKIT_STATE (a file:// store)
      .gitignore                            "*", when taskkit made DIR itself

so a laptop run and a Batch run of the same line differ only in their URLs. A task's id defaults
to :func:`task_id_of` its command line (two different commands are two tasks), its job's to
:data:`DEFAULT_JOB_ID`.

Invariants:

* Every path is below the node's root: job and task ids are Batch ids (letters, digits, ``-``,
  ``_``), checked as :class:`~taskkit.runner.spec.RunSpec` checks them, before any path is made
  of them.
* Nothing is created until :meth:`LocalNode.task` (or :meth:`LocalTask.make`) is called;
  :meth:`LocalNode.plan` and :meth:`LocalTask.environ` only compute, so a dry run makes nothing.
* Every ``AZ_BATCH_*`` variable a local task sees is the local node's: those of the calling
  environment are dropped, so a stale one (say, from a shell that once talked to a real node)
  can never point the task elsewhere. ``AZ_BATCH_ACCOUNT_URL`` is not set: there is no Batch
  account to talk to, and a made-up URL would send a client somewhere wrong.
* ``stdout.txt`` and ``stderr.txt`` receive the command's output exactly as the console does
  (Batch keeps it raw too), appended attempt after attempt: Batch reuses a task's directory on a
  retry (Azure/Batch#14) and its documentation does not say that the files start afresh, so
  nothing of an earlier attempt is dropped here (``taskkit status`` keeps each attempt's logs
  apart in the store).
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from taskkit.envnames import LOCAL_VARIABLE
from taskkit.exceptions import ConfigError, IOFailure, LocalPermissionDenied, TaskFailure

if TYPE_CHECKING:
    from taskkit.runner.attempt import Launcher
    from taskkit.runner.command import Finished
    from taskkit.runner.logs import LogSink
    from taskkit.runner.spec import RunSpec

__all__ = [
    "DEFAULT_JOB_ID",
    "LocalNode",
    "LocalRun",
    "LocalTask",
    "task_id_of",
]

#: The job of a local task whose job id is given nowhere.
DEFAULT_JOB_ID = "local"
#: What Batch names the job's own level of its task directories (one job schedule run).
_JOB_RUN = "job-1"
_BATCH_PREFIX = "AZ_BATCH_"


def task_id_of(command: Sequence[str]) -> str:
    """The task id of a command line given none: ``t-`` and 12 hex digits of its digest, the
    same in every process and on every machine (so a re-run finds its journal), different
    for two different command lines (``["a b"]`` is not ``["a", "b"]``)."""
    text = json.dumps(list(command), ensure_ascii=False, separators=(",", ":"))
    return "t-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _batch_id(what: str, value: str) -> str:
    """``value`` when it is a Batch id; a :class:`ConfigError` naming ``what`` otherwise."""
    from taskkit.runner.spec import check_setting

    try:
        return str(check_setting(what, value))
    except ValueError as exc:
        raise ConfigError(f"local mode: {what.replace('_', ' ')}: {exc}") from None


def _make_dir(path: Path) -> None:
    """``path`` and its parents, as a local I/O failure (203 in ``taskkit run``) if they cannot
    be made: a file in the way, a read-only or foreign folder."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _local_failure(exc, "local mode: cannot make the directory") from exc


def _local_failure(exc: OSError, what: str) -> TaskFailure:
    """``exc`` as local I/O (203 in ``taskkit run``), retryable: another run may find the
    folder fixed."""
    where = exc.filename
    reason = (exc.strerror or str(exc)).lower()
    shown = f"{what} {str(where)!r}: {reason}" if where is not None else f"{what}: {reason}"
    if isinstance(exc, PermissionError):
        return LocalPermissionDenied(shown, path=where, errno=exc.errno)
    # Never "input not found" (201, permanent): what is missing is this machine's folder.
    return IOFailure(shown, path=where, errno=exc.errno)


def _unmakeable(path: Path, *, directory: bool) -> OSError | None:
    """Why ``path`` (a directory, else a file to append to) could not be made or written, as
    the error making it would raise; None when nothing stands in the way."""
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if probe == path:
        if directory != path.is_dir():
            code = errno.ENOTDIR if directory else errno.EISDIR
            return OSError(code, os.strerror(code), str(path))
        wanted = os.W_OK | os.X_OK if directory else os.W_OK
    elif not probe.is_dir():
        return OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(probe))
    else:
        wanted = os.W_OK | os.X_OK
    if not os.access(probe, wanted):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(probe))
    return None


@dataclass(frozen=True)
class LocalNode:
    """A Batch-like node in the folder ``root`` (absolute); see the module docstring.
    ``keeps_state``: the node holds the default state in ``root/state`` (a node of an emulated
    pool does not: the pool's state is shared by its nodes)."""

    root: Path
    keeps_state: bool = True

    def __post_init__(self) -> None:
        if not self.root.is_absolute():
            raise ConfigError(f"local mode: the node's folder must be absolute, not {self.root}")

    @classmethod
    def at(cls, directory: str | os.PathLike[str]) -> LocalNode:
        """The node in ``directory`` (relative to the current directory; ``~`` is home)."""
        text = os.fspath(directory)
        if not text.strip():
            raise ConfigError("local mode: an empty name is no directory")
        return cls(Path(os.path.abspath(os.path.expanduser(text))))

    @classmethod
    def find(cls, given: str | None, environ: Mapping[str, str]) -> LocalNode | None:
        """The node asked for: ``given`` (the ``--local`` value; ``None`` or ``""``: not
        asked), else ``$TASKKIT_LOCAL`` when set and not empty, else None (no local mode)."""
        if given:
            return cls.at(given)
        named = environ.get(LOCAL_VARIABLE)
        return cls.at(named) if named else None

    @property
    def node_dir(self) -> Path:
        """``AZ_BATCH_NODE_ROOT_DIR``."""
        return self.root / "node"

    @property
    def shared_dir(self) -> Path:
        """``AZ_BATCH_NODE_SHARED_DIR``: the stat-cache and the node cache live here."""
        return self.node_dir / "shared"

    @property
    def startup_dir(self) -> Path:
        """``AZ_BATCH_NODE_STARTUP_DIR``."""
        return self.node_dir / "startup"

    @property
    def state_dir(self) -> Path:
        """Where the default state keeps its journals."""
        return self.root / "state"

    @property
    def state_url(self) -> str:
        """The default ``TASKKIT_STATE`` of the node's tasks: a ``file://`` URL."""
        return "file://" + self.state_dir.as_posix()

    @property
    def node_id(self) -> str:
        """``AZ_BATCH_NODE_ID``: this machine's name, so manifests and journals say where."""
        return f"local-{socket.gethostname()}"

    def plan(self, job_id: str, task_id: str) -> LocalTask:
        """The task ``task_id`` of job ``job_id`` on this node, made of nothing yet (both
        are checked as Batch ids first: a hostile id never becomes a path)."""
        job, task = _batch_id("job_id", job_id), _batch_id("task_id", task_id)
        task_dir = self.node_dir / "workitems" / job / _JOB_RUN / task
        return LocalTask(
            node=self,
            job_id=job,
            task_id=task,
            task_dir=task_dir,
            workdir=task_dir / "wd",
            stdout=task_dir / "stdout.txt",
            stderr=task_dir / "stderr.txt",
        )

    def task(self, job_id: str, task_id: str) -> LocalTask:
        """:meth:`plan`, with its directories made (it is safe to ask again)."""
        local = self.plan(job_id, task_id)
        local.make()
        return local


@dataclass(frozen=True)
class LocalTask:
    """One task's place on a :class:`LocalNode`; built by :meth:`LocalNode.plan`."""

    node: LocalNode
    job_id: str
    task_id: str
    task_dir: Path
    workdir: Path
    stdout: Path
    stderr: Path

    def check(self) -> None:
        """Raise what :meth:`make` would meet, making nothing: a file where a directory must
        be, or a folder this process may not write (what a dry run says)."""
        for path in (*self._directories(), self.stdout, self.stderr):
            problem = _unmakeable(path, directory=path not in (self.stdout, self.stderr))
            if problem is not None:
                raise _local_failure(problem, f"local mode: the node in {str(self.node.root)!r}:")

    def _directories(self) -> tuple[Path, ...]:
        node = self.node
        state = (node.state_dir,) if node.keeps_state else ()
        return (node.shared_dir, node.startup_dir / "wd", *state, self.workdir)

    def make(self) -> None:
        """Make the node's and the task's directories and its (empty) output files, as Batch
        has them before a task starts; what is there already is left as it is. A folder that
        cannot be written is found here, before an attempt begins."""
        self.check()  # the same words as a dry run's for the same folder
        fresh = not os.path.lexists(self.node.root)
        for directory in self._directories():
            _make_dir(directory)
        if fresh:
            # A node made here is no one's source: git passes it by (as .pytest_cache). A
            # folder that was there already may hold the user's own files: left as it is.
            with (
                contextlib.suppress(OSError),
                open(self.node.root / ".gitignore", "x") as ignore,
            ):
                ignore.write("# a taskkit local node (taskkit run --local)\n*\n")
        for path in (self.stdout, self.stderr):
            try:
                with open(path, "ab"):
                    pass
            except OSError as exc:
                raise _local_failure(exc, "local mode: cannot write") from exc

    def variables(self) -> dict[str, str]:
        """The ``AZ_BATCH_*`` variables a Batch node sets for this task."""
        node = self.node
        return {
            "AZ_BATCH_ACCOUNT_NAME": "local",
            "AZ_BATCH_POOL_ID": "local",
            "AZ_BATCH_NODE_ID": node.node_id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true",  # a laptop is not taken away like Spot
            "AZ_BATCH_NODE_ROOT_DIR": str(node.node_dir),
            "AZ_BATCH_NODE_SHARED_DIR": str(node.shared_dir),
            "AZ_BATCH_NODE_STARTUP_DIR": str(node.startup_dir),
            "AZ_BATCH_NODE_STARTUP_WORKING_DIR": str(node.startup_dir / "wd"),
            "AZ_BATCH_JOB_ID": self.job_id,
            "AZ_BATCH_TASK_ID": self.task_id,
            "AZ_BATCH_TASK_DIR": str(self.task_dir),
            "AZ_BATCH_TASK_WORKING_DIR": str(self.workdir),
            "AZ_BATCH_TASK_USER": _user(),
        }

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with its ``AZ_BATCH_*`` variables replaced by this task's, and
        ``TASKKIT_STATE`` the node's state unless ``base`` names one."""
        env = {k: v for k, v in base.items() if not k.startswith(_BATCH_PREFIX)}
        env.update(self.variables())
        if not env.get("TASKKIT_STATE"):
            env["TASKKIT_STATE"] = self.node.state_url
        return env

    def launcher(self, launch: Launcher | None = None) -> Launcher:
        """``launch`` (default :func:`~taskkit.runner.command.run_logged`) with the command's
        output also appended to ``stdout.txt`` and ``stderr.txt``."""
        if launch is None:
            from taskkit.runner.command import run_logged

            launch = run_logged
        return _Teeing(self, launch)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's bare user)
        return str(os.getuid()) if hasattr(os, "getuid") else ""


@dataclass(frozen=True)
class _Teeing:
    """A launcher whose command's output also goes to the task's output files."""

    task: LocalTask
    launch: Launcher

    def __call__(
        self, argv: Sequence[str], *, sink: LogSink | None = None, **rest: Any
    ) -> Finished:
        with _Appended(self.task.stdout) as out, _Appended(self.task.stderr) as err:
            tee = _TeeSink(sink, {"stdout": out, "stderr": err})
            # run_logged reads only file() and note() of its sink; the tee answers both and
            # passes anything else to the attempt's own sink.
            return self.launch(argv, sink=cast("LogSink", tee), **rest)


class _Appended:
    """A task output file open for appending; a write that fails is dropped (the console and
    the attempt's logs still have the output), never an error of the command's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def __enter__(self) -> _Appended:
        try:
            self._file = open(self.path, "ab", buffering=0)
        except OSError:
            self._file = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, data: bytes) -> None:
        if self._file is None:
            return
        try:
            self._file.write(data)
        except OSError:
            self._file.close()
            self._file = None


@dataclass
class _TeeFile:
    """A log file of the attempt that also appends to a task output file."""

    inner: Any  # the attempt's LogFile, or None
    copy: _Appended

    def write(self, data: bytes) -> None:
        self.copy.write(data)
        if self.inner is not None:
            self.inner.write(data)


@dataclass
class _TeeSink:
    """The attempt's log sink (or none), its stdout and stderr teed to the task's files."""

    sink: LogSink | None
    copies: dict[str, _Appended]
    _files: dict[str, _TeeFile] = field(default_factory=dict)

    def file(self, name: str) -> _TeeFile | Any:
        inner = None if self.sink is None else self.sink.file(name)
        if name not in self.copies:
            return inner
        if name not in self._files:
            self._files[name] = _TeeFile(inner, self.copies[name])
        return self._files[name]

    def note(self, line: str) -> None:
        if self.sink is not None:
            self.sink.note(line)

    def __getattr__(self, name: str) -> Any:
        if self.sink is None:
            raise AttributeError(name)
        return getattr(self.sink, name)


@dataclass(frozen=True)
class LocalRun:
    """A ``taskkit run`` on a local node: the task, its settings, and the environment its
    attempt reads. Made by :meth:`resolve` without touching the disk (but for a spec file)."""

    task: LocalTask
    spec: RunSpec
    environ: dict[str, str]

    @classmethod
    def resolve(
        cls,
        node: LocalNode,
        options: Mapping[str, Any],
        command: Sequence[str],
        *,
        spec_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str],
    ) -> LocalRun:
        """The run ``options`` (as ``taskkit run`` resolves them) and ``command`` ask for on
        ``node``. The job and task ids are those given (options, spec file, ``TASKKIT_*``),
        never the calling environment's ``AZ_BATCH_*`` ones: else :data:`DEFAULT_JOB_ID` and
        :func:`task_id_of` the command. Settings a run cannot start with (no command) are
        refused here, before the node is made."""
        from taskkit.runner.plan import required
        from taskkit.runner.spec import resolve

        given = {**options, "command": tuple(command)}
        outside = {k: v for k, v in environ.items() if not k.startswith(_BATCH_PREFIX)}
        first = resolve(given, spec_file=spec_file, environ=outside)
        task = node.plan(first.job_id or DEFAULT_JOB_ID, first.task_id or task_id_of(first.command))
        env = task.environ(environ)
        if not environ.get("TASKKIT_STATE"):
            # The node's state is a default: in the environment it would win over a spec
            # file's, so it is given with the options, and only when nothing named one.
            del env["TASKKIT_STATE"]
        if first.state is None:
            given["state"] = node.state_url
        # Resolved again in the task's environment: its ids and working directory are now
        # the defaults, and options, the spec file and TASKKIT_* still win over them.
        spec = resolve(given, spec_file=spec_file, environ=env)
        required(spec)
        env["TASKKIT_STATE"] = spec.state or ""  # what the attempt gives its command
        return cls(task=task, spec=spec, environ=env)
