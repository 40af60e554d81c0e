"""What the last attempt of a failing task leaves behind for whoever has to find out why.

Written as lines of ``taskkit.txt`` in the attempt's durable logs, so they reach the store
with the logs, even from a node that is about to be taken away. Invariants: no value of an
environment variable is written except taskkit's and Batch's own (names only for the rest),
and every line passes through :func:`~taskkit.redaction.redact`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from taskkit.observer import Observer, observer_or_default
from taskkit.redaction import SECRET_ENV_VARS, redact
from taskkit.runner.logs import LogSink
from taskkit.runner.policy import Decision

__all__ = ["diagnostics", "write_diagnostics"]

#: A fact this system cannot give (no /proc, no load average) is left out, not an error.
_quiet = contextlib.suppress(OSError, KeyError, ValueError, AttributeError)

#: Files of the working directory listed at most; a task may make millions.
LISTED_FILES = 200
_SHOWN_PREFIXES = ("TASKKIT_", "AZ_BATCH_")


def diagnostics(workdir: str, env: Mapping[str, str], decision: Decision) -> Iterator[str]:
    """The diagnostic lines, one fact each."""
    from taskkit._version import __version__

    yield f"diagnostics: the last attempt failed: {decision.reason} (exit {decision.exit_code})"
    yield (
        f"diagnostics: taskkit {__version__}, Python {platform.python_version()}, "
        f"{platform.platform()}"
    )
    with _quiet:
        load = os.getloadavg()
        yield f"diagnostics: load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    with _quiet:
        usage = shutil.disk_usage(workdir)
        yield (
            f"diagnostics: disk of {workdir}: {usage.free >> 20} MiB free "
            f"of {usage.total >> 20} MiB"
        )
    with _quiet:
        lines = Path("/proc/meminfo").read_text().splitlines()
        meminfo = dict(line.split(":", 1) for line in lines if ":" in line)
        yield (
            f"diagnostics: memory: {meminfo['MemAvailable'].strip()} available "
            f"of {meminfo['MemTotal'].strip()}"
        )
    for name in sorted(env):
        if name.startswith(_SHOWN_PREFIXES):
            value = "(hidden)" if _secret_name(name) else env[name]
            yield f"diagnostics: env {name}={value}"
    others = sorted(n for n in env if not n.startswith(_SHOWN_PREFIXES))
    yield f"diagnostics: other environment variables (names only): {' '.join(others)}"
    yield from _listing(workdir)


def _secret_name(name: str) -> bool:
    """A variable whose name says it holds a credential (Batch's authentication token)."""
    return name in SECRET_ENV_VARS or any(
        word in name for word in ("TOKEN", "SECRET", "KEY", "PASSWORD", "SAS", "CONNECTION")
    )


def _listing(workdir: str) -> Iterator[str]:
    count = 0
    for root, dirs, files in os.walk(workdir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            count += 1
            if count > LISTED_FILES:
                continue
            try:
                size = os.lstat(path).st_size
            except OSError as exc:
                yield f"diagnostics: file {os.path.relpath(path, workdir)!r}: {exc.strerror}"
                continue
            yield f"diagnostics: file {os.path.relpath(path, workdir)!r} {size} bytes"
    more = f" ({count - LISTED_FILES} not listed)" if count > LISTED_FILES else ""
    yield f"diagnostics: {count} files in the working directory {workdir}{more}"


def write_diagnostics(
    sink: LogSink,
    workdir: str,
    env: Mapping[str, str],
    decision: Decision,
    observer: Observer | None = None,
) -> None:
    """Add the diagnostic lines to the attempt's ``taskkit.txt`` (uploaded with the logs); a
    failure meanwhile is a warning to ``observer`` (default: the ``"taskkit"`` logger)."""
    try:
        for line in diagnostics(workdir, env, decision):
            sink.note(redact(line))
    except Exception as exc:  # diagnostics must never be the reason a task fails differently
        observer_or_default(observer).warning(f"diagnostics incomplete: {exc}")
