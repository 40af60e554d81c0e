"""``@taskkit.task`` and :class:`Task`: what decoration keeps, and what it refuses at once."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskkit
from taskkit.exceptions import MisuseError, UsageError
from taskkit.function.task import Task, is_task, task


def double(x: int, *, scale: int = 2) -> int:
    """Doubles."""
    return x * scale


def test_both_forms_build_a_task_that_keeps_the_signature() -> None:
    """``@task`` and ``@task(...)`` wrap alike; name, doc and signature survive."""
    bare, configured = task(double), task(retries=1)(double)
    for wrapped in (bare, configured):
        assert isinstance(wrapped, Task)
        assert is_task(wrapped)
        assert inspect.signature(wrapped) == inspect.signature(double)
        assert wrapped.__name__ == "double"
        assert wrapped.__doc__ == "Doubles."
        assert wrapped.__wrapped__ is double  # type: ignore[attr-defined]
    assert configured.options.retries == 1
    assert bare.name == f"{__name__}:double"
    assert not is_task(double)


def test_a_task_works_without_the_decorator() -> None:
    """``Task(fn, ...)`` is what the decorator builds."""
    built = Task(double, version="2", ignore=["scale"])
    assert built.options.version == "2"
    assert built.options.ignore == frozenset({"scale"})
    assert built(3) == 6


def test_a_task_of_a_task_wraps_the_function_once() -> None:
    """Decorating a task again does not key the wrapper."""
    assert task(task(double)).fn is double


def test_generators_and_async_functions_are_refused_at_decoration() -> None:
    """A generator has no result to keep; async def is refused with what to do instead."""

    def gen() -> Iterator[int]:
        yield 1

    async def coro() -> int:
        return 1

    with pytest.raises(MisuseError, match="generator"):
        task(gen)
    with pytest.raises(MisuseError, match=r"async def.*asyncio\.run"):
        task(coro)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"ignore": ["nope"]}, "ignore"),
        ({"inputs": {"ref": "file:///x/"}}, "inputs"),
        ({"key": {"nope": str}}, "key"),
        ({"retries": -1}, "retries"),
        ({"retries": True}, "retries"),
        ({"result": "yaml"}, "result"),
        ({"retry_on": "OSError"}, "retry_on"),
        ({"permanent_on": [ValueError, 3]}, "permanent_on"),
        ({"deadline": "soon"}, "deadline"),
        ({"version": 2}, "version"),
    ],
)
def test_options_that_cannot_be_are_refused_at_decoration(
    options: dict[str, object], fragment: str
) -> None:
    """Each bad option is one clear error naming it, before any call."""
    with pytest.raises(MisuseError, match=fragment):
        task(**options)(double)  # type: ignore[call-overload]


def test_a_malformed_output_is_refused_at_decoration() -> None:
    """An output without a DEST is the same error as ``taskkit run -o`` gives."""
    with pytest.raises(UsageError):
        task(outputs={"*.csv": ""})(double)


def test_inputs_are_no_parameters_of_the_call(tmp_path: Path) -> None:
    """An input parameter is taskkit's to pass: the call signature leaves it out."""

    def uses(ref: Path, n: int) -> int:
        return n

    wrapped = task(inputs={"ref": f"file://{tmp_path}/ref/"})(uses)
    assert list(wrapped.spec.call_signature.parameters) == ["n"]


def test_the_package_face_names_the_function_api() -> None:
    """The names the README uses are on the package."""
    for name in (
        "task",
        "Task",
        "explain",
        "Permanent",
        "Retryable",
        "PermanentFailure",
        "checkpoint_dir",
        "attempt",
        "is_last_attempt",
    ):
        assert name in taskkit.__all__
        assert getattr(taskkit, name) is not None


def test_a_method_is_refused_at_decoration_a_staticmethod_is_not() -> None:
    """`self` cannot be keyed and a task is no descriptor: one line saying what to do."""
    with pytest.raises(MisuseError, match="is a method"):

        class Jobs:
            @task
            def meth(self, n: int) -> int:
                return n

    class Fine:
        @staticmethod
        @task
        def stat(n: int) -> int:
            return n

    assert Fine.stat(2) == 2


def test_a_staged_default_without_an_input_is_refused_at_decoration() -> None:
    """`ref: Path = taskkit.staged` needs an inputs= entry naming ref."""

    def f(x: int, *, ref: Path = taskkit.staged) -> int:
        return x

    with pytest.raises(MisuseError, match="no inputs= entry names it"):
        task(f)


def test_a_bad_depends_is_refused_at_decoration() -> None:
    """A string (a natural slip) is no code: refused before any call, as a BadTask."""
    with pytest.raises(taskkit.BadTask, match="depends="):
        task(depends=["plugins.fast"])(double)


def test_what_cannot_be_called_is_a_bad_task_that_taskkit_call_exits_200_with() -> None:
    """An unkeyable argument, a key= function that raises, a call of itself: BadTask, whose
    run code is the permanent 200, never the retryable 206 of an internal error."""
    import threading

    @task(key={"x": lambda v: v["id"]})
    def keyed(x: str) -> str:
        return x

    @task
    def takes(lock: object) -> None:
        return None

    with pytest.raises(taskkit.BadTask, match=r"argument 'x': key=\{'x': \.\.\.\} raised"):
        keyed("abc")
    with pytest.raises(taskkit.BadTask, match="cannot key"):
        takes(threading.Lock())
    assert taskkit.BadTask.run_code == 200


def test_what_is_no_function_is_refused_at_decoration() -> None:
    """A partial, a callable instance, a class, a blank or non-text state, an option typo: one
    BadTask each, before any call."""
    import functools as ft

    class Callable_:
        def __call__(self, x: int) -> int:
            return x

    for made in (ft.partial(double, 1), Callable_(), Callable_):
        with pytest.raises(taskkit.BadTask, match="decorates a function"):
            task(made)  # type: ignore[arg-type]
    for state in ("  ", 3):
        with pytest.raises(taskkit.BadTask, match="state"):
            task(state=state)(double)  # type: ignore[call-overload]
    with pytest.raises(taskkit.BadTask, match=r"no option 'retrys' \(options: allow_empty"):
        task(retrys=2)(double)  # type: ignore[call-overload]


def test_a_method_named_otherwise_is_refused_when_read_off_an_instance() -> None:
    """`def meth(this, n)` in a class body: the instance read is refused, the class read is
    the task."""

    class J:
        @task
        def meth(this, n: int) -> int:
            return n

    with pytest.raises(taskkit.BadTask, match="is a method"):
        J().meth  # noqa: B018
    assert is_task(J.meth)


def test_a_task_pickles_by_name_so_a_process_pool_runs_the_very_task() -> None:
    """pickle gives back the same object (as a function pickles); a task inside a function is
    refused in one line."""
    import pickle

    assert pickle.loads(pickle.dumps(module_task)) is module_task

    @task
    def local(x: int) -> int:
        return x

    with pytest.raises(taskkit.BadTask, match="cannot be pickled"):
        pickle.dumps(local)


@task
def module_task(x: int) -> int:
    return x
