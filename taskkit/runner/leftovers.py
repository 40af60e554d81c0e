"""Outputs left by earlier work: found, removed before the command runs, and recorded.

One attempt's side of the ledger (:mod:`taskkit.runner.leftovers_ledger`): :class:`Leftovers`
reads it and walks the working directory, removes what :func:`~taskkit.runner.leftovers_plan.plan`
says earlier work of the task left there, enters the attempt as open before its command runs,
and records what the command wrote once it ended. :func:`commands_gone` leaves the tombstones
of killed attempts whose commands are verifiably over; :func:`preview` is the dry run, the
same survey with nothing removed or written.

Invariants: the ledger is read, and the directory walked and changed, only under the ledger's
lock; a file is removed only if it is still, at that moment, the one planned (same identity,
its directory inside the working directory once links are resolved: a link is removed, not its
target). A missing or damaged ledger removes nothing. While an attempt of other work runs in
the directory, or after one ran beside this one leaving its files, :meth:`Leftovers.mixed` says
so, and the attempt does not publish them as its work's. :meth:`Leftovers.end` never raises: an
entry left open is closed by the next attempt.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from taskkit.content.walk import inside
from taskkit.exceptions import TaskFailure, from_os_error
from taskkit.runner.journal import host_identity
from taskkit.runner.leftovers_ledger import (
    Identity,
    Ledger,
    Opened,
    alive,
    ended_at,
    ledger_lock,
    ledger_path,
    owner,
    read_ledger,
    tombstone_path,
    write_ledger,
)
from taskkit.runner.leftovers_plan import (
    Removal,
    Tidy,
    made,
    merge,
    n_files,
    named,
    plan,
    staged_paths,
)
from taskkit.runner.lifetime import process_start, touch
from taskkit.transfer.patterns import Match, Output, expand

if TYPE_CHECKING:
    from taskkit.runner.fingerprint import Work
    from taskkit.runner.spec import RunSpec
    from taskkit.transfer.stage_plan import Plan

__all__ = ["Leftovers", "commands_gone", "preview"]


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
        ledger, error = read_ledger(path), None
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
        ended=lambda entry: ended_at(tombstone_path(path, entry.attempt)),
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
            f"no ledger of earlier outputs in this working directory: {n_files(unknown)} "
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
        with ledger_lock(self.path):
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
            write_ledger(self.path, Ledger(tidy.products, (*tidy.running, self._entry)))
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
            with ledger_lock(self.path):
                try:
                    ledger = read_ledger(self.path) or Ledger({}, ())
                except ValueError:
                    ledger = Ledger({}, ())
                walked = _walk(self.root, entry.patterns, ())
                products = dict(ledger.products)
                merge(products, made(entry, walked.files, walked.matched))
                opened = tuple(o for o in ledger.opened if _process(o) != _process(entry))
                write_ledger(self.path, Ledger(products, opened))
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
            ledger = read_ledger(self.path)
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
        return f"{named(left)}: {noun} of other work ({theirs[left[0]].work}) made beside this one"


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
    with contextlib.suppress(TaskFailure, ValueError), ledger_lock(path):
        ledger = read_ledger(path)
        for entry in () if ledger is None else ledger.opened:
            if entry.attempt in numbers and entry.host == host:
                touch(os.fspath(tombstone_path(path, entry.attempt)), keep=True)


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
