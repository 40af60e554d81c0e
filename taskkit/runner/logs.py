"""The durable log files of one attempt: kept locally, appended to a store as they grow.

A :class:`LogSink` keeps ``stdout.txt``, ``stderr.txt`` and ``taskkit.txt`` (taskkit's own
notes) in a local folder and appends what they gain to a per-attempt place in a store every
``interval`` seconds and once more when it closes. :func:`taskkit.runner.command.run_logged` tees a
command's output into it::

    with LogSink(folder, "az://logs/job/task/attempt-1/", interval=30) as sink:
        finished = run_logged(argv, sink=sink, deadline=3600, grace=10)

The ``with`` makes every exit path upload: a normal end, a signal, the deadline, or an exception
inside taskkit all leave through ``close()``, which writes out partial lines and flushes.

An attempt marks each :class:`Phase` it reaches with :meth:`LogSink.phase`, which notes it and
uploads at once, between the periodic uploads: the stored ``taskkit.txt`` always says how far
an attempt got, even one killed (``kill -9``) in its first second. With ``keep_local=False``
the local copy is removed once the store holds every byte, and kept (a warning says where)
when it does not.

Invariants:

* A stored log holds no credential taskkit knows of: lines are redacted
  (:func:`~taskkit.redaction.redact`) before they reach the local file, which is what is
  uploaded. The console copy is the user's own output, left exactly as the command wrote it.
  A line longer than 64 KiB is written in pieces, each cut 4 KiB before its end and those
  bytes kept for the next piece, so a credential at a cut is still seen whole.
* A failing upload never fails, stops or blocks the command: :meth:`LogSink.flush` never
  raises, warns once per streak of failures and tries again at the next flush.
* A remote file is always a prefix of the local one: bytes are appended from the offset the
  last successful upload reached, and the offset moves only after success (or, when an
  append was cut short after it landed, to the stored size).
* A phase is in the store before :meth:`LogSink.phase` returns, unless uploads are failing:
  then it waits for the next periodic try, so a store that is down never holds the attempt up
  more than once.
* The local files are removed only when the store holds all they hold; never without a
  destination.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from enum import Enum

from taskkit.exceptions import (
    InputNotFound,
    MisuseError,
    SourceChanged,
    TaskkitError,
    from_os_error,
)
from taskkit.observer import OBSERVED, Observer, observer_or_default
from taskkit.periodic import Periodic
from taskkit.redaction import redact
from taskkit.storage.base import Store
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores

__all__ = ["LINE_LIMIT", "NAMES", "UPLOAD_PIECE", "LogFile", "LogSink", "Phase", "write_all"]

NAMES = ("stdout", "stderr", "taskkit")
#: A partial line longer than this is written out without waiting for its newline.
LINE_LIMIT = 64 * 1024
#: Bytes of a cut line kept for the next piece: more than the longest credential redact()
#: recognises in one piece (a connection string's secret fields, a SAS, an account key).
_HELD_BACK = 4096
#: Bytes per append request: a flush after a burst of output holds little in memory.
UPLOAD_PIECE = 4 * 1024 * 1024


class Phase(str, Enum):
    """How far an attempt got, in the order it gets there; each is a line of ``taskkit.txt``
    that is in the store as soon as the attempt reaches it."""

    STARTED = "started"
    STAGING = "staging"
    STAGED = "staged"
    COMMAND_STARTED = "command started"
    COMMAND_ENDED = "command ended"
    UPLOADING = "uploading"
    PUBLISHED = "published"
    ENDED = "ended"


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LogFile:
    """One local log file; :meth:`write` is safe from any thread and redacts whole lines.
    ``warn`` is called with the file's lock held, so it must not write to a log file."""

    def __init__(self, path: str, warn: Callable[[str], None]) -> None:
        self.path = path
        self._warn = warn
        self._lock = threading.Lock()
        self._pending = bytearray()
        self.size = 0  # bytes in the local file so far
        self._failed = False
        #: The first local write that failed, if one did (the disk full, read-only, failing).
        self.error: OSError | None = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        self._fd: int | None = os.open(path, flags, 0o644)

    def write(self, data: bytes) -> None:
        """Append ``data``: complete lines reach the file now, a partial line once it ends.
        Never raises (a failing local write is warned about once); after :meth:`close` the
        bytes are dropped (only a process that escaped the command's group writes then)."""
        with self._lock:
            self._pending += data
            end = self._pending.rfind(b"\n") + 1
            if not end and len(self._pending) > LINE_LIMIT:
                # A line too long to wait for is cut, but its last bytes are held back for
                # the next piece, so that a credential at the cut is seen whole by redact().
                end = len(self._pending) - _HELD_BACK
            if end:
                self._emit(bytes(self._pending[:end]))
                del self._pending[:end]

    def drain(self) -> None:
        """Write out the partial last line now."""
        with self._lock:
            if self._pending:
                self._emit(bytes(self._pending))
                self._pending.clear()

    def close(self) -> None:
        self.drain()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _emit(self, data: bytes) -> None:
        # surrogateescape makes decode-then-encode lossless for bytes that are not UTF-8.
        text = data.decode("utf-8", "surrogateescape")
        hidden = redact(text)
        if hidden != text:
            data = hidden.encode("utf-8", "surrogateescape")
        if self._fd is None:
            return
        try:
            write_all(self._fd, data)
            self.size += len(data)
        except OSError as exc:
            # A short write leaves bytes the count misses; the real size keeps every upload
            # a prefix of the file.
            with contextlib.suppress(OSError):
                self.size = os.fstat(self._fd).st_size
            if not self._failed:
                self._failed = True
                self.error = exc
                self._warn(f"cannot write {self.path}: {exc.strerror or exc}; output is lost")


