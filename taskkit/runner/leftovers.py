"""Outputs left by earlier work: found, removed before the command runs, and recorded.

What an attempt publishes is a function of its work. An attempt of new work (another command,
other inputs or input contents, other output patterns: another fingerprint) may start in a
working directory that earlier work of the task used; what those earlier attempts wrote there
and the output patterns match would be found by the command and published under the new
work's manifest. So it is removed before the command runs. A retry of the same work keeps it:
make-like commands resume from what their earlier attempts left.

Who wrote a file is known from a ledger kept per task (state, job and task) in the working
directory, ``.taskkit-outputs-<hash>.json`` (a ``.taskkit-`` name, which output patterns
never match), replaced atomically and under a lock:

* before the command runs, the attempt is entered as *open*, with the files its output
  patterns match then and their identity (inode, size, mtime_ns; no byte is read);
* after the command ended, what the patterns match that was not there, or is there with
  another identity, is recorded as the attempt's *products* with its work's fingerprint, and
  the entry is closed. An attempt that never got there (``kill -9``) stays open, and the next
  attempt closes it in the same way with what the patterns match at that time, but bounded
  by when its command was over: a file whose change time (ctime, which no one can set back)
  is after that moment was written by someone else, and is not its product.

That moment is the change time of the attempt's *tombstone*, ``.taskkit-outputs-<hash>-
<attempt>.ended`` beside the ledger, made by whoever saw the command gone: its watchdog, once
taskkit was killed (:mod:`taskkit.runner.lifetime`), else the next attempt on this host once it has
ended what was left (:func:`commands_gone`). Both times come from the filesystem's clock, as
the files' own do. Without a tombstone (not Linux, or an attempt that ended without closing
its entry) every new file is charged to the attempt, and a note names them.

Invariants: a file is removed only when the ledger records it as a product of this task's
attempts of other work and it still has the identity recorded then; so a file the user put
there (and no command rewrote), a file changed or replaced since, another task's file, and this
attempt's staged inputs are never removed; nor is a file that appeared after a killed
attempt's command was seen gone. A missing or damaged ledger removes nothing. The
files an attempt still running in the directory is writing are left alone; but while an
attempt of other work runs there, or after one ran beside this one leaving its files,
:meth:`Leftovers.mixed` says so, and the attempt does not publish them as its work's.
Products are looked for where the patterns of the attempt that made them looked: a pattern
widened by later work does not reach what earlier attempts wrote outside the patterns they had.

Identity leaves the device number out: it can change across a remount while the file stays
the same, and a file taken for changed would be taken for a product.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import xxhash

from taskkit.content.walk import inside
from taskkit.exceptions import TaskFailure, from_os_error
from taskkit.redaction import redact
from taskkit.runner.journal import host_identity
from taskkit.runner.lifetime import process_start, touch
from taskkit.transfer.download import locked
from taskkit.transfer.patterns import Match, Output, expand, parse_output

if TYPE_CHECKING:
    from taskkit.runner.fingerprint import Work
    from taskkit.runner.spec import RunSpec
    from taskkit.transfer.stage_plan import Plan

__all__ = [
    "LEDGER_PREFIX",
    "Ledger",
    "Leftovers",
    "Opened",
    "Product",
    "Removal",
    "Tidy",
    "alive",
    "commands_gone",
    "ledger_path",
    "made",
    "owner",
    "plan",
    "preview",
    "staged_paths",
    "tombstone_path",
]

#: The start of the ledger's name (and its lock's) in the working directory.
LEDGER_PREFIX = ".taskkit-outputs-"
_VERSION = 1
#: Paths named in one removal note; the rest are counted.
_SHOWN = 5
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


class Removal(NamedTuple):
    """A file to remove before the command runs, and the earlier work that wrote it."""

    path: str
    work: str


class Tidy(NamedTuple):
    """The plan: the files to remove, the products the ledger keeps, the attempts still
    running here, what to tell the user, and the attempts whose entries it closed."""

    removals: tuple[Removal, ...]
    products: dict[str, Product]
    running: tuple[Opened, ...]
    notes: tuple[str, ...]
    settled: tuple[Opened, ...] = ()

    def removal_notes(self) -> list[str]:
        """One line per earlier work: how many of its outputs go, naming the first few."""
        lines = []
        for work in sorted({r.work for r in self.removals}):
            paths = sorted(r.path for r in self.removals if r.work == work)
            noun = "output" if len(paths) == 1 else "outputs"
            lines.append(f"removed {len(paths)} {noun} of earlier work ({work}): {_named(paths)}")
        return lines


def _named(paths: Sequence[str]) -> str:
    """The first few of ``paths``, and how many more."""
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return ", ".join(paths[:_SHOWN]) + more


def plan(
    ledger: Ledger | None,
    files: Mapping[str, Identity],
    matched: Mapping[str, Collection[str]],
    work: str,
    protected: Collection[str],
    alive: Callable[[Opened], bool],
    *,
    changed: Mapping[str, int] | None = None,
    ended: Callable[[Opened], int | None] | None = None,
) -> Tidy:
    """What to remove before an attempt of ``work`` runs its command. Pure.

    ``files``: the identity now of every path a walked pattern matches or the ledger names
    as a product (a path that is gone is absent); ``matched``: each walked pattern's paths;
    ``protected``: this attempt's staged inputs; ``alive``: whether an open attempt's
    process may still be running (its entry then stays open and its files are left alone);
    ``changed``: the change time (ns) of each path of ``files``; ``ended``: a moment (same
    clock) when an open attempt's command was over, None when it is not known (then all it
    may have written is charged to it, and a note says which files).
    """
    if ledger is None:
        return Tidy((), {}, (), ())
    products = dict(ledger.products)
    running, settled, notes = [], [], []
    for entry in ledger.opened:
        if alive(entry):
            running.append(entry)
            continue
        settled.append(entry)
        until = None if ended is None else ended(entry)
        charged = _merge(products, made(entry, files, matched, changed, until))
        if until is None and charged:
            notes.append(
                f"attempt {entry.attempt} ({entry.work}) was interrupted and when its command "
                "ended is not known, so what its output patterns match that is new or changed "
                f"since it started is taken for its outputs ({_files(len(charged))}): "
                f"{_named(sorted(charged))}"
            )
    kept = {
        path: product
        for path, product in products.items()
        # Gone, changed or replaced since (by someone else), or an input now: not ours.
        if files.get(path) == product.identity and path not in protected
    }
    busy = {path for entry in running for path in made(entry, files, matched)}
    busy_works = {entry.work for entry in running}
    removals = tuple(
        Removal(path, product.work)
        for path, product in sorted(kept.items())
        if product.work != work and product.work not in busy_works and path not in busy
    )
    notes.extend(
        f"attempt {entry.attempt} of other work ({entry.work}) may still be running in this "
        "working directory: what it writes is left alone"
        for entry in running
        if entry.work != work
    )
    for removal in removals:
        del kept[removal.path]
    return Tidy(removals, kept, tuple(running), tuple(notes), tuple(settled))


def _merge(products: dict[str, Product], found: Mapping[str, Product]) -> list[str]:
    """Add what an attempt made to ``products``; the paths it took. A file already recorded,
    and unchanged since, keeps its work: an attempt running beside another sees the other's
    files appear too, and the record made when the other's command ended is the precise one."""
    taken = []
    for path, product in found.items():
        known = products.get(path)
        if known is None or known.identity != product.identity:
            products[path] = product
            taken.append(path)
    return taken


