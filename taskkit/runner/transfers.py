"""How ``taskkit run`` stages its inputs and uploads its outputs, and says what that did.

The transfer settings of a :class:`~taskkit.runner.spec.RunSpec` are the options ``taskkit stage``
and ``taskkit upload`` take (``-j``, ``--cache-dir``, ``--no-node-cache``,
``--cache-max-bytes``, ``--retries``, ``--retry-budget``, ``--progress-interval``, ``-v``);
:func:`stage_settings` and :func:`upload_settings` turn them into the arguments of
:func:`~taskkit.transfer.stage.stage` and :func:`~taskkit.transfer.upload.upload`, for the attempt
and for the
dry run alike.

Invariants: the node cache is the one :func:`taskkit.transfer.nodecache.node_cache` finds, the
very one
``taskkit stage`` uses, so the tasks of a node download a shared input once whichever command
staged it. Every transfer of an attempt ends with one summary line (the wording of ``taskkit
stage``/``upload``), written to the console and to the attempt's stored ``taskkit.txt``;
problems, ``-v`` file lines and warnings go to both, progress lines (every
``--progress-interval``) to the console only. URLs are shown with their credentials hidden.
"""

from __future__ import annotations

import errno
import io
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from taskkit.cli.progress import Progress
from taskkit.exceptions import IOFailure
from taskkit.runner.envnames import env_variable
from taskkit.transfer.nodecache import node_cache
from taskkit.transfer.summary import Telling, stage_line, upload_line

if TYPE_CHECKING:
    from taskkit.runner.spec import RunSpec
    from taskkit.storage.stores import Stores
    from taskkit.transfer.stage_plan import Plan
    from taskkit.transfer.summary import Summary

__all__ = ["Teller", "stage_inputs", "stage_settings", "upload_outputs", "upload_settings"]

#: A line for the attempt's stored ``taskkit.txt``.
Note = Callable[[str], None]
#: A line for the console: ``say(kind, line)``.
Say = Callable[[str, str], None]


def upload_settings(spec: RunSpec) -> dict[str, Any]:
    """How ``spec`` wants its files moved: requests in flight and the retry budget."""
    return {
        "jobs": spec.jobs,
        "retry": spec.retry(),
    }


def stage_settings(spec: RunSpec, environ: Mapping[str, str]) -> dict[str, Any]:
    """:func:`upload_settings` and the node cache ``taskkit stage`` would use, found in
    ``environ`` when ``spec`` does not name one."""
    cache = node_cache(
        spec.cache_dir,
        enabled=not spec.no_node_cache,
        max_bytes=spec.cache_max_bytes,
        environ=environ,
    )
    if cache is not None:
        from_env = environ.get(env_variable("cache_dir"))  # the setting's variable (or the default)
        if from_env and os.path.abspath(from_env) == os.path.abspath(cache.root):
            named = env_variable("cache_dir")
        else:
            named = "--cache-dir" if spec.cache_dir else "the node cache"
        check_cache_root(str(cache.root), named)
    return {**upload_settings(spec), "node_cache": cache}


def check_cache_root(root: str, named: str) -> None:
    """Refuse, before anything is planned, a node cache that cannot be made or written: a file
    in the way, a read-only filesystem. Nothing is made here (a dry run checks too), and the
    line names the setting the user gave, not a file deep inside the cache. Local I/O (74,
    203 in run), as for any directory that cannot be made on this node."""
    path = os.path.abspath(root)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        why, code = "not a directory", errno.ENOTDIR
    elif not os.access(path, os.W_OK | os.X_OK):
        read_only = os.statvfs(path).f_flag & os.ST_RDONLY
        why, code = (
            ("read-only file system", errno.EROFS)
            if read_only
            else (
                "permission denied",
                errno.EACCES,
            )
        )
    else:
        return
    where = "" if path == os.path.abspath(root) else f" (at {path!r})"
    raise IOFailure(f"{named} {root!r}: {why}{where}", path=root, errno=code)


