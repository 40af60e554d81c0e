"""Test helpers for taskkit and for the projects that use it: a real Azurite blob server, a
store that fails on purpose, and an HTTP proxy that does.

This package ships with taskkit on purpose, so that users test their tasks the way taskkit tests
itself. It needs pytest (``pip install taskkit[test]``). Enable the fixtures in a ``conftest.py``::

    pytest_plugins = ["taskkit.testing"]

and ask for ``azurite`` (one server for the whole session) or ``azurite_container`` (a fresh,
empty container per test, named by the fixture's value).

This is the face of the test tools; each name has its home in one module:

- :mod:`taskkit.testing.azurite_server`: the :class:`Azurite` server, :func:`find_azurite` and the
  fixtures. pytest registers the fixtures from this package because they are imported here
  (it collects every fixture function a plugin module holds, wherever it was defined). The
  module is not named ``azurite``: the package's ``azurite`` is the fixture, and a submodule of
  that name would be shadowed by it (``import taskkit.testing.azurite`` would give the fixture).
- :mod:`taskkit.testing.faults`: :class:`FaultyStore` and its rules (:class:`Fault`).
- :mod:`taskkit.testing.proxy`: :class:`FaultProxy`, an HTTP proxy that fails requests on the
  wire in front of a blob endpoint (Azurite), for code in other processes, and its rules
  (:class:`ProxyRule`).
"""

from __future__ import annotations

from taskkit.testing.azurite_server import (
    AZURITE_ENV_VAR,
    INSTALL_HINT,
    Azurite,
    azurite,
    azurite_container,
    find_azurite,
)
from taskkit.testing.faults import (
    OPERATIONS,
    Fault,
    FaultKind,
    FaultyStore,
    Injected,
    Operation,
)
from taskkit.testing.proxy import (
    PROXY_KINDS,
    FaultProxy,
    Injection,
    ProxyFaultKind,
    ProxyRule,
    blob_endpoint,
)

__all__ = [
    "AZURITE_ENV_VAR",
    "INSTALL_HINT",
    "OPERATIONS",
    "PROXY_KINDS",
    "Azurite",
    "Fault",
    "FaultKind",
    "FaultProxy",
    "FaultyStore",
    "Injected",
    "Injection",
    "Operation",
    "ProxyFaultKind",
    "ProxyRule",
    "azurite",
    "azurite_container",
    "blob_endpoint",
    "find_azurite",
]