def made(
    entry: Opened,
    files: Mapping[str, Identity],
    matched: Mapping[str, Collection[str]],
    changed: Mapping[str, int] | None = None,
    until: int | None = None,
) -> dict[str, Product]:
    """What ``entry``'s attempt wrote as far as its patterns see now: files that were not
    there before its command, or are there with another identity; with ``until`` (when its
    command was over), only those whose change time in ``changed`` is not after it (a file
    whose change time is unknown is taken, as without ``until``)."""
    return {
        path: Product(entry.work, files[path])
        for pattern in entry.patterns
        for path in matched.get(pattern, ())
        if path in files
        and entry.before.get(path) != files[path]
        and (until is None or changed is None or changed.get(path, until) <= until)
    }


# -- the working directory --------------------------------------------------------------------


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


def _ended_at(tombstone: Path) -> int | None:
    """When the command of a killed attempt was over, as its tombstone tells: the file's
    change time (ns, the filesystem's clock; it was made or touched at that moment, and no one
    can set it back), None when there is none."""
    try:
        st = os.lstat(tombstone)
    except OSError:
        return None
    return st.st_ctime_ns if stat.S_ISREG(st.st_mode) else None


class _Walked(NamedTuple):
    """What the patterns match: each file's identity and change time, each pattern's paths."""

    files: dict[str, Identity]
    changed: dict[str, int]
    matched: dict[str, frozenset[str]]