def stage_inputs(
    spec: RunSpec,
    workdir: str,
    *,
    environ: Mapping[str, str],
    note: Note,
    say: Say,
    on_plan: Callable[[Plan], None] | None = None,
    stores: Stores | None = None,
) -> Summary:
    """Stage ``spec``'s inputs into ``workdir`` as ``taskkit stage`` would, saying what it did;
    ``on_plan`` sees the staging plan too (the attempt keeps it: what was staged is no output).
    Through ``stores`` when given (the attempt's), else stores of its own."""
    from taskkit.transfer.stage import stage

    with Teller("staging", spec, note, say) as teller:

        def planned(plan: Plan) -> None:
            teller.staging_planned(plan)
            if on_plan is not None:
                on_plan(plan)

        summary = stage(
            spec.inputs,
            workdir=workdir,
            stores=stores,
            **stage_settings(spec, environ),
            on_plan=planned,
            on_bytes=teller.moved,
            on_file=teller.staged,
            environ=environ,
        )
        teller.tell("note", stage_line(summary))
    return summary


def upload_outputs(
    spec: RunSpec,
    workdir: str,
    *,
    task: Mapping[str, str | int],
    environ: Mapping[str, str],
    note: Note,
    say: Say,
    fence: Callable[[], None] | None = None,
    stores: Stores | None = None,
) -> Summary:
    """Upload and publish ``spec``'s outputs from ``workdir`` as ``taskkit upload`` would,
    saying what it did and where it published (``fence``: see
    :func:`taskkit.transfer.upload.upload`). Through ``stores`` when given (the attempt's),
    else stores of its own."""
    from taskkit.transfer.upload import upload

    with Teller("uploading", spec, note, say) as teller:
        summary = upload(
            spec.outputs,
            workdir=workdir,
            stores=stores,
            **upload_settings(spec),
            task=task,
            allow_empty=spec.allow_empty,
            on_plan=teller.upload_planned,
            on_bytes=teller.moved,
            on_file=teller.uploaded,
            on_problem=teller.problem,
            fence=fence,
            environ=environ,
        )
        published = [o.dest for o in spec.outputs]  # each ends in '/'
        teller.tell("note", upload_line(summary, published))
    return summary


class _ConsoleLines(io.StringIO):
    """A stream for :class:`~taskkit.cli.progress.Progress` whose lines are said, not printed:
    the library never writes to the console itself."""

    def __init__(self, doing: str, say: Say) -> None:
        super().__init__()
        self.doing, self.say = doing, say

    def write(self, text: str) -> int:
        # Progress writes "taskkit: staging: ..." lines; say() puts back that very prefix.
        for line in text.splitlines():
            if line.strip():
                self.say(self.doing, line.removeprefix(f"taskkit: {self.doing}: "))
        return len(text)


class Teller(Telling):
    """The callbacks of one transfer of an attempt: what it planned, moved and did, told to
    the attempt's ``taskkit.txt`` (``note``) and console (``say``). A context manager: the
    progress lines stop with it."""

    def __init__(self, doing: str, spec: RunSpec, note: Note, say: Say) -> None:
        self.doing, self.note, self.say = doing, note, say
        self.verbose, self.interval = spec.verbose, spec.progress_interval
        self.progress: Progress | None = None
        self._lock = threading.Lock()  # files are done on worker threads

    def __enter__(self) -> Teller:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__()
            self.progress = None

    def tell(self, kind: str, line: str) -> None:
        """One line to both the stored log and the console."""
        with self._lock:
            self.note(line if kind == "note" else f"{kind}: {line}")
            self.say(kind, line)

    def _start(self, total_bytes: int, files: int) -> None:
        if files:
            stream = _ConsoleLines(self.doing, self.say)
            self.progress = Progress(
                total_bytes, files, stream, tty=False, interval=self.interval, doing=self.doing
            ).__enter__()
