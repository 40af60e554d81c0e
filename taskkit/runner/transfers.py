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
stage``/``upload``), told to the run's observer and written to the attempt's stored
``taskkit.txt``; problems, ``-v`` file lines and warnings go to both, progress (shown every
``--progress-interval`` by the command line) to the observer only. URLs are shown with their
credentials hidden.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from taskkit.envnames import env_variable
from taskkit.exceptions import IOFailure
from taskkit.observer import Observer, Progress, Shown
from taskkit.runner.settings import TransferSettings
from taskkit.transfer.nodecache import node_cache
from taskkit.transfer.stage_plan import Plan
from taskkit.transfer.summary import stage_line, upload_line

if TYPE_CHECKING:
    from taskkit.runner.spec import RunSpec
    from taskkit.storage.stores import Stores
    from taskkit.transfer.summary import Summary

__all__ = [
    "Teller",
    "stage_inputs",
    "stage_settings",
    "upload_outputs",
    "upload_settings",
]

#: A line for the attempt's stored ``taskkit.txt``.
Note = Callable[[str], None]


def upload_settings(spec: TransferSettings) -> dict[str, Any]:
    """How ``spec`` wants its files moved: requests in flight and the retry budget."""
    return {
        "jobs": spec.jobs,
        "retry": spec.retry(),
    }


def stage_settings(spec: TransferSettings, environ: Mapping[str, str]) -> dict[str, Any]:
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
    observer: Observer,
    stores: Stores,
    on_plan: Callable[[Plan], None] | None = None,
) -> Summary:
    """Stage ``spec``'s inputs into ``workdir`` as ``taskkit stage`` would, saying what it did;
    ``on_plan`` sees the staging plan too (the attempt keeps it: what was staged is no output).
    Every request goes through ``stores``, the attempt's."""
    from taskkit.transfer.stage import stage

    teller = Teller(spec, note, observer, on_plan)
    summary = stage(
        spec.inputs,
        workdir=workdir,
        stores=stores,
        **stage_settings(spec.transfer(), environ),
        observer=teller,
        environ=environ,
    )
    teller.note(stage_line(summary))
    return summary


def upload_outputs(
    spec: RunSpec,
    workdir: str,
    *,
    task: Mapping[str, str | int],
    environ: Mapping[str, str],
    note: Note,
    observer: Observer,
    stores: Stores,
    fence: Callable[[], None] | None = None,
) -> Summary:
    """Upload and publish ``spec``'s outputs from ``workdir`` as ``taskkit upload`` would,
    saying what it did and where it published (``fence``: see
    :func:`taskkit.transfer.upload.upload`), every request through ``stores``, the
    attempt's."""
    from taskkit.transfer.upload import upload

    teller = Teller(spec, note, observer)
    summary = upload(
        spec.outputs,
        workdir=workdir,
        stores=stores,
        **upload_settings(spec.transfer()),
        task=task,
        allow_empty=spec.allow_empty,
        observer=teller,
        fence=fence,
        environ=environ,
    )
    published = [o.dest for o in spec.outputs]  # each ends in '/'
    teller.note(upload_line(summary, published))
    return summary


class Teller:
    """The observer of one transfer of an attempt: every line it hears goes to the attempt's
    ``taskkit.txt`` (``note``; a file's ``-v`` line when ``spec`` is verbose) and on to the
    run's ``observer``, which alone hears progress; ``on_plan`` sees the plan."""

    def __init__(
        self,
        spec: RunSpec,
        note: Note,
        observer: Observer,
        on_plan: Callable[[Plan], None] | None = None,
    ) -> None:
        self.verbose, self._note, self.observer, self.on_plan = (
            spec.verbose,
            note,
            observer,
            on_plan,
        )
        self._lock = threading.Lock()  # files are done on worker threads: lines stay in pairs

    def note(self, text: str) -> None:
        with self._lock:
            self._note(text)
            self.observer.note(text)

    def warning(self, text: str) -> None:
        with self._lock:
            self._note(f"warning: {text}")
            self.observer.warning(text)

    def problem(self, problem: Exception | str) -> None:
        with self._lock:
            self._note(f"error: {problem}")
            self.observer.problem(problem)

    def debug(self, text: str) -> None:
        self.observer.debug(text)

    def progress(self, progress: Progress) -> None:
        with self._lock:
            if progress.file is not None and self.verbose:
                self._note(progress.file)
            self.observer.progress(progress)

    def plan(self, plan: Shown) -> None:
        self.observer.plan(plan)
        if self.on_plan is not None and isinstance(plan, Plan):
            self.on_plan(plan)
