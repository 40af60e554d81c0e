"""Input staging, planned: which remote files go where, and what each one needs.

``taskkit stage`` first lists every input once, maps remote names to local paths, and decides per
file (:func:`plan`); the :class:`Plan` is what ``--dry-run`` prints. :mod:`taskkit.stager` then
carries it out. A file is

* **skipped** when the local file already holds the remote content: its stat-cache entry says it
  was staged from this very source version and it has not changed since, or its digest (from the
  stat-cache, or hashed now) equals the digest taskkit stored in the blob's metadata, or the
  digest recorded for this source version;
* **linked** from the node cache when the cache holds this source version;
* **resumed** when a partial download of this version is there;
* **downloaded** otherwise.

Remote names are never trusted as paths: a name with a ``..`` or empty segment, a leading ``/``,
a backslash, a control character, or a component too long for the local filesystem is refused,
alone, and the other files are still staged. No path outside the destination is ever touched.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import xxhash

from taskkit.digest import Digest
from taskkit.exceptions import DataError, InputNotFound, TaskFailure, UsageError
from taskkit.hashing import digests
from taskkit.nodecache import NodeCache
from taskkit.statcache import StatCache, path_key
from taskkit.storage import RemoteFile, Store, Stores
from taskkit.summary import Problem
from taskkit.walk import inside

__all__ = [
    "Input",
    "Plan",
    "PlanEntry",
    "Problem",
    "default_workdir",
    "name_problem",
    "parse_input",
    "partial_path",
    "plan",
]

_NAME_MAX = 255
_PATH_MAX = 4096


class Input(NamedTuple):
    """One ``SRC=DEST``: a remote file, or a prefix ending in ``/``, and where it goes."""

    source: str
    dest: str

    @property
    def is_prefix(self) -> bool:
        return self.source.endswith("/")


def parse_input(text: str) -> Input:
    """Read ``SRC=DEST`` or ``SRC`` alone, which stages to the source's own name in the working
    directory. The split is at the last ``=``, so a source whose name holds one
    (``year=2024/``) needs a DEST, or a trailing ``=`` for the default one."""
    source, sep, dest = text.rpartition("=")
    if not sep:
        source, dest = text, ""
    if not source.rstrip("/"):
        raise UsageError(f"input {text!r} names no source (expected SRC=DEST)")
    if "://" in dest:
        raise UsageError(f"input {text!r}: DEST {dest!r} must be a local path")
    if not dest:
        dest = source.rstrip("/").rsplit("/", 1)[-1] + ("/" if source.endswith("/") else "")
    return Input(source, dest)


class PlanEntry(NamedTuple):
    """What staging will do for one file (``action``: download, resume, link or skip), and
    why."""

    action: str
    reason: str
    source: RemoteFile
    dest: str  # as shown: relative to the working directory
    path: Path  # absolute
    identity: str  # where the bytes come from (provenance, node-cache key)
    expected: Digest | None  # the digest the content must have, when known
    store: Store

    def __repr__(self) -> str:
        return f"PlanEntry({self.action!r}, {self.source.url!r} -> {self.dest!r}, {self.reason!r})"


class Plan(NamedTuple):
    """Every file of a staging run with its action, and what could not be planned."""

    entries: tuple[PlanEntry, ...]
    problems: tuple[Problem, ...]
    workdir: Path

    def count(self, action: str) -> int:
        return sum(1 for e in self.entries if e.action == action)

    @property
    def bytes_to_move(self) -> int:
        return sum(e.source.size for e in self.entries if e.action in ("download", "resume"))


def default_workdir() -> str:
    """``$AZ_BATCH_TASK_WORKING_DIR`` on a Batch node, else the current directory."""
    return os.environ.get("AZ_BATCH_TASK_WORKING_DIR") or os.getcwd()


def partial_path(path: Path) -> Path:
    """Where a download into ``path`` (without the node cache) keeps its partial file."""
    name = xxhash.xxh3_64_hexdigest(os.fsencode(path.name))
    return path.with_name(f".taskkit-{name}.partial")


def resolve_dest(workdir: Path, dest: str) -> Path:
    """The absolute path of ``dest``, refused if it leaves ``workdir`` (also through links)."""
    target = Path(os.path.normpath(workdir / dest))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    real = Path(os.path.realpath(existing)) / target.relative_to(existing)
    if not (inside(workdir, target) and inside(workdir, real)):
        raise UsageError(f"destination {dest!r} is outside the working directory {str(workdir)!r}")
    return target


def name_problem(name: str) -> str | None:
    """Why a remote name cannot safely be a path below a destination, or None."""
    if name.startswith("/"):
        return "it starts with '/'"
    if "\\" in name:
        return "it holds a backslash"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "it has an empty, '.' or '..' segment"
    if any(len(os.fsencode(part)) > _NAME_MAX for part in name.split("/")):
        return f"a segment is longer than {_NAME_MAX} bytes, too long for a local file name"
    if len(os.fsencode(name)) > _PATH_MAX - 256:
        return "it is too long for a local path"
    return None


def check_name(name: str, url: str) -> None:
    """Refuse a remote name that cannot safely be a path below the destination."""
    problem = name_problem(name)
    if problem:
        raise DataError(f"cannot stage {url!r}: {problem}; it is left alone")


def _expand(
    item: Input, stores: Stores, workdir: Path, allow_empty: bool
) -> tuple[list[tuple[RemoteFile, Store, str, Path]], list[Problem]]:
    """The remote files of one input with their local destinations."""
    base = resolve_dest(workdir, item.dest)
    store, key = stores.open(item.source)
    if not item.is_prefix:
        file = store.stat(key)
        if item.dest.endswith("/") or base.is_dir():
            base = base / key.rstrip("/").rsplit("/", 1)[-1]
        return [(file, store, os.path.relpath(base, workdir), base)], []
    prefix = key.rstrip("/") + "/"
    listed = store.list(key if key.endswith("/") else prefix)
    found: list[tuple[RemoteFile, Store, str, Path]] = []
    problems: list[Problem] = []
    for file in listed:
        name = file.key[len(prefix) :] if file.key.startswith(prefix) else file.key
        if name.endswith("/") and file.size == 0:
            continue  # a directory marker blob
        try:
            check_name(name, file.url)
        except DataError as exc:
            problems.append(Problem(file.url, exc))
            continue
        path = base / name
        found.append((file, store, os.path.relpath(path, workdir), path))
    if not found and not problems and not allow_empty:
        raise InputNotFound(
            f"{item.source!r} lists nothing (use --allow-empty if that is expected)"
        )
    return found, problems


def plan(
    inputs: Sequence[Input],
    *,
    workdir: str | os.PathLike[str],
    stores: Stores,
    cache: StatCache | None = None,
    node_cache: NodeCache | None = None,
    allow_empty: bool = False,
    record: bool = True,
    jobs: int | None = None,
) -> Plan:
    """List every input once and decide what each file needs. Reads only, except that files
    hashed to decide are recorded in ``cache`` when ``record`` (never in a dry run)."""
    root = Path(os.path.realpath(workdir))
    if not root.is_dir():
        raise UsageError(f"working directory {str(workdir)!r} is not a directory")
    files: list[tuple[RemoteFile, Store, str, Path]] = []
    problems: list[Problem] = []
    for item in inputs:
        try:
            found, bad = _expand(item, stores, root, allow_empty)
        except TaskFailure as exc:
            problems.append(Problem(item.source, exc))
            continue
        files += found
        problems += bad
    files, clashes = _without_clashes(files)
    problems += clashes
    entries = _decide(files, cache, node_cache, record, jobs)
    return Plan(tuple(entries), tuple(problems), root)


def _without_clashes(
    files: list[tuple[RemoteFile, Store, str, Path]],
) -> tuple[list[tuple[RemoteFile, Store, str, Path]], list[Problem]]:
    """Refuse a second file for one path, and a file where another needs a directory."""
    taken: dict[Path, str] = {}
    dirs: set[Path] = set()
    kept, problems = [], []
    for item in files:
        file, _, dest, path = item
        clash = taken.get(path)
        if clash is None and path in dirs:
            clash = "files below it"
        if clash is None:
            clash = next((taken[p] for p in path.parents if p in taken), None)
        if clash is not None:
            problems.append(
                Problem(
                    file.url,
                    UsageError(
                        f"cannot stage {file.url!r} to {dest!r}: {clash} is staged there too"
                    ),
                )
            )
            continue
        taken[path] = file.url
        dirs.update(path.parents)
        kept.append(item)
    return kept, problems


def _decide(
    files: list[tuple[RemoteFile, Store, str, Path]],
    cache: StatCache | None,
    node_cache: NodeCache | None,
    record: bool,
    jobs: int | None,
) -> list[PlanEntry]:
    present: dict[Path, os.stat_result] = {}
    for _, _, _, path in files:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            present[path] = st
    keys = {path: path_key(path) for path in present}
    known = cache.lookup(sorted(keys.values())) if cache is not None and keys else {}

    undecided: list[tuple[RemoteFile, Store, str, Path, str, Digest | None]] = []
    entries: dict[Path, PlanEntry] = {}
    to_hash: dict[Path, Digest] = {}
    refs: dict[Path, Digest | None] = {}
    for file, store, dest, path in files:
        identity = store.identity(file.key)
        entry = known.get(keys.get(path, b""))
        ours = entry is not None and (entry.source, entry.etag) == (identity, file.version)
        ref = None
        if node_cache is not None:
            ref = refs[path] = node_cache.lookup(NodeCache.key(identity, file.version))
        expected = file.digest or (entry.digest if entry is not None and ours else None) or ref
        local = present.get(path)
        if local is not None and expected is not None:
            if entry is not None and StatCache.fresh(entry, local) and entry.digest == expected:
                reason = (
                    "unchanged since it was staged from this version"
                    if ours
                    else "same digest as the source (stat-cache)"
                )
                entries[path] = PlanEntry(
                    "skip", reason, file, dest, path, identity, expected, store
                )
                continue
            to_hash[path] = expected
        undecided.append((file, store, dest, path, identity, expected))

    hashed = digests(list(to_hash), cache=cache if record else None, jobs=jobs)
    for file, store, dest, path, identity, expected in undecided:
        if path in to_hash and hashed.get(path) == expected:
            entries[path] = PlanEntry(
                "skip",
                "same digest as the source (hashed)",
                file,
                dest,
                path,
                identity,
                expected,
                store,
            )
            continue
        if path in present:
            why = "the local file differs" if path in to_hash else "the local file is not known"
        else:
            why = "not present"
        key = NodeCache.key(identity, file.version)
        if refs.get(path) is not None:
            action, reason = "link", f"in the node cache ({why})"
        elif (
            node_cache.partial(key)
            if node_cache is not None and node_cache.fits(file.size)
            else partial_path(path)
        ).exists():
            action, reason = "resume", f"a partial download is there ({why})"
        else:
            action, reason = "download", why
        entries[path] = PlanEntry(action, reason, file, dest, path, identity, expected, store)
    return [entries[path] for _, _, _, path in files]
