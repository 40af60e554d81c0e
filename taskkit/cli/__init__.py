"""The ``taskkit`` command line: a thin layer of click over the library.

:func:`main` is the one place in taskkit that ends the process (see :mod:`taskkit.cli._app`).
Each module here adds its commands to the one :data:`cli` group when it is imported, which
the group does when a command is first named (see ``COMMAND_MODULES`` in :mod:`taskkit.cli._app`).
"""

from taskkit.cli._app import cli, main

__all__ = ["cli", "main"]
