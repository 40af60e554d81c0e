"""Opening a URL's store: one per protocol and options, for the whole run, closed together.

A URL is served by the first of:

* a store the caller mounted (``Stores(mounts={"fake://": MemoryStore()})``): the longest
  mounted prefix of the URL wins, so ``"az://c/in/"`` can be served by one store and the rest
  of ``az://`` by another;
* the backend :data:`REGISTRY` names for its protocol, imported on first use (so a run that
  never opens ``az://`` never imports the Azure SDK); every protocol not named there is served
  by :data:`FALLBACK`, any fsspec filesystem.

Invariants: a URL that is malformed, or that carries a credential in its query (other than an
``http(s)://`` URL, whose token is its access), is refused as a :class:`UsageError` before any
store, mounted or not, sees it. Upstream errors met while opening leave as a
:class:`TaskkitError` through :func:`~taskkit.storage.errors.guarded`. A store is closed by the
:class:`Stores` that opened it, never by one it was only mounted on.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from taskkit.exceptions import ConfigError, MisuseError, UsageError
from taskkit.redaction import SIGNED_QUERY, shown_url, signed
from taskkit.storage.base import Store
from taskkit.storage.errors import credentials_problem, guarded, reason
from taskkit.storage.retry import Outages, RetryBudget
from taskkit.storage.urls import AZURE_PROTOCOLS, bad_url, container_problem

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["FALLBACK", "REGISTRY", "Stores", "backend"]

#: Protocol -> ``"module:Class"`` of the :class:`Store` that serves it, given the fsspec
#: filesystem of the URL, the protocol it shows and the run's retry budget.
REGISTRY: Mapping[str, str] = MappingProxyType(
    dict.fromkeys(sorted(AZURE_PROTOCOLS), "taskkit.storage.azure:AzureStore")
)
#: The store of every protocol :data:`REGISTRY` does not name.
FALLBACK = "taskkit.storage.fsstore:FsspecStore"


#: The name of the one store of the local disk among those a :class:`Stores` opened.
_LOCAL = "file:"


def _plain_local_key(url: str) -> str | None:
    """The key fsspec gives an absolute local path (``/a/b``, ``file:///a/b``), worked out
    without fsspec; None for anything else (relative, ``~``, a chain, another protocol)."""
    path = url[7:] if url.startswith("file://") else url
    if not path.startswith("/") or path.startswith("//") or "::" in path:
        return None
    return path.rstrip("/") or "/"


@functools.cache
def backend(path: str) -> type[Store]:
    """The :class:`Store` class at ``path`` (``"module:Class"``), imported now."""
    module, _, name = path.partition(":")
    found = getattr(importlib.import_module(module), name)
    if not (isinstance(found, type) and issubclass(found, Store)):
        raise MisuseError(f"{path} is not a Store class")
    return found


def _prefix(mount: str) -> str:
    """A mount's URL prefix: a bare protocol (``"fake"``) stands for all of it."""
    if not isinstance(mount, str) or not mount:
        raise MisuseError(f"a mount is a protocol or a URL prefix, not {mount!r}")
    return mount if "://" in mount else f"{mount}://"


class Stores:
    """The stores of one run, opened once per protocol and options, closed together.

    ``mounts`` maps a protocol (``"fake"``, ``"fake://"``) or a URL prefix
    (``"az://container/inputs/"``) to a store that serves every URL under it, the longest
    prefix first; the key of such a URL is what follows its ``protocol://``, as a store of
    that protocol would have it. A mounted store keeps its own retry budget and is not
    closed by :meth:`close`: whoever made it closes it. Stores opened here (through
    :data:`REGISTRY`) share ``retry`` and one :class:`Outages` tracker and are closed here;
    a tracker made here (neither ``outages`` nor ``retry`` has one) tells its lines to ``warn``
    (default: the ``"taskkit"`` logger).
    """

    def __init__(
        self,
        retry: RetryBudget | None = None,
        storage_options: Mapping[str, Any] | None = None,
        *,
        outages: Outages | None = None,
        mounts: Mapping[str, Store] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        retry = retry or RetryBudget()
        # Every request of the run, whatever its store or thread, reports to one tracker, so
        # an outage is told of once (the stores take the retry budget, and it with it).
        self._own_outages = outages is None and retry.outages is None
        self.outages = outages or retry.outages or Outages(warn)
        self.retry = dataclasses.replace(retry, outages=self.outages)
        self.storage_options = dict(storage_options or {})
        self.mounts: Mapping[str, Store] = MappingProxyType(
            {_prefix(mount): store for mount, store in (mounts or {}).items()}
        )
        self._open: dict[str, Store] = {}
        # The threads of a run (transfers, checkpoint syncs, log uploads) open through one
        # Stores: one store, and so one SDK client, per filesystem, whoever asks first.
        self._lock = threading.Lock()

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connections of every store opened here (not of mounted ones); an
        outage still under way is summed up."""
        with self._lock:  # each once: the local disk's store may be there under two names
            stores, self._open = list({id(s): s for s in self._open.values()}.values()), {}
        try:
            for store in stores:
                store.close()
        finally:
            if self._own_outages:
                self.outages.close()

    def open(self, url: str) -> tuple[Store, str]:
        """The store that holds ``url`` and the key of ``url`` in it."""
        local = _plain_local_key(url)
        if local is not None:
            protocol = "file"
        else:
            import fsspec.core

            protocol = fsspec.core.split_protocol(url)[0] or "file"
        if protocol not in ("http", "https") and signed(url):
            raise UsageError(f"{shown_url(url)!r} {SIGNED_QUERY}")
        problem = bad_url(url) or bad_url(url, container_problem)
        if problem is not None:
            raise UsageError(problem)
        mounted = self._mounted(url)
        if mounted is not None:
            return mounted
        if local is not None:
            from taskkit.storage.fsstore import FsspecStore

            with self._lock:
                store = self._open.get(_LOCAL)
                if store is None:
                    store = self._open[_LOCAL] = FsspecStore(None, "file", self.retry)
            return store, local
        what = f"cannot open {shown_url(url)}"
        fs, key = guarded(lambda: self._filesystem(url, protocol, what), what)
        name = f"{protocol}:{id(fs)}"  # fsspec hands out one instance per protocol and options
        with self._lock:
            store = self._open.get(name)
            if store is None:
                names = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
                shown = "file" if "file" in names else protocol
                cls = backend(REGISTRY.get(protocol, FALLBACK))
                store = cls(fs, shown, self.retry)  # type: ignore[call-arg]
                if store.lists_a_tree:  # the local disk: one store, whichever way it is named
                    store = self._open.setdefault(_LOCAL, store)
                self._open[name] = store
        return store, key

    def _mounted(self, url: str) -> tuple[Store, str] | None:
        full = url if "://" in url else f"file://{url}"
        prefixes = [prefix for prefix in self.mounts if full.startswith(prefix)]
        if not prefixes:
            return None
        return self.mounts[max(prefixes, key=len)], full.split("://", 1)[1]

    def _filesystem(self, url: str, protocol: str, what: str) -> tuple[AbstractFileSystem, str]:
        """fsspec's filesystem for ``url`` and the key in it; :class:`ConfigError` when no
        installed package serves the protocol or adlfs finds no usable credentials."""
        import fsspec.core

        try:
            if protocol in ("http", "https"):
                # One URL, never a chain: an IPv6 host ("[::1]") holds fsspec's "::".
                fs = fsspec.filesystem(protocol, **self.storage_options)
                return fs, fs._strip_protocol(url)
            fs, key = fsspec.core.url_to_fs(url, **self.storage_options)
            return fs, str(key)
        except ValueError as exc:  # adlfs: no usable credentials; fsspec: unknown protocol
            if protocol in AZURE_PROTOCOLS:
                raise credentials_problem(what, self.storage_options) from exc
            raise ConfigError(f"{what}: {reason(exc)}") from exc
        except ImportError as exc:
            raise ConfigError(f"{what}: no installed fsspec package reads {protocol}://") from exc
