"""``taskkit run`` as a real process whose input never finishes downloading, for
tests/test_logs_phases.py: a deterministic "killed while staging".

    python tests/gated_run_child.py MARKER -- RUN-ARGUMENTS...

The process's ``memory://`` store holds ``memory://gated/input.bin``; the first read of its
bytes touches MARKER, then blocks until the process is killed. Everything else (the journal,
the logs, ``file://`` inputs) is the real thing: this is ``taskkit run RUN-ARGUMENTS``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from fsspec.implementations.memory import MemoryFileSystem

from taskkit.cli import main

GATED = "/gated/input.bin"


def gate(marker: Path) -> None:
    """Make reads of :data:`GATED` block forever, once ``marker`` says one began."""
    real = MemoryFileSystem.cat_file

    def cat_file(self: MemoryFileSystem, path: str, *args: Any, **kwargs: Any) -> Any:
        if self._strip_protocol(path) == GATED:
            marker.touch()
            threading.Event().wait()  # never set: only a signal ends this process
        return real(self, path, *args, **kwargs)

    MemoryFileSystem.cat_file = cat_file  # type: ignore[method-assign]
    MemoryFileSystem().pipe_file(GATED, b"x" * 4096)


if __name__ == "__main__":
    split = sys.argv.index("--")
    gate(Path(sys.argv[1]))
    main(["run", *sys.argv[split + 1 :]])