def _walk(root: Path, patterns: Iterable[str], also: Iterable[str]) -> _Walked:
    """One walk of each pattern below ``root`` (a real path), and the identity of each path
    in ``also`` that is still a file."""
    files: dict[str, Identity] = {}
    changed: dict[str, int] = {}
    matched: dict[str, frozenset[str]] = {}
    for pattern in dict.fromkeys(patterns):
        paths = []
        try:
            for found in expand(root, Output(pattern, "")):
                if isinstance(found, Match):
                    path = os.path.relpath(found.path, root)
                    files[path] = _of(found.stat)
                    changed[path] = found.stat.st_ctime_ns
                    paths.append(path)
        except OSError as exc:  # a directory removed while it was walked
            raise from_os_error(exc, "cannot look for outputs") from exc
        matched[pattern] = frozenset(paths)
    for path in also:
        if path not in files and _reached(root, path):
            with contextlib.suppress(OSError):
                st = os.stat(root / path)
                if stat.S_ISREG(st.st_mode):
                    files[path] = _of(st)
                    changed[path] = st.st_ctime_ns
    return _Walked(files, changed, matched)


def _reached(root: Path, path: str) -> bool:
    """Whether ``path``'s directory is inside ``root`` once links are resolved (the file
    itself may be a link: removing it removes the link)."""
    return inside(root, Path(os.path.realpath((root / path).parent)))


def _of(st: os.stat_result) -> Identity:
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read(path: Path) -> Ledger | None:
    """The ledger at ``path``, None when there is none; ``ValueError`` when damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from exc
    return Ledger.from_bytes(data)


def _write(path: Path, ledger: Ledger) -> None:
    """Replace the ledger at once: a reader (or a ``kill -9``) never meets half of one."""
    temp = path.with_name(path.name + ".new")
    try:
        temp.write_bytes(ledger.to_bytes())
        os.replace(temp, path)
    except OSError as exc:
        raise from_os_error(exc, "cannot write the ledger of outputs") from exc


def _locked(path: Path) -> contextlib.AbstractContextManager[int]:
    """This task's ledger for this process alone (released when it dies, even by kill -9)."""
    return locked(path.with_name(path.name.removesuffix(".json") + ".lock"))


def alive(entry: Opened) -> bool:
    """Whether the process of ``entry`` may still be running: on this host and boot, only
    when a process with its pid and start time exists; on another host it cannot be told,
    so it is taken for running (its files are kept)."""
    if entry.host != host_identity():
        return True
    return entry.pid_start is not None and process_start(entry.pid) == entry.pid_start


def _remove(root: Path, removals: Sequence[Removal], files: Mapping[str, Identity]) -> None:
    """Remove each file, if it is still the one planned (a link is removed, not its target)."""
    for removal in removals:
        path = root / removal.path
        try:
            if not _reached(root, removal.path) or _of(os.stat(path)) != files[removal.path]:
                continue  # changed since the walk: not the product any more
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise from_os_error(exc, "cannot remove an output of earlier work") from exc


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


class _Survey(NamedTuple):
    """A ledger read and the working directory walked: the plan, and what it was made of."""

    tidy: Tidy
    files: dict[str, Identity]
    matched: dict[str, frozenset[str]]
    notes: list[str]


