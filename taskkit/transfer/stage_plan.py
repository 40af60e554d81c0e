"""Input staging, planned: which remote files go where, and what each one needs.

``taskkit stage`` first lists every input once, maps remote names to local paths, and decides per
file (:func:`plan`); the :class:`Plan` is what ``--dry-run`` prints. :mod:`taskkit.transfer.stage`
then
carries it out. A file is

* **skipped** when the local file already holds the remote content: its stat-cache entry says it
  was staged from this very source version and it has not changed since, or its digest (from the
  stat-cache, or hashed now) equals the digest taskkit stored in the blob's metadata, or the
  digest recorded for this source version;
* **linked** from the node cache when the cache holds this source version;
* **resumed** when a partial download of this version is there;
* **downloaded** otherwise.

A source is one blob, a prefix ending in ``/`` (every blob below it), or a glob
(``az://c/reads/*.fq``: the blobs below its fixed leading prefix, listed once, whose names match
the rest, with the wildcards of output patterns, :mod:`taskkit.transfer.patterns`). A prefix's or
glob's
files keep their names relative to it under the destination.

Staging a prefix or glob also **removes** what taskkit itself staged there from a blob of that
prefix that no longer exists, so that what the command sees is a function of the current inputs:
a file whose stat-cache entry says it was staged from that blob (same source, same place) and
which has not changed since (its identity, else its inode and its digest). A file taskkit did not
stage, one changed since, and anything outside the destination are never removed.

The whole request is refused (nothing written) when two inputs would write one path. A working
directory that does not exist yet is planned as created (``create_workdir``).

Remote names are never trusted as paths: a name with a ``..`` or empty segment, a leading ``/``,
a backslash, a control character, or a component too long for the local filesystem is refused,
alone, and the other files are still staged. No path outside the destination is ever touched.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import xxhash

from taskkit.content.digest import Digest
from taskkit.content.hashing import digests
from taskkit.content.statcache import (
    CacheEntry,
    FileStat,
    PathKeys,
    Provenance,
    StatCache,
    keyed_paths,
    path_key,
)
from taskkit.content.walk import inside
from taskkit.exceptions import DataError, InputNotFound, IOFailure, LinkOut, TaskFailure, UsageError
from taskkit.redaction import SIGNED_QUERY, shown_url, signed
from taskkit.storage.base import RemoteFile, Store
from taskkit.storage.stores import Stores
from taskkit.storage.urls import AZURE_PROTOCOLS, bad_url, query_holds, query_pads, source_name
from taskkit.transfer.nodecache import NodeCache
from taskkit.transfer.patterns import CONTROL, OWN_PREFIX, glob_regex, has_wildcard, own_segment
from taskkit.transfer.summary import Problem, format_size

__all__ = [
    "SAME_CACHED",
    "Input",
    "Plan",
    "PlanEntry",
    "StageAction",
    "default_workdir",
    "list_input",
    "name_problem",
    "parse_input",
    "partial_name",
    "partial_path",
    "plan",
    "split_glob",
]

_NAME_MAX = 255
_PATH_MAX = 4096
_TOO_LONG = f"the path is longer than {_PATH_MAX - 256} bytes, too long for a local path"


class Input(NamedTuple):
    """One ``SRC=DEST``: a remote file, a prefix ending in ``/``, or a glob, and where it goes.
    ``literal``: the source names one file, whatever characters its name holds (``*``, ``?``
    and ``[`` are not wildcards): what taskkit restores from a manifest's names."""

    source: str
    dest: str
    literal: bool = False

    @property
    def is_prefix(self) -> bool:
        return self.source.endswith("/")

    @property
    def glob(self) -> tuple[str, str] | None:
        """The fixed prefix URL and the pattern below it of a glob source (:func:`split_glob`)."""
        return None if self.literal else split_glob(self.source)


def split_glob(source: str) -> tuple[str, str] | None:
    """A glob source as its fixed leading prefix (a URL ending in ``/``, listed once) and the
    pattern below it; None for a source without wildcards. A pattern ending in ``/`` means
    every file below what it matches. In ``http(s)://`` URLs a ``?`` starts the query (a SAS
    token), so they are never globs."""
    if source.lower().startswith(("http://", "https://")):
        return None
    scheme, sep, rest = source.partition("://")
    head = scheme + sep if sep else ""
    parts = rest.split("/") if sep else source.split("/")
    first = next((i for i, part in enumerate(parts) if has_wildcard(part)), None)
    if first is None:
        return None
    if first == 0:
        raise UsageError(
            f"input {source!r}: a wildcard in its first segment (name the directory or "
            "container it lists before any wildcard)"
        )
    pattern = [p for p in parts[first:] if p not in ("", ".")]
    if source.endswith("/"):
        pattern.append("**")
    return head + "/".join(parts[:first]) + "/", "/".join(pattern)


def parse_input(text: str) -> Input:
    """Read ``SRC=DEST`` or ``SRC`` alone, which stages to the source's own name in the working
    directory. The split is at the last ``=``, so a source whose name holds one
    (``year=2024/``) needs a DEST, or a trailing ``=`` for the default one."""
    source, sep, dest = text.rpartition("=")
    if not sep or query_holds(source) or (not dest and query_pads(source)):
        source, dest = text, ""  # that '=' is the URL's own (``?sv=1&sig=...``, ``sig=..=``)
    if not source.rstrip("/"):
        raise UsageError(f"input {text!r} names no source (expected SRC=DEST)")
    if "://" in dest:
        raise UsageError(f"input {text!r}: DEST {dest!r} must be a local path")
    if CONTROL.search(dest):  # a name no one could type again, and no output could publish
        raise UsageError(f"destination {dest!r}: it holds a control character")
    if "\\" in dest:  # the same: taskkit upload refuses such a name ("could not be staged back")
        raise UsageError(f"destination {dest!r}: it holds a backslash")
    problem = _path_problem(Path(dest)) if dest else None
    if problem:  # known before any path is: refused with the rest of the command line
        raise UsageError(f"destination {dest!r}: {problem}")
    if not source.lower().startswith(("http://", "https://")) and (signed(source) or signed(text)):
        raise UsageError(f"input {shown_url(source)!r} {SIGNED_QUERY}")
    problem = bad_url(source)
    if problem is not None:
        raise UsageError(f"input {problem}")
    glob = split_glob(source)
    if glob is not None:
        if ".." in glob[1].split("/"):
            raise UsageError(f"input {text!r}: a glob must not hold a '..' segment")
        try:
            glob_regex(glob[1])
        except re.error as exc:
            raise UsageError(f"input {text!r}: not a valid glob ({exc})") from None
        if not dest:  # a glob's files keep their names below its fixed prefix, as a prefix's
            dest = glob[0].rstrip("/").rsplit("/", 1)[-1] + "/"
    if glob is None and not source.endswith("/") and _container_only(source):
        container = shown_url(source).rstrip("/")
        raise UsageError(
            f"input {container!r} names a container, not a blob: {container}/ stages every "
            f"blob in it, {container}/PATH one blob"
        )
    if not dest:
        name = source_name(source)
        if not name:
            raise UsageError(f"input {shown_url(source)!r} ends in no name: give a DEST (SRC=DEST)")
        dest = name + ("/" if source.endswith("/") else "")
    if own_segment(dest):
        raise UsageError(
            f"input {shown_url(source)!r}: DEST {dest!r} has a name starting with "
            f"{OWN_PREFIX!r}, which taskkit keeps for its own files; give another DEST"
        )
    return Input(source, dest)


def _container_only(source: str) -> bool:
    """Whether the Azure URL ``source`` names a container and no path in it."""
    scheme, sep, rest = source.partition("://")
    return bool(sep) and scheme.lower() in AZURE_PROTOCOLS and not rest.partition("/")[2]


#: What staging does for one file: fetch it whole, finish a partial download, hard-link it from
#: the node cache, leave it (already there), or remove it (staged from a blob now gone).
StageAction = Literal["download", "resume", "link", "skip", "remove"]


class PlanEntry(NamedTuple):
    """What staging will do for one file (``action``: download, resume, link, skip, or remove
    a file staged from a blob that no longer exists), and why. A removal's ``source`` is the
    blob it was staged from, its ``local`` the file as planned (removed only if still so).

    A plan of a million files is held at once, so an entry holds strings, not objects made
    from them: :attr:`path` and :attr:`identity` are made when asked for."""

    action: StageAction
    reason: str
    source: RemoteFile
    dest: str  # as shown: relative to the working directory
    where: str  # the absolute path, as a string
    expected: Digest | None  # the digest the content must have, when known
    store: Store
    local: FileStat | None = None

    @property
    def path(self) -> Path:
        """The absolute path."""
        return Path(self.where)

    @property
    def identity(self) -> str:
        """Where the bytes come from (provenance, node-cache key)."""
        return self.store.identity(self.source.key)

    def __repr__(self) -> str:
        return f"PlanEntry({self.action!r}, {self.source.url!r} -> {self.dest!r}, {self.reason!r})"


class Plan(NamedTuple):
    """Every file of a staging run with its action, what could not be planned, the files
    to remove (stale: staged from blobs that no longer exist), and whether the working
    directory must be created first."""

    entries: tuple[PlanEntry, ...]
    problems: tuple[Problem, ...]
    workdir: Path
    removals: tuple[PlanEntry, ...] = ()
    create_workdir: bool = False

    def count(self, action: StageAction) -> int:
        return sum(1 for e in self.entries if e.action == action)

    @property
    def bytes_to_move(self) -> int:
        return sum(e.source.size for e in self.entries if e.action in ("download", "resume"))

    def lines(self) -> Iterator[str]:
        """The plan as ``--dry-run`` prints it, one line per thing it would do (URLs as
        given: whoever shows them redacts)."""
        if self.create_workdir:
            yield f"would create the working directory {self.workdir}"
        for entry in self.removals:
            yield f"{entry.action:<8} {entry.dest}  ({entry.reason})"
        for entry in self.entries:
            yield (
                f"{entry.action:<8} {entry.source.url} -> {entry.dest}  "
                f"({format_size(entry.source.size)}; {entry.reason})"
            )


def default_workdir(environ: Mapping[str, str] | None = None) -> str:
    """``$AZ_BATCH_TASK_WORKING_DIR`` on a Batch node (in ``environ``, default: this
    process's), else the current directory."""
    env = os.environ if environ is None else environ
    return env.get("AZ_BATCH_TASK_WORKING_DIR") or os.getcwd()


def partial_path(path: Path) -> Path:
    """Where a download into ``path`` (without the node cache) keeps its partial file."""
    return Path(partial_name(os.fspath(path)))


def partial_name(where: str) -> str:
    """:func:`partial_path` of a string path, as a string."""
    head, _, name = where.rpartition("/")
    return f"{head}/{OWN_PREFIX}{xxhash.xxh3_64_hexdigest(os.fsencode(name))}.partial"


def resolve_dest(workdir: Path, dest: str) -> Path:
    """The absolute path of ``dest``, refused if it leaves ``workdir`` (also through links) or
    if the filesystem could not hold it (a name over 255 bytes, a path near PATH_MAX): a DEST
    the user typed is a bad value, said as typed, not an error on taskkit's partial file."""
    target = Path(os.path.normpath(workdir / dest))
    problem = _path_problem(target)
    if problem:
        raise UsageError(f"destination {dest!r}: {problem}")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    real = Path(os.path.realpath(existing)) / target.relative_to(existing)
    if not inside(workdir, target):
        raise UsageError(f"destination {dest!r} is outside the working directory {str(workdir)!r}")
    if not inside(workdir, real):  # through a link that is there on this node
        raise LinkOut(
            f"destination {dest!r} is outside the working directory {str(workdir)!r} through a link"
        )
    return target


def _path_problem(path: Path) -> str | None:
    """Why no filesystem here could hold ``path`` (and taskkit's partial file beside it)."""
    if any(len(os.fsencode(part)) > _NAME_MAX for part in path.parts):
        return f"a segment is longer than {_NAME_MAX} bytes, too long for a local file name"
    if len(os.fsencode(path)) > _PATH_MAX - 256:
        return _TOO_LONG
    return None


#: A name that needs no closer look: segments of common characters, none starting with a dot
#: (so none is ``.``, ``..`` or one of taskkit's own), short enough for any filesystem.
_PLAIN_NAME = re.compile(r"[\w+=,@~-][\w+=,@~.-]*(?:/[\w+=,@~-][\w+=,@~.-]*)*", re.ASCII)


def name_problem(name: str) -> str | None:
    """Why a remote name cannot safely be a path below a destination, or None."""
    if len(name) <= _NAME_MAX and _PLAIN_NAME.fullmatch(name):
        return None
    if name.startswith("/"):
        return "it starts with '/'"
    if "\\" in name:
        return "it holds a backslash"
    if CONTROL.search(name):
        return "it holds a control character"
    parts = name.split("/")
    if "" in parts or "." in parts or ".." in parts:
        return "it has an empty, '.' or '..' segment"
    if OWN_PREFIX in name and own_segment(name):
        # taskkit's partial files, journals and ledgers are named so: a blob of that name
        # would be written over, or be taken for, one of them.
        return f"a segment starts with {OWN_PREFIX!r}, which taskkit keeps for its own files"
    if len(name) * 4 <= _NAME_MAX:  # at most 4 bytes a character: no length can be a problem
        return None
    if any(len(os.fsencode(part)) > _NAME_MAX for part in parts):
        return f"a segment is longer than {_NAME_MAX} bytes, too long for a local file name"
    if len(os.fsencode(name)) > _PATH_MAX - 256:
        return "it is too long for a local path"
    return None


def check_name(name: str, url: str) -> None:
    """Refuse a remote name that cannot safely be a path below the destination."""
    problem = name_problem(name)
    if problem:
        raise _refused(url, problem)


def _refused(url: str, problem: str) -> DataError:
    """The failure of a file whose remote name cannot be a local path (``problem``)."""
    return DataError(f"cannot stage {url!r}: {problem}; it is left alone")


class _Scope(NamedTuple):
    """Where a prefix or glob input puts its files: what taskkit staged below ``base`` from a
    blob of this prefix (matching ``matches``) that is not in ``listed`` any more is stale."""

    store: Store
    prefix: str  # the store key of the listed prefix, ending in '/'
    base: Path
    matches: re.Pattern[str] | None
    listed: frozenset[str]  # the store keys of the blobs listed


#: A remote file, its store, where it goes as shown (relative to the working directory) and as
#: an absolute path.
_Found = tuple[RemoteFile, Store, str, str]


def list_input(item: Input, stores: Stores) -> tuple[Store, str, list[tuple[str, RemoteFile]]]:
    """What one input names, as one listing (or, for a single file, one stat) sees it: the
    store, the listed prefix (ending in ``/``; '' for a single file), and each file with its
    name below the prefix ('' for a single file); a glob's non-matching names left out."""
    store, prefix, files = _listed(item, stores)
    return store, prefix, [(_name(file, prefix), file) for file in files]


def _name(file: RemoteFile, prefix: str) -> str:
    """The name of a listed file below its prefix ('' for the file a single input names)."""
    if not prefix:
        return ""
    return file.key[len(prefix) :] if file.key.startswith(prefix) else file.key


def _listed(item: Input, stores: Stores) -> tuple[Store, str, list[RemoteFile]]:
    """:func:`list_input` without a name held per file (they are cut from the keys when
    needed: at a million files, the names alone would hold a hundred megabytes)."""
    glob = item.glob
    if glob is None and not item.is_prefix:
        store, key = stores.open(item.source)
        return store, "", [_stat(store, key)]
    store, key = stores.open(item.source if glob is None else glob[0])
    matches = None if glob is None else glob_regex(glob[1])
    prefix = key.rstrip("/") + "/"
    files = store.list(key if key.endswith("/") else prefix)
    if matches is not None:
        files = [file for file in files if matches.fullmatch(_name(file, prefix))]
    return store, prefix, files


def _expand(
    item: Input, stores: Stores, workdir: Path, allow_empty: bool
) -> tuple[list[_Found], list[Problem], _Scope | None]:
    """The remote files of one input with their local destinations, and for a prefix or glob
    the scope in which stale files are looked for. Paths are joined as strings: each name has
    been checked to have no empty, ``.`` or ``..`` segment, so the join is already normal."""
    base = resolve_dest(workdir, item.dest)
    store, prefix, listed = _listed(item, stores)
    if not prefix:
        (file,) = listed
        if item.dest.endswith("/") or base.is_dir():
            name = source_name(file.key)
            check_name(name, file.url)  # an http(s) URL may end in '..'
            base = base / name
        return [(file, store, os.path.relpath(base, workdir), str(base))], [], None
    head = str(base).rstrip("/") + "/"
    shown = os.path.relpath(base, workdir)
    shown_head = "" if shown == "." else shown + "/"
    room = _PATH_MAX - 256 - len(os.fsencode(head))  # bytes of name a path here may hold
    found: list[_Found] = []
    problems: list[Problem] = []
    cut = len(prefix)
    for file in listed:
        key = file.key
        name = key[cut:] if key.startswith(prefix) else key
        if name.endswith("/") and file.size == 0:
            continue  # a directory marker blob
        problem = name_problem(name)
        if problem is not None:
            problems.append(Problem(file.url, _refused(file.url, problem)))
            continue
        if len(name) * 4 > room and len(os.fsencode(name)) > room:  # below a long DEST
            problems.append(Problem(file.url, DataError(f"cannot stage {file.url!r}: {_TOO_LONG}")))
            continue
        found.append((file, store, shown_head + name, head + name))
    if not store.lists_a_tree:
        found, clashing = _split_dir_clashes(found, len(head))
        problems += clashing
    if not found and not problems and not allow_empty:
        verb = "lists" if item.glob is None else "matches"
        raise InputNotFound(
            f"{shown_url(item.source)!r} {verb} nothing (use --allow-empty if that is expected)"
        )
    matches = None if item.glob is None else glob_regex(item.glob[1])
    keys = frozenset(file.key for file in listed)
    return found, problems, _Scope(store, prefix, base, matches, keys)


def _directories(names: Sequence[str], start: int = 0) -> set[str]:
    """Every directory the ``/``-separated ``names`` need, from their ``start``-th character on
    (each walked up only until a directory already found)."""
    dirs: set[str] = set()
    for name in {name[: max(name.rfind("/"), 0)] for name in names}:  # each parent once
        cut = len(name)
        while cut > start:
            parent = name[:cut]
            if parent in dirs:
                break
            dirs.add(parent)
            cut = name.rfind("/", 0, cut)
    return dirs


def _split_dir_clashes(found: list[_Found], start: int) -> tuple[list[_Found], list[Problem]]:
    """Within one input's listing, a blob whose path another blob of it needs as a directory
    (``p/x`` beside ``p/x/y``) is remote data no local tree can hold, not a fault of the
    command line: that blob is refused on its own (65) and the others are kept. Clashes
    between two inputs are the request's (:func:`_refuse_clashes`). Every path starts with
    the same ``start`` characters (the input's base)."""
    wheres = [entry[3] for entry in found]
    dirs = _directories(wheres, start)
    if dirs.isdisjoint(wheres):  # as a listing of local files always is
        return found, []
    kept: list[_Found] = []
    refused: list[Problem] = []
    for entry in found:
        file, _, dest, where = entry
        if where in dirs:
            why = f"cannot stage {file.url!r} at {dest!r}: another blob needs it to be a directory"
            refused.append(Problem(file.url, DataError(why)))
        else:
            kept.append(entry)
    return kept, refused


def _stat(store: Store, key: str) -> RemoteFile:
    """The one file at ``key``; when there is none but files below ``key/``, the error asks
    whether the prefix was meant (one more request, on this path only)."""
    try:
        return store.stat(key)
    except InputNotFound as exc:
        prefix = key.rstrip("/") + "/"
        try:
            below = store.has_files(prefix)
        except TaskFailure:
            below = False
        if not below:
            raise
        raise InputNotFound(
            f"{exc}; did you mean {store.url(prefix)}?", path=exc.filename, errno=exc.errno
        ) from exc


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
    hashed to decide are recorded in ``cache`` when ``record`` (never in a dry run). Two inputs
    that would write one path refuse the whole request (:class:`UsageError`)."""
    root = Path(os.path.realpath(workdir))
    create = not os.path.lexists(root)
    if not create and not root.is_dir():  # as `run` meets it making the directory: local I/O
        raise IOFailure(
            f"working directory {str(workdir)!r} is not a directory",
            path=os.fspath(workdir),
            errno=errno.ENOTDIR,
        )
    files: list[_Found] = []
    problems: list[Problem] = []
    scopes: list[_Scope] = []
    expanded = 0
    for item in dict.fromkeys(inputs):  # one input given twice is one input
        try:
            found, bad, scope = _expand(item, stores, root, allow_empty)
        except TaskFailure as exc:
            problems.append(Problem(item.source, exc))
            continue
        files += found
        problems += bad
        scopes += [scope] if scope is not None else []
        expanded += 1
    if expanded > 1:  # one input's files never clash: its names are unique and checked
        _refuse_clashes(files)
    entries = _decide(files, cache, node_cache, record, jobs)
    del files
    removals = (
        _stale(scopes, {e.where for e in entries}, root, cache, jobs) if cache is not None else []
    )
    return Plan(tuple(entries), tuple(problems), root, tuple(removals), create)


def _refuse_clashes(files: list[_Found]) -> None:
    """Refuse the request when a second file goes to one path, or a file goes where another
    needs a directory: before anything is written, naming the first clash."""
    taken: dict[str, tuple[str, str]] = {}  # path: (url, dest)
    dirs: set[str] = set()
    clashes = []
    for file, _, dest, where in files:
        if where in taken:
            clashes.append(f"{taken[where][0]!r} and {file.url!r} would both be staged at {dest!r}")
            continue
        if where in dirs:
            clashes.append(
                f"{file.url!r} would be staged at {dest!r}, where other files need a directory"
            )
            continue
        parents = []
        cut = where.rfind("/")
        while cut > 0 and where[:cut] not in dirs:
            parents.append(where[:cut])
            cut = where.rfind("/", 0, cut)
        below = next((p for p in parents if p in taken), None)
        if below is not None:
            other, at = taken[below]
            clashes.append(f"{file.url!r} needs a directory at {at!r}, where {other!r} goes")
            continue
        taken[where] = (file.url, dest)
        dirs.update(parents)
    if clashes:
        more = f" (and {len(clashes) - 1} more clashes)" if len(clashes) > 1 else ""
        raise UsageError(f"cannot stage: {clashes[0]}{more}; nothing was staged")


def _stale(
    scopes: list[_Scope],
    planned: set[str],
    root: Path,
    cache: StatCache,
    jobs: int | None,
) -> list[PlanEntry]:
    """Files taskkit staged in a scope from a blob that is not listed any more, unchanged
    since: one stat-cache range query per scope. A file whose identity is the recorded one
    is unchanged; one whose ctime alone moved (a link to its node-cache object made elsewhere)
    or whose entry is racy is unchanged if its digest is still the staged one; any other is
    kept."""
    candidates: dict[Path, tuple[_Scope, str, CacheEntry, os.stat_result]] = {}
    for scope in scopes:
        start = path_key(scope.base / "x")[:-1]
        # Only the keys first: the files planned now (nearly all of them, as a rule) are
        # passed over without their entries being read.
        keys = cache.keys_under(scope.base)
        others = [
            key for key, path in zip(keys, keyed_paths(keys), strict=True) if path not in planned
        ]
        for key, entry in sorted(cache.lookup(others).items()):
            name = os.fsdecode(key[len(start) :])
            path = Path(os.fsdecode(key))
            if path in candidates or name_problem(name) is not None:
                continue
            if scope.matches is not None and not scope.matches.fullmatch(name):
                continue
            blob = scope.prefix + name
            if entry.source != scope.store.identity(blob) or blob in scope.listed:
                continue  # not staged from this prefix, or its blob is still there
            if not inside(root, Path(os.path.realpath(path.parent))):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                candidates[path] = (scope, name, entry, st)
    unsure = [
        path
        for path, (_, _, entry, st) in candidates.items()
        if not StatCache.fresh(entry, st)
        and entry.stat[:4] == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    ]
    hashed = digests(unsure, jobs=jobs) if unsure else {}
    removals = []
    for path, (scope, name, entry, st) in candidates.items():
        if not StatCache.fresh(entry, st) and hashed.get(path) != entry.digest:
            continue  # changed since it was staged (or not known to be unchanged): kept
        blob = scope.prefix + name
        url = scope.store.url(blob)
        source = RemoteFile(url, blob, st.st_size, entry.etag or "", entry.digest)
        removals.append(
            PlanEntry(
                "remove",
                f"staged from {url}, which no longer exists",
                source,
                os.path.relpath(path, root),
                str(path),
                entry.digest,
                scope.store,
                FileStat.from_stat(st),
            )
        )
    return removals


#: Files decided together: one stat-cache query reads their entries, and no more than this many
#: entries are held decoded at once.
_BLOCK = 4096
_DIFFERS = "the local file differs"
_UNKNOWN = "the local file is not known"
#: Why a file is downloaded that is not at its destination (yet).
ABSENT = "not present"
_LINK = {why: f"in the node cache ({why})" for why in (_DIFFERS, _UNKNOWN, ABSENT)}
_RESUME = {why: f"a partial download is there ({why})" for why in (_DIFFERS, _UNKNOWN, ABSENT)}
_UNCHANGED = "unchanged since it was staged from this version"
#: Why a file is skipped whose stat-cache entry has its digest but not its provenance (yet).
SAME_CACHED = "same digest as the source (stat-cache)"
_SAME_HASHED = "same digest as the source (hashed)"


def _present(block: list[_Found], keys: PathKeys) -> dict[str, tuple[os.stat_result, bytes]]:
    """The stat and stat-cache key of each file of ``block`` already at its destination."""
    present: dict[str, tuple[os.stat_result, bytes]] = {}
    for item in block:
        where = item[3]
        try:
            st = os.stat(where)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            present[where] = (st, keys(where))
    return present


def _decide(
    files: list[_Found],
    cache: StatCache | None,
    node_cache: NodeCache | None,
    record: bool,
    jobs: int | None,
) -> list[PlanEntry]:
    """Each file's action, in the order of ``files``. A file present with a fresh stat-cache
    entry of the expected digest is skipped without being read; the node cache is asked only
    about files that are not (or whose expected digest only it knows)."""
    entries: list[PlanEntry | None] = []
    undecided: list[tuple[int, RemoteFile, Store, str, str, Digest | None, Digest | None, str]] = []
    to_hash: dict[str, Digest] = {}
    sources: dict[bytes, Provenance] = {}  # of the files to hash: recorded with the same ones
    keys = PathKeys()
    for start in range(0, len(files), _BLOCK):
        block = files[start : start + _BLOCK]
        present = _present(block, keys)
        known = (
            cache.lookup(sorted([key for _, key in present.values()]))
            if cache is not None and present
            else {}
        )
        for file, store, dest, where in block:
            found = present.get(where)
            local, entry = (found[0], known.get(found[1])) if found is not None else (None, None)
            identity = store.identity(file.key)
            ours, fresh = False, False
            cached: Digest | None = None
            if entry is not None and local is not None:
                fresh = StatCache.fresh(entry, local)
                ours = entry.came_from(identity, file.version)
                cached = entry.digest
            expected = file.digest or (cached if ours else None)
            ref = None
            if expected is None and node_cache is not None:
                ref = node_cache.lookup(NodeCache.key(identity, file.version))
                expected = ref
            if local is not None and expected is not None:
                if fresh and cached == expected:
                    reason = _UNCHANGED if ours else SAME_CACHED
                    entries.append(PlanEntry("skip", reason, file, dest, where, expected, store))
                    continue
                to_hash[where] = expected
                if found is not None:
                    sources[found[1]] = Provenance(identity, file.version, expected)
            if ref is None and node_cache is not None:
                ref = node_cache.lookup(NodeCache.key(identity, file.version))
            why = ABSENT if local is None else _DIFFERS if where in to_hash else _UNKNOWN
            undecided.append((len(entries), file, store, dest, where, expected, ref, why))
            entries.append(None)
    hashed = digests(list(to_hash), cache=cache if record else None, jobs=jobs, provenance=sources)
    for index, file, store, dest, where, expected, ref, why in undecided:
        if where in to_hash and hashed.get(where) == expected:
            entries[index] = PlanEntry("skip", _SAME_HASHED, file, dest, where, expected, store)
            continue
        action: StageAction
        if ref is not None:
            action, reason = "link", _LINK[why]
        elif os.path.exists(
            node_cache.partial(NodeCache.key(store.identity(file.key), file.version))
            if node_cache is not None and node_cache.fits(file.size)
            else partial_name(where)
        ):
            action, reason = "resume", _RESUME[why]
        else:
            action, reason = "download", why
        entries[index] = PlanEntry(action, reason, file, dest, where, expected, store)
    return [entry for entry in entries if entry is not None]
