"""Opening a URL's store: one per protocol and options, for the whole run, closed together."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from taskkit.exceptions import ConfigError, TaskkitError, UsageError
from taskkit.redaction import SIGNED_QUERY, shown_url, signed
from taskkit.storage.base import Store
from taskkit.storage.errors import credentials_problem, reason, translate
from taskkit.storage.retry import Outages, RetryBudget
from taskkit.storage.urls import AZURE_PROTOCOLS, bad_url, container_problem

__all__ = ["Stores"]


class Stores:
    """The stores of one run, opened once per protocol and options, closed together."""

    def __init__(
        self,
        retry: RetryBudget | None = None,
        storage_options: Mapping[str, Any] | None = None,
        *,
        outages: Outages | None = None,
    ) -> None:
        retry = retry or RetryBudget()
        # Every request of the run, whatever its store or thread, reports to one tracker, so
        # an outage is told of once (the stores take the retry budget, and it with it).
        self._own_outages = outages is None and retry.outages is None
        self.outages = outages or retry.outages or Outages()
        self.retry = dataclasses.replace(retry, outages=self.outages)
        self.storage_options = dict(storage_options or {})
        self._open: dict[str, Store] = {}

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every store's connections; an outage still under way is summed up."""
        stores, self._open = list(self._open.values()), {}
        try:
            for store in stores:
                store.close()
        finally:
            if self._own_outages:
                self.outages.close()

    def open(self, url: str) -> tuple[Store, str]:
        """The store that holds ``url`` and the key of ``url`` in it."""
        import fsspec.core

        protocol, _ = fsspec.core.split_protocol(url)
        protocol = protocol or "file"
        what = f"cannot open {shown_url(url)}"
        if protocol not in ("http", "https") and signed(url):
            raise UsageError(f"{shown_url(url)!r} {SIGNED_QUERY}")
        problem = bad_url(url) or bad_url(url, container_problem)
        if problem is not None:
            raise UsageError(problem)
        try:
            if protocol in ("http", "https"):
                # One URL, never a chain: an IPv6 host ("[::1]") holds fsspec's "::".
                fs = fsspec.filesystem(protocol, **self.storage_options)
                key = fs._strip_protocol(url)
            else:
                fs, key = fsspec.core.url_to_fs(url, **self.storage_options)
        except ValueError as exc:  # adlfs: no usable credentials; fsspec: unknown protocol
            if protocol in AZURE_PROTOCOLS:
                raise credentials_problem(what, self.storage_options) from exc
            raise ConfigError(f"{what}: {reason(exc)}") from exc
        except ImportError as exc:
            raise ConfigError(f"{what}: no installed fsspec package reads {protocol}://") from exc
        except TaskkitError:
            raise
        except Exception as exc:
            failure = translate(exc, what)
            if failure is None:
                raise
            raise failure from exc
        name = f"{protocol}:{id(fs)}"  # fsspec hands out one instance per protocol and options
        store = self._open.get(name)
        if store is None:
            if protocol in AZURE_PROTOCOLS:
                from taskkit.storage.azure import AzureStore

                store = AzureStore(fs, protocol, self.retry)
            else:
                from taskkit.storage.fsstore import FsspecStore

                names = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
                store = FsspecStore(fs, "file" if "file" in names else protocol, self.retry)
            self._open[name] = store
        return store, key
