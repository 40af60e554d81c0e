"""Counting the :class:`~taskkit.storage.stores.Stores` a piece of taskkit opens, uses and closes.

:func:`counting_stores` wraps ``Stores.__init__``, ``Stores.open`` and ``Stores.close`` (taskkit's
own class, nothing of fsspec's) for the rest of a test, so a test can say "this call opened
none and used the given one" or "this attempt opened exactly one and closed it once".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from taskkit.storage.base import Store
from taskkit.storage.stores import Stores


@dataclass
class StoreCounts:
    """What happened to every Stores since counting began (or since :meth:`reset`)."""

    opened: list[Stores] = field(default_factory=list)
    closes: Counter[int] = field(default_factory=Counter)
    used: Counter[int] = field(default_factory=Counter)  # open() calls, by id of the Stores

    def reset(self) -> None:
        self.opened.clear()
        self.closes.clear()
        self.used.clear()

    def closed_once_each(self) -> bool:
        """Whether every Stores opened was closed exactly once."""
        return all(self.closes[id(s)] == 1 for s in self.opened)

    def users(self) -> set[int]:
        """The ids of the Stores that opened a URL."""
        return set(self.used)


def counting_stores(monkeypatch: pytest.MonkeyPatch) -> StoreCounts:
    """Count from now on, in this process, until the test ends."""
    counts = StoreCounts()
    real_init, real_open, real_close = Stores.__init__, Stores.open, Stores.close

    def init(self: Stores, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        counts.opened.append(self)

    def open_(self: Stores, url: str) -> tuple[Store, str]:
        counts.used[id(self)] += 1
        return real_open(self, url)

    def close(self: Stores) -> None:
        counts.closes[id(self)] += 1
        real_close(self)

    monkeypatch.setattr(Stores, "__init__", init)
    monkeypatch.setattr(Stores, "open", open_)
    monkeypatch.setattr(Stores, "close", close)
    return counts
