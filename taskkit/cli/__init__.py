"""The ``taskkit`` command line: a thin layer of click over the library.

:func:`main` is the one place in taskkit that ends the process (see :mod:`taskkit.cli._app`).
Each module here adds its commands to the one :data:`cli` group when it is imported.
"""

from taskkit.cli import batch, call, hashing, local, tasks, transfer  # noqa: F401 - registers commands
from taskkit.cli._app import cli, main

__all__ = ["cli", "main"]
