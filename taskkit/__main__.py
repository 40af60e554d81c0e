"""``python -m taskkit`` is the ``taskkit`` command."""

from taskkit.cli import main

main()