def _survey(
    root: Path, path: Path, patterns: Sequence[str], work: str, staged: Iterable[Plan]
) -> _Survey:
    """Read the ledger at ``path``, walk the patterns (this attempt's and those of the open
    entries), and plan."""
    try:
        ledger, error = _read(path), None
    except ValueError as exc:
        ledger, error = None, exc
    opened = ledger.opened if ledger is not None else ()
    products = ledger.products if ledger is not None else {}
    walked = _walk(root, [*patterns, *(p for o in opened for p in o.patterns)], products)
    files, matched = walked.files, walked.matched
    protected = staged_paths(staged)
    tidy = plan(
        ledger,
        files,
        matched,
        work,
        protected,
        alive,
        changed=walked.changed,
        ended=lambda entry: _ended_at(tombstone_path(path, entry.attempt)),
    )
    notes = list(tidy.notes)
    unknown = len(set(files) - protected)
    if error is not None:
        notes.insert(
            0,
            f"the ledger of earlier outputs {path.name} cannot be read ({error}): "
            "no earlier output is removed",
        )
    elif ledger is None and unknown:
        notes.insert(
            0,
            f"no ledger of earlier outputs in this working directory: {_files(unknown)} "
            "the output patterns match now are kept",
        )
    return _Survey(tidy, files, matched, notes)


