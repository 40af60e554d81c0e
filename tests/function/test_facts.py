"""taskkit.function.facts: whose code it is, and what a value stands for."""

from __future__ import annotations

import functools
import json
import types

import pytest

from taskkit.function import facts as facts_module
from taskkit.function.facts import is_simple, is_users, unwrapped


@pytest.mark.parametrize(
    ("filename", "module", "users"),
    [
        ("/srv/app/pipeline/steps.py", "pipeline.steps", True),
        ("/home/me/.local/lib/python3.11/site-packages/lib/x.py", "lib.x", False),
        ("/usr/lib/python3/dist-packages/lib/x.py", "lib.x", False),
        (json.__file__, "json", False),
        (facts_module.__file__, "taskkit.function.facts", False),
        ("/srv/app/taskkit/x.py", "taskkit.x", False),
        ("/srv/app/code.py", "code", True),  # the user's module named like a standard one
        ("<string>", None, True),
        ("<stdin>", "__main__", True),
        ("<frozen importlib._bootstrap>", "importlib._bootstrap", False),
        (None, "sys", False),
    ],
)
def test_whose_code_it_is(filename: str | None, module: str | None, users: bool) -> None:
    """The user's own code is neither installed (site- or dist-packages), nor standard, nor
    taskkit; code without a file is the user's unless its module is a standard one."""
    assert is_users(filename, module) is users


class Task:
    """A stand-in for a taskkit task: marked, and wrapping a function."""

    __taskkit_task__ = True

    def __init__(self, fn: object) -> None:
        self.__wrapped__ = fn


def helper() -> int:
    return 1


class Holder:
    @staticmethod
    def static() -> int:
        return 1

    @property
    def prop(self) -> int:
        return 1

    def method(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("value", "stands_for"),
    [
        (helper, [helper]),
        (Task(helper), [helper]),
        (functools.partial(helper), [helper]),
        (functools.lru_cache(helper), [helper]),
        (Holder().method, [Holder.method]),
        (Holder.__dict__["static"], [Holder.static]),
        (Holder.__dict__["prop"], [Holder.prop.fget]),  # type: ignore[attr-defined]
        (Holder, [Holder]),
        (json, [json]),
        (3, []),
        ("text", []),
        (object(), []),
    ],
    ids=lambda value: type(value).__name__,
)
def test_what_a_value_stands_for(value: object, stands_for: list[object]) -> None:
    """A task, a partial, a cache wrapper, a method, a static method and a property stand
    for the function inside; a constant or a plain object for nothing."""
    assert list(unwrapped(value)) == stands_for


def test_simple_values_are_the_immutable_scalars_and_their_tuples() -> None:
    """Scalars and tuples and frozensets of them are simple; lists, dicts, sets, subclasses
    of the scalars and objects are not."""
    assert all(map(is_simple, [1, 1.5, True, None, "a", b"a", (1, ("a",)), frozenset({1})]))
    assert not any(map(is_simple, [[1], {"a": 1}, {1}, (1, [2]), types.SimpleNamespace()]))

    class Number(int):
        pass

    assert not is_simple(Number(1))