class _Notes(logging.Handler):
    """A logging handler writing warnings and errors as notes of a :class:`LogSink`."""

    def __init__(self, sink: LogSink) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, OBSERVED, False):
            return  # a line told to an observer: whoever told it noted it already
        # A bad record must not fail the attempt it is about, nor print a traceback.
        with contextlib.suppress(Exception):
            kind = "error" if record.levelno >= logging.ERROR else "warning"
            self.sink.note(f"{kind}: {record.getMessage()}")


class LogSink:
    """The log files of one attempt: written in ``directory``, appended to ``dest`` (a URL
    prefix; ``None`` keeps them local) as they grow. ``observer`` (default: the ``"taskkit"``
    logger) hears one warning per problem.
    ``keep_local=False``: :meth:`close` removes the local files (and ``directory``, when that
    leaves it empty) once the store holds all of them. Uploads go through ``stores`` when given
    (the run's, left open), else through stores of its own with a short retry budget, opened
    at the first upload and closed by :meth:`close`."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        dest: str | None,
        *,
        stores: Stores | None = None,
        interval: float = 30.0,
        observer: Observer | None = None,
        keep_local: bool = True,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise MisuseError(f"interval must be a number of seconds above 0, not {interval!r}")
        self.directory = os.fspath(directory)
        self.dest = dest if dest is None or dest.endswith("/") else dest + "/"
        self.interval = float(interval)
        self.observer = observer_or_default(observer)
        self.keep_local = keep_local
        #: The last phase :meth:`phase` noted; None before the first.
        self.reached: Phase | None = None
        #: After :meth:`close`: whether the store holds every byte of the logs.
        self.stored: bool | None = None
        self._own_stores = stores is None
        self._stores = stores
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._files = {
                name: LogFile(os.path.join(self.directory, f"{name}.txt"), self._tell)
                for name in NAMES
            }
        except OSError as exc:
            raise from_os_error(exc, "cannot create the log files in") from exc
        self._targets: list[tuple[str, Store, str]] | None = None
        self._uploaded = dict.fromkeys(NAMES, 0)
        self._created: set[str] = set()
        self._failing = False
        self._flush_lock = threading.Lock()  # the periodic thread and close() may race
        self._every = Periodic(self.interval, self.flush, "taskkit-logs")
        self._entered = False
        self._closed = False

    def __repr__(self) -> str:
        return f"LogSink({self.directory!r}, {None if self.dest is None else redact(self.dest)!r})"

    def __enter__(self) -> LogSink:
        if self._entered or self._closed:
            raise MisuseError(f"{self!r} was already entered")
        self._entered = True
        self._every.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file(self, name: str) -> LogFile:
        """The log file ``name``: ``"stdout"``, ``"stderr"`` or ``"taskkit"``."""
        try:
            return self._files[name]
        except KeyError:
            raise MisuseError(f"no log file {name!r}; there are {', '.join(NAMES)}") from None

    def note(self, line: str) -> None:
        """One timestamped line of taskkit's own in ``taskkit.txt``."""
        self._files["taskkit"].write(_note_line(line))

    @contextlib.contextmanager
    def keeping(self, logger: logging.Logger) -> Iterator[LogSink]:
        """Note in ``taskkit.txt`` every warning ``logger`` emits meanwhile (a storage outage
        and its end, a stat-cache set aside, a node-cache object found altered), so the
        stored log tells what the console told; whoever else listens to ``logger`` still
        hears it. The lines of a :class:`~taskkit.observer.LoggingObserver` are not noted
        again: whoever told them noted them."""
        handler = _Notes(self)
        logger.addHandler(handler)
        try:
            yield self
        finally:
            logger.removeHandler(handler)

    def phase(self, phase: Phase, line: str = "") -> bool:
        """Note that the attempt reached ``phase`` (``line`` says more) and upload the logs
        now, so that the store says how far the attempt got whatever happens next; whether
        the store holds it. Never raises. While uploads are failing the note waits for the
        next periodic try instead: a store that is down must not hold up every phase."""
        if self._closed:
            return False
        self.reached = phase
        self.note(f"{phase.value}: {line}" if line else phase.value)
        if self._failing:
            return False
        return self.flush()

    def _warn(self, message: str) -> None:
        self.note(f"warning: {message}")
        self._tell(message)

    def _tell(self, message: str) -> None:
        with contextlib.suppress(Exception):  # a broken observer is no reason to lose the task
            self.observer.warning(message)

    def flush(self) -> bool:
        """Upload what the local files gained since the last upload; whether all of it went.
        Never raises."""
        if self.dest is None:
            return True
        with self._flush_lock:
            try:
                self._upload(self.dest)
            except TaskkitError as exc:  # the store has spent its retry budget already
                self._failed(self.dest, str(exc))
                return False
            except Exception as exc:  # a bug or an unmapped upstream error: still not fatal
                self._failed(self.dest, f"{type(exc).__name__}: {exc}")
                return False
            self._failing = False
            return True

    def _failed(self, dest: str, reason: str) -> None:
        if not self._failing:
            self._failing = True
            self._warn(f"cannot upload logs to {redact(dest)}: {reason}; will try again")

    def _upload(self, dest: str) -> None:
        if self._targets is None:
            # Opened at the first flush, and at each one until it works: a store that cannot
            # be opened (a bad URL, no credentials) must not keep the command from running.
            if self._stores is None:
                budget = RetryBudget(attempts=4, first_delay=0.5, max_delay=5, budget=15)
                self._stores = Stores(budget)
            self._targets = [(name, *self._stores.open(f"{dest}{name}.txt")) for name in NAMES]
        for name, store, key in self._targets:
            size, offset = self._files[name].size, self._uploaded[name]
            # The first upload happens even when empty: readers see the attempt's logs exist.
            first = name not in self._created
            if offset == size and not first:
                continue
            with open(self._files[name].path, "rb") as local:
                local.seek(offset)
                while first or offset < size:
                    data = local.read(min(UPLOAD_PIECE, size - offset))
                    if not data and not first:
                        break  # shorter than counted after a failed local write
                    try:
                        store.append(key, offset, data)
                    except SourceChanged:
                        if first:
                            raise
                        # An append cut short after it landed (a signal during a phase's
                        # upload) left the offset behind: the stored file is still a prefix
                        # of the local one, so go on from its size.
                        stored = store.stat(key).size
                        if not offset < stored <= size:
                            raise
                        offset = self._uploaded[name] = stored
                        local.seek(offset)
                        continue
                    offset = self._uploaded[name] = offset + len(data)
                    self._created.add(name)
                    first = False

    def close(self) -> None:
        """Stop the periodic uploads, write out partial lines, upload the rest; with
        ``keep_local=False``, remove the local copy if the store holds it all. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._every.stop()
        for log in self._files.values():
            log.drain()
        self.stored = self.flush()
        local = not self.keep_local and self.dest is not None
        if local and not self.stored:
            self._warn(f"the store does not hold all the logs; they are kept in {self.directory}")
        for log in self._files.values():
            log.close()
        if local and self.stored:
            self._remove_local()
        if self._own_stores and self._stores is not None:
            try:
                self._stores.close()
            except Exception as exc:  # nothing is lost: the uploads are done or given up
                self._tell(f"cannot close the log store: {type(exc).__name__}: {exc}")

    def _remove_local(self) -> None:
        """Remove the local copy the store now holds; what cannot be removed is the task
        directory's, which Batch cleans with the task."""
        for log in self._files.values():
            with contextlib.suppress(OSError):
                os.unlink(log.path)
        with contextlib.suppress(OSError):  # not empty: someone else's files are there too
            os.rmdir(self.directory)


