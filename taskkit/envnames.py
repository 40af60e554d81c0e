"""The environment variable of each setting of ``taskkit run`` (and of ``stage``/``upload``).

A setting's variable is ``TASKKIT_`` and its name in capitals (``max_retries``:
``TASKKIT_MAX_RETRIES``), except the node cache's ``TASKKIT_NODE_CACHE``: ``TASKKIT_CACHE_DIR``
is the stat-cache's own. Kept apart from :mod:`taskkit.runner.spec` so that the command line can
name
the variables without importing pydantic.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LOCAL_DIR", "ENV_PREFIX", "LOCAL_VARIABLE", "env_variable"]

ENV_PREFIX = "TASKKIT_"
#: Local mode's folder (``taskkit run --local``, task functions' default state), and the
#: folder a bare ``--local`` names.
LOCAL_VARIABLE = "TASKKIT_LOCAL"
DEFAULT_LOCAL_DIR = ".taskkit"
#: Settings whose variable is not ENV_PREFIX + their name.
_VARIABLES = {"cache_dir": "TASKKIT_NODE_CACHE"}


def env_variable(name: str) -> str:
    """The environment variable of the setting ``name`` (``max_retries``)."""
    return _VARIABLES.get(name, ENV_PREFIX + name.upper())
