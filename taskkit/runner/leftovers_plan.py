"""The plan of what to remove before an attempt's command runs: pure, from the ledger and a walk.

What an attempt publishes is a function of its work. An attempt of new work (another command,
other inputs or input contents, other output patterns: another fingerprint) may start in a
working directory that earlier work of the task used; what those earlier attempts wrote there
and the output patterns match would be found by the command and published under the new
work's manifest. So :func:`plan` lists it for removal. A retry of the same work keeps it:
make-like commands resume from what their earlier attempts left.

Invariants: a file is planned for removal only when the ledger records it as a product of this
task's attempts of other work and it still has the identity recorded then; so a file the user
put there (and no command rewrote), a file changed or replaced since, another task's file, and
this attempt's staged inputs (:func:`staged_paths`) are never removed; nor is a file that
appeared after a killed attempt's command was seen gone. Without that moment (no tombstone:
not Linux, or an attempt that ended without closing its entry) every new file is charged to
the attempt, and a note names them. No ledger plans no removal. The files of an attempt still
running in the directory are left alone. Products are looked for where the patterns of the
attempt that made them looked: a pattern widened by later work does not reach what earlier
attempts wrote outside the patterns they had.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from taskkit.runner.leftovers_ledger import Identity, Ledger, Opened, Product

if TYPE_CHECKING:
    from taskkit.transfer.stage_plan import Plan

__all__ = [
    "Removal",
    "Tidy",
    "made",
    "merge",
    "n_files",
    "named",
    "plan",
    "staged_paths",
]

#: Paths named in one removal note; the rest are counted.
_SHOWN = 5


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
            lines.append(f"removed {len(paths)} {noun} of earlier work ({work}): {named(paths)}")
        return lines


def named(paths: Sequence[str]) -> str:
    """The first few of ``paths``, and how many more."""
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return ", ".join(paths[:_SHOWN]) + more


def n_files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


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
        charged = merge(products, made(entry, files, matched, changed, until))
        if until is None and charged:
            notes.append(
                f"attempt {entry.attempt} ({entry.work}) was interrupted and when its command "
                "ended is not known, so what its output patterns match that is new or changed "
                f"since it started is taken for its outputs ({n_files(len(charged))}): "
                f"{named(sorted(charged))}"
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


def merge(products: dict[str, Product], found: Mapping[str, Product]) -> list[str]:
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


def staged_paths(plans: Iterable[Plan]) -> frozenset[str]:
    """The paths (relative to the working directory) the staging plans put inputs at."""
    paths = set()
    for staging in plans:
        for entry in staging.entries:
            if entry.action != "remove":
                paths.add(os.path.relpath(entry.path, staging.workdir))
    return frozenset(paths)
