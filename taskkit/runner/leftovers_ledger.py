"""The ledger of outputs: who wrote which file in a working directory, kept per task.

A task's ledger (its state, job and task ids: :func:`owner`) lives in the working directory as
``.taskkit-outputs-<hash>.json`` (a ``.taskkit-`` name, which output patterns never match):

* before the command runs, the attempt is entered as *open* (:class:`Opened`), with the files
  its output patterns match then and their identity (inode, size, mtime_ns; no byte is read);
* after the command ended, what the patterns match that was not there, or is there with
  another identity, is recorded as the attempt's *products* (:class:`Product`) with its work's
  fingerprint, and the entry is closed. An attempt that never got there (``kill -9``) stays
  open, and the next attempt closes it in the same way with what the patterns match at that
  time, but bounded by when its command was over: a file whose change time (ctime, which no
  one can set back) is after that moment was written by someone else, and is not its product.

That moment is the change time of the attempt's *tombstone*, ``.taskkit-outputs-<hash>-
<attempt>.ended`` beside the ledger, made by whoever saw the command gone: its watchdog, once
taskkit was killed (:mod:`taskkit.runner.lifetime`), else the next attempt on this host once it
has ended what was left (:func:`taskkit.runner.leftovers.commands_gone`). Both times come from
the filesystem's clock, as the files' own do.

Invariants: the ledger is replaced atomically and only under its lock (a reader, or a
``kill -9``, never meets half of one); it names only relative paths inside the working
directory and patterns as :func:`~taskkit.transfer.patterns.parse_output` leaves them, and a
damaged or foreign file is a ``ValueError``, never a wrong ledger (it is a file in the
command's reach, and must never lead a removal elsewhere).

Identity leaves the device number out: it can change across a remount while the file stays
the same, and a file taken for changed would be taken for a product.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import xxhash

from taskkit.exceptions import TaskFailure, from_os_error
from taskkit.redaction import redact
from taskkit.runner.journal import host_identity
from taskkit.runner.lifetime import process_start
from taskkit.transfer.download import locked
from taskkit.transfer.patterns import parse_output

if TYPE_CHECKING:
    from taskkit.runner.spec import RunSpec

__all__ = [
    "LEDGER_PREFIX",
    "Identity",
    "Ledger",
    "Opened",
    "Product",
    "alive",
    "ended_at",
    "ledger_lock",
    "ledger_path",
    "owner",
    "read_ledger",
    "tombstone_path",
    "write_ledger",
]

#: The start of the ledger's name (and its lock's) in the working directory.
LEDGER_PREFIX = ".taskkit-outputs-"

_VERSION = 1

#: The end of a tombstone's name: when a killed attempt's command was seen gone.
_TOMBSTONE_SUFFIX = ".ended"

Identity = tuple[int, int, int]  # inode, size, mtime_ns


class Product(NamedTuple):
    """A file an attempt of this task wrote: the fingerprint of its work, and its identity
    as that attempt left it."""

    work: str
    identity: Identity


class Opened(NamedTuple):
    """An attempt whose command may have run and whose products are not recorded yet: what
    its patterns matched before the command, and the process that ran it."""

    attempt: int
    work: str
    patterns: tuple[str, ...]
    host: str
    pid: int
    pid_start: str | None
    before: Mapping[str, Identity]


class Ledger(NamedTuple):
    """What a task's attempts wrote in one working directory (paths relative to it)."""

    products: Mapping[str, Product]
    opened: tuple[Opened, ...]

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "version": _VERSION,
                "products": {p: [d.work, *d.identity] for p, d in sorted(self.products.items())},
                "opened": [
                    {
                        "attempt": o.attempt,
                        "work": o.work,
                        "patterns": list(o.patterns),
                        "host": o.host,
                        "pid": o.pid,
                        "pid_start": o.pid_start,
                        "before": {p: list(i) for p, i in sorted(o.before.items())},
                    }
                    for o in self.opened
                ],
            },
            ensure_ascii=False,
        ).encode("utf-8", "surrogateescape")

    @classmethod
    def from_bytes(cls, data: bytes) -> Ledger:
        """Read a ledger; ``ValueError`` when it is not one this version wrote."""
        try:
            found = json.loads(data.decode("utf-8", "surrogateescape"))
            if found["version"] != _VERSION:
                raise ValueError(f"version {found['version']!r}")
            products = {
                _relative(p): Product(str(w), _identity(i))
                for p, (w, *i) in found["products"].items()
            }
            opened = tuple(
                Opened(
                    int(o["attempt"]),
                    str(o["work"]),
                    tuple(_pattern(p) for p in o["patterns"]),
                    str(o["host"]),
                    int(o["pid"]),
                    None if o["pid_start"] is None else str(o["pid_start"]),
                    {_relative(p): _identity(i) for p, i in o["before"].items()},
                )
                for o in found["opened"]
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a ledger ({type(exc).__name__}: {exc})") from exc
        return cls(products, opened)


def _relative(path: object) -> str:
    """A path the ledger may name: relative, normalized, inside the working directory (a
    ledger is a file in the command's reach, and must never lead a removal elsewhere)."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\0" in path:
        raise ValueError(f"bad path {path!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"bad path {path!r}")
    return path


def _pattern(pattern: object) -> str:
    """An output pattern as :func:`parse_output` leaves it."""
    try:
        if isinstance(pattern, str) and parse_output(f"{pattern}=file:///").pattern == pattern:
            return pattern
    except TaskFailure:
        pass
    raise ValueError(f"bad pattern {pattern!r}")


def _identity(values: Sequence[Any]) -> Identity:
    ino, size, mtime_ns = (int(v) for v in values)
    return ino, size, mtime_ns


def owner(spec: RunSpec) -> tuple[str, str, str]:
    """Whose ledger: the task's state, job and task ids."""
    return spec.state or "", spec.job_id or "", spec.task_id or ""


def ledger_path(workdir: str | os.PathLike[str], state: str, job: str, task: str) -> Path:
    """The ledger of one task in ``workdir``: one per task, so tasks sharing a directory
    keep theirs apart. The state URL is keyed without its credential (a rotated token is the
    same task)."""
    key = "\0".join((redact(state), job, task)).encode("utf-8", "surrogateescape")
    return Path(workdir) / f"{LEDGER_PREFIX}{xxhash.xxh3_64_hexdigest(key)}.json"


def tombstone_path(ledger: Path, attempt: int) -> Path:
    """The tombstone of attempt ``attempt`` beside the ledger at ``ledger``: made once that
    attempt's command was seen gone after it was killed. A ``.taskkit-`` name, which output
    patterns never match."""
    stem = ledger.name.removesuffix(".json")
    return ledger.with_name(f"{stem}-{attempt:05d}{_TOMBSTONE_SUFFIX}")


def ended_at(tombstone: Path) -> int | None:
    """When the command of a killed attempt was over, as its tombstone tells: the file's
    change time (ns, the filesystem's clock; it was made or touched at that moment, and no one
    can set it back), None when there is none."""
    try:
        st = os.lstat(tombstone)
    except OSError:
        return None
    return st.st_ctime_ns if stat.S_ISREG(st.st_mode) else None


def read_ledger(path: Path) -> Ledger | None:
    """The ledger at ``path``, None when there is none; ``ValueError`` when damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from exc
    return Ledger.from_bytes(data)


def write_ledger(path: Path, ledger: Ledger) -> None:
    """Replace the ledger at once: a reader (or a ``kill -9``) never meets half of one."""
    temp = path.with_name(path.name + ".new")
    try:
        temp.write_bytes(ledger.to_bytes())
        os.replace(temp, path)
    except OSError as exc:
        raise from_os_error(exc, "cannot write the ledger of outputs") from exc


def ledger_lock(path: Path) -> contextlib.AbstractContextManager[int]:
    """This task's ledger for this process alone (released when it dies, even by kill -9)."""
    return locked(path.with_name(path.name.removesuffix(".json") + ".lock"))


def alive(entry: Opened) -> bool:
    """Whether the process of ``entry`` may still be running: on this host and boot, only
    when a process with its pid and start time exists; on another host it cannot be told,
    so it is taken for running (its files are kept)."""
    if entry.host != host_identity():
        return True
    return entry.pid_start is not None and process_start(entry.pid) == entry.pid_start
