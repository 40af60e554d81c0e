"""Reading a file of Batch tasks (or a template) named on the command line: ``TASKS`` of
``local run`` and ``batch submit``, ``--template`` of ``batch tasks``.

Invariant: every failure is one line that begins with the command, with the exit code of its
kind (66 missing, 77/74 unreadable, 65 not UTF-8 or too large); nothing past ``limit`` bytes is
read, so ``/dev/zero`` is no task file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from taskkit.exceptions import DataError, InputNotFound, from_os_error

__all__ = ["MAX_TASKS_BYTES", "read_task_file"]

#: The most bytes of tasks read (a few hundred thousand tasks).
MAX_TASKS_BYTES = 256 << 20


def read_task_file(
    path: str,
    command: str,
    *,
    what: str = "task file",
    limit: int = MAX_TASKS_BYTES,
    of: str = "tasks",
) -> tuple[str, str]:
    """The text of ``path`` (``-``: stdin) and its name: at most ``limit`` bytes, UTF-8 (a
    byte-order mark, as some editors write, is dropped). ``command`` begins each error,
    ``what`` names the file in it and ``of`` what a file too large holds too much of."""
    if path == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise InputNotFound(f"{command}: the {what} is - but stdin is closed")
        data, source = sys.stdin.buffer.read(limit + 1), "stdin"
    else:
        source = path
        try:
            with open(Path(path).expanduser(), "rb") as file:
                data = file.read(limit + 1)
        except FileNotFoundError:
            raise InputNotFound(f"{command}: no {what} {path!r}", path=path) from None
        except IsADirectoryError:  # no such file there: as missing (66), not a bad option
            raise InputNotFound(f"{command}: {path!r} is a directory, not a {what}") from None
        except OSError as exc:  # a file this user may not read (77), an I/O error (74)
            raise from_os_error(exc, f"{command}: cannot read") from None
    if len(data) > limit:
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit:,} bytes"
        raise DataError(f"{command}: {source}: more than {size} of {of}")
    try:
        return data.decode("utf-8").removeprefix("\ufeff"), source
    except UnicodeDecodeError:  # a malformed file (65)
        raise DataError(f"{command}: {source!r} is not UTF-8 text") from None