class Leftovers:
    """One attempt's side of the ledger: :meth:`begin` before its command, :meth:`end`
    after it."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        owner: tuple[str, str, str],
        outputs: Sequence[Output],
        work: str,
        attempt: int,
        note: Callable[[str], None],
    ) -> None:
        self.root = Path(os.path.realpath(workdir))
        self.path = ledger_path(self.root, *owner)
        self.patterns = tuple(dict.fromkeys(o.pattern for o in outputs))
        self.work, self.attempt, self.note = work, attempt, note
        self._entry: Opened | None = None

    @classmethod
    def begin(
        cls,
        spec: RunSpec,
        workdir: str | os.PathLike[str],
        work: Work,
        attempt: int,
        staged: Iterable[Plan],
        note: Callable[[str], None],
    ) -> Leftovers:
        """Remove what earlier work of ``spec``'s task left, and enter this attempt in the
        ledger; before the command runs. ``staged``: the staging plans of this attempt (their
        files are its inputs). Raises ``TaskFailure`` when the directory cannot be written."""
        self = cls(workdir, owner(spec), spec.outputs, work.fingerprint, attempt, note)
        if not self.patterns and not self.path.exists():
            return self  # nothing is published, and no earlier attempt left a ledger
        with _locked(self.path):
            survey = _survey(self.root, self.path, self.patterns, self.work, staged)
            tidy = survey.tidy
            _remove(self.root, tidy.removals, survey.files)
            for line in [*survey.notes, *tidy.removal_notes()]:
                note(line)
            gone = {r.path for r in tidy.removals}
            # A tombstone of this number from before (a journal started afresh) is not ours.
            _unlink(tombstone_path(self.path, attempt))
            self._entry = Opened(
                attempt,
                self.work,
                self.patterns,
                host_identity(),
                os.getpid(),
                process_start(os.getpid()),
                {
                    path: survey.files[path]
                    for pattern in self.patterns
                    for path in survey.matched[pattern]
                    if path not in gone
                },
            )
            _write(self.path, Ledger(tidy.products, (*tidy.running, self._entry)))
            for entry in tidy.settled:
                _unlink(tombstone_path(self.path, entry.attempt))
        return self

    @property
    def tombstone(self) -> Path | None:
        """Where this attempt's watchdog leaves its tombstone should taskkit be killed while
        the command runs; None when no entry of this attempt is open (nothing to settle)."""
        return None if self._entry is None else tombstone_path(self.path, self.attempt)

    def end(self) -> None:
        """Record what the command wrote and close this attempt's entry; after the command
        ended. Never raises: an entry left open is closed by the next attempt instead."""
        entry = self._entry
        if entry is None:
            return
        try:
            with _locked(self.path):
                try:
                    ledger = _read(self.path) or Ledger({}, ())
                except ValueError:
                    ledger = Ledger({}, ())
                walked = _walk(self.root, entry.patterns, ())
                products = dict(ledger.products)
                _merge(products, made(entry, walked.files, walked.matched))
                opened = tuple(o for o in ledger.opened if _process(o) != _process(entry))
                _write(self.path, Ledger(products, opened))
        except Exception as exc:  # the next attempt closes the entry from what it finds
            self.note(f"cannot record the outputs of attempt {self.attempt}: {exc}")
        self._entry = None

    def mixed(self, running: Callable[[int], bool]) -> str | None:
        """Why what the output patterns match now is not this work's alone, if it is not; after
        the command, before publishing. An attempt of other work may still be running here
        (its entry open: judged by its process on this host and boot, else by
        ``running(attempt)``, the journal's word, so that a dead attempt of an earlier boot or
        another node does not stand in the way for ever), or one that ran beside this attempt
        left files the patterns match (its products, unchanged). Such a set is not published;
        a later attempt removes what the other work left once it is over. A damaged ledger
        says nothing."""
        try:
            ledger = _read(self.path)
        except ValueError:
            return None
        if ledger is None:
            return None
        host = host_identity()
        for entry in ledger.opened:
            if entry.work == self.work:
                continue
            if alive(entry) if entry.host == host else running(entry.attempt):
                return f"attempt {entry.attempt} of other work is running in this working directory"
        theirs = {p: made for p, made in ledger.products.items() if made.work != self.work}
        if not theirs:  # the usual case: begin() removed them all; no walk needed
            return None
        files = _walk(self.root, self.patterns, ()).files
        left = sorted(p for p, made in theirs.items() if files.get(p) == made.identity)
        if not left:
            return None
        noun = "an output" if len(left) == 1 else "outputs"
        return f"{_named(left)}: {noun} of other work ({theirs[left[0]].work}) made beside this one"


def _process(entry: Opened) -> tuple[int, str, int, str | None]:
    return entry.attempt, entry.host, entry.pid, entry.pid_start


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):  # gone already, or left for the next attempt
        os.unlink(path)


def commands_gone(spec: RunSpec, workdir: str | os.PathLike[str], attempts: Iterable[int]) -> None:
    """The commands of ``attempts`` (interrupted on this host) are verifiably gone now (see
    :func:`taskkit.runner.lifetime.gone_for_sure`): make the tombstone of each that the ledger has
    open, unless its watchdog made one (earlier, so a closer bound). Never raises: without a
    tombstone the next attempt charges all it finds, as it says."""
    numbers = set(attempts)
    root = Path(os.path.realpath(workdir))
    path = ledger_path(root, *owner(spec))
    if not numbers or not path.exists():
        return
    host = host_identity()
    with contextlib.suppress(TaskFailure, ValueError), _locked(path):
        ledger = _read(path)
        for entry in () if ledger is None else ledger.opened:
            if entry.attempt in numbers and entry.host == host:
                touch(os.fspath(tombstone_path(path, entry.attempt)), keep=True)


def staged_paths(plans: Iterable[Plan]) -> frozenset[str]:
    """The paths (relative to the working directory) the staging plans put inputs at."""
    paths = set()
    for staging in plans:
        for entry in staging.entries:
            if entry.action != "remove":
                paths.add(os.path.relpath(entry.path, staging.workdir))
    return frozenset(paths)


def owner(spec: RunSpec) -> tuple[str, str, str]:
    """Whose ledger: the task's state, job and task ids."""
    return spec.state or "", spec.job_id or "", spec.task_id or ""


def preview(
    spec: RunSpec, workdir: str | os.PathLike[str], work: Work, staged: Iterable[Plan] = ()
) -> tuple[Tidy, list[str]]:
    """What :meth:`Leftovers.begin` would remove now, and its notes; reads only (the dry
    run)."""
    root = Path(os.path.realpath(workdir))
    if not root.is_dir():
        return Tidy((), {}, (), ()), []
    patterns = list(dict.fromkeys(o.pattern for o in spec.outputs))
    survey = _survey(root, ledger_path(root, *owner(spec)), patterns, work.fingerprint, staged)
    return survey.tidy, survey.notes