def _note_line(line: str) -> bytes:
    """``line`` as one timestamped line of taskkit's own in ``taskkit.txt``."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = line.replace("\n", "\\n").replace("\r", "\\r")
    return f"{stamp} taskkit: {text}\n".encode(errors="surrogateescape")


def settle_lost(
    store: Store,
    prefix: str,
    local: str | None,
    why: str,
) -> bool:
    """Make sure the store holds the logs of an attempt that was killed before its first
    upload (the window between its record and its first phase): when nothing is at
    ``prefix`` (its logs folder), upload what it left in the folder ``local`` on this node,
    and in any case a ``taskkit.txt`` ending with ``why``. Whether anything was written.
    Storage errors are raised; a file that cannot be read locally is passed over."""
    try:
        store.stat(f"{prefix}taskkit.txt")
        return False  # it got its logs out itself
    except InputNotFound:
        pass
    found: dict[str, bytes] = {}
    if local is not None:
        for name in NAMES:
            with contextlib.suppress(OSError), open(os.path.join(local, f"{name}.txt"), "rb") as f:
                found[name] = f.read()
    found["taskkit"] = found.get("taskkit", b"") + _note_line(redact(why))
    for name, data in found.items():
        store.append(f"{prefix}{name}.txt", 0, data)
    return True
