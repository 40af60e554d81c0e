"""``taskkit hash``: checksum lines as xxhsum and sha256sum write them, from the stat-cache."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING

import click

from taskkit.cli._app import CONTEXT, cli, jobs_option
from taskkit.cli.report import say as _say
from taskkit.content.digest import ALGORITHM
from taskkit.content.walk import FS_ENCODING, FS_ERRORS
from taskkit.exceptions import EX_OK, IOFailure
from taskkit.transfer.summary import format_size

if TYPE_CHECKING:
    from taskkit.content.hashing import HashResult
    from taskkit.content.statcache import StatCache


_PREFIX = ALGORITHM + ":"
#: Lines written to standard output at once.
_BATCH = 512


def _line(path: str, digest: bytes) -> str:
    """``DIGEST  PATH``, the path escaped the way coreutils and xxhsum do it (and the line then
    marked with a leading backslash). A str, encoded with the file system encoding when lines
    are written (:func:`_flush`): formatting str is several times faster than bytes, and the
    escaped characters are ASCII, which that encoding never uses inside another character."""
    if "\\" in path or "\n" in path or "\r" in path:
        path = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{_PREFIX}{digest.hex()}  {path}\n"
    return f"{_PREFIX}{digest.hex()}  {path}\n"


def _flush(write: Callable[[bytes], object], lines: list[str]) -> None:
    """Write ``lines`` and empty the list: each path as ``os.fsencode`` gives it (undecodable
    bytes included)."""
    if lines:
        write("".join(lines).encode(FS_ENCODING, FS_ERRORS))
        lines.clear()


@cli.command("hash", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@jobs_option("Threads for hashing large files [default: the CPUs this process may use].")
@click.option(
    "--no-cache", is_flag=True, help="Read every file; neither consult nor update the stat-cache."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per file: path, digest, size, cached (or error / skipped).",
)
@click.option(
    "--summary",
    is_flag=True,
    help="End with one line on stderr: files, bytes, seconds, cache hits.",
)
def hash_command(
    paths: tuple[str, ...], jobs: int | None, no_cache: bool, as_json: bool, summary: bool
) -> int:
    """Print the taskkit digest of each file; directories are walked in sorted order.

    Each line is ``DIGEST  PATH`` as xxhsum and sha256sum write it (a line starting with a
    backslash has its path's backslashes and newlines escaped). A digest is
    ``xxh3-128:<hex>``: for files up to 8 MiB the same value as ``xxhsum -H2``, for larger
    files the hash of their 8 MiB chunk hashes, computed on every core.

    Files unchanged since they were last hashed come from the stat-cache without being read
    (its folder: $TASKKIT_CACHE_DIR, else $AZ_BATCH_NODE_SHARED_DIR/taskkit, else the user
    cache). FIFOs, sockets and devices are skipped with a warning. A path that cannot be
    read gets one line on stderr, the other paths are still hashed, and the exit code is
    that of the first failure (66: not found, 77: permission denied, 74: I/O error).
    ``-`` hashes standard input.

    \b
    Examples:
      taskkit hash data/ model.bin
      taskkit hash --no-cache -j 4 /mnt/batch/tasks/shared/inputs
      taskkit hash --json data/ | jq -r 'select(.cached == false) | .path'
      tar c data | taskkit hash -
    """
    from taskkit.content.hashing import FileDigest
    from taskkit.content.statcache import StatCache
    from taskkit.content.walk import Failed, Skipped

    out = _stream(sys.stdout, "output")
    write = out.write
    started = time.perf_counter()
    exit_code = EX_OK
    counts = {"files": 0, "bytes": 0, "cached": 0, "failed": 0, "skipped": 0}
    files = size = cached = 0  # the counts of the common case, kept in locals: 20,000 a second
    cache = None if no_cache else StatCache.open()
    lines: list[str] = []  # written _BATCH at a time
    try:
        for result in _results(paths, jobs, cache):
            if type(result) is FileDigest:
                files += 1
                size += result.size
                cached += result.cached
                if not as_json:
                    lines.append(_line(result.path, result.digest.value))
                    if len(lines) >= _BATCH:
                        _flush(write, lines)
                else:
                    _json_line(
                        out,
                        {
                            "path": result.path,
                            "digest": str(result.digest),
                            "size": result.size,
                            "cached": result.cached,
                        },
                    )
            elif isinstance(result, Skipped):
                counts["skipped"] += 1
                _say("warning", f"skipped {result.path!r}: {result.reason}")
                if as_json:
                    _json_line(out, {"path": result.path, "skipped": result.reason})
            elif isinstance(result, Failed):
                counts["failed"] += 1
                _say("error", str(result.error))
                if as_json:
                    _json_line(
                        out,
                        {
                            "path": result.path,
                            "error": str(result.error),
                            "exit_code": result.error.exit_code,
                        },
                    )
                if exit_code == EX_OK:
                    exit_code = result.error.exit_code
    finally:
        try:
            _flush(write, lines)  # what was hashed before an interruption is printed too
        finally:
            if cache is not None:
                cache.close()
    counts["files"] += files
    counts["bytes"] += size
    counts["cached"] += cached
    out.flush()
    if summary:
        seconds = time.perf_counter() - started
        click.echo(
            f"taskkit: hashed {counts['files']} files, {format_size(counts['bytes'])} in "
            f"{seconds:.2f} s ({counts['cached']} from the stat-cache, "
            f"{counts['skipped']} skipped, {counts['failed']} failed)",
            err=True,
        )
    return exit_code


def _results(
    paths: tuple[str, ...],
    jobs: int | None,
    cache: StatCache | None,
) -> Iterator[HashResult]:
    """:func:`~taskkit.content.hashing.hash_paths` over ``paths``, with ``-`` standing for stdin."""
    from taskkit.content.digest import StreamHasher
    from taskkit.content.hashing import FileDigest, hash_paths

    start = 0
    for i, path in enumerate(paths):
        if path != "-":
            continue
        yield from hash_paths(paths[start:i], jobs=jobs, cache=cache, reader=True)
        hasher = StreamHasher()
        stream = _stream(sys.stdin, "input")
        while block := stream.read(1 << 20):
            hasher.update(block)
        yield FileDigest("-", hasher.digest(), hasher.size, False, hasher.all_chunks())
        start = i + 1
    yield from hash_paths(paths[start:], jobs=jobs, cache=cache, reader=True)


def _stream(stream: IO[str] | None, name: str) -> IO[bytes]:
    """The binary side of a standard stream; a closed one is an I/O failure, not a bug."""
    if stream is None or stream.closed:
        raise IOFailure(f"standard {name} is closed")
    return stream.buffer  # type: ignore[attr-defined,no-any-return]


def _json_line(out: IO[bytes], obj: dict[str, object]) -> None:
    import json  # only --json pays for it

    out.write(json.dumps(obj).encode() + b"\n")
