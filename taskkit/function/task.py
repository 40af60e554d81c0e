"""``@taskkit.task``: a Python function made a goal-seeking task, and the :class:`Task` it builds.

The decorator is a thin builder over :class:`Task`, which works without it
(``Task(fn, retries=2)``), as tenacity's ``retry`` builds ``Retrying`` and click's ``command``
builds ``Command``. A task is called like its function; behind the call, one key
(:mod:`taskkit.function.key`) is run once: a call whose goal is met returns the stored result
at once, a permanent failure recorded for it is raised again as
:class:`~taskkit.function.failures.PermanentFailure`, and anything else runs the function
(:mod:`taskkit.function.execute`). What a task is (its checked options) is a
:class:`~taskkit.function.spec.TaskSpec`; this is its face.

Invariants: the wrapped signature survives for type checkers (``ParamSpec``) and for
``inspect``; everything a decoration can refuse is refused at decoration.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from taskkit.exceptions import BadTask, MisuseError
from taskkit.function.results import ResultFormat
from taskkit.function.spec import Exceptions, TaskOptions, TaskSpec
from taskkit.observer import Observer
from taskkit.runner.policy import Verdict
from taskkit.storage.stores import Stores

if TYPE_CHECKING:
    from taskkit.function.code import CodeKey
    from taskkit.function.plan import CallPlan, Explanation

__all__ = ["Task", "explain", "is_task", "task"]

P = ParamSpec("P")
R = TypeVar("R")


def _load_task(module: str, qualname: str) -> Task[Any, Any]:
    """The task named ``module:qualname``, imported (what a pickled task stands for)."""
    import importlib

    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not is_task(found):
        raise BadTask(f"{module}:{qualname} is not a taskkit task")
    return found  # type: ignore[no-any-return]


def is_task(obj: object) -> bool:
    """Whether ``obj`` is a taskkit task (what ``@taskkit.task`` returns)."""
    return bool(getattr(obj, "__taskkit_task__", False))


class Task(Generic[P, R]):
    """A function run as a goal-seeking task; call it as the function."""

    __taskkit_task__ = True

    def __init__(self, fn: Callable[P, R], **options: Any) -> None:
        """``fn`` run as a task with ``options`` (those of :func:`task`)."""
        try:
            self.spec = TaskSpec(fn, **options)
        except TypeError as exc:
            if isinstance(exc, BadTask):
                raise
            known = ", ".join(sorted(TaskSpec.OPTIONS))
            unknown = sorted(set(options) - TaskSpec.OPTIONS)
            raise BadTask(
                f"@taskkit.task: no option {unknown[0] if unknown else '?'!r} (options: {known})"
            ) from None
        functools.update_wrapper(self, self.spec.fn)

    def __get__(self, instance: object, owner: type | None = None) -> Task[P, R]:
        """Read off a class, the task itself; read off an instance, refused: a task is no
        method (its instance cannot be keyed)."""
        if instance is not None:
            raise BadTask(
                f"{self.name} is a method; a task is a module-level function, or a "
                "@staticmethod that takes what it needs as arguments"
            )
        return self

    def __reduce__(self) -> tuple[Callable[[str, str], Task[Any, Any]], tuple[str, str]]:
        """Pickled by name, as a function is: a process pool's worker imports the very task
        (its options, state and keys), never a copy of it."""
        if "<locals>" in self.fn.__qualname__:
            raise BadTask(f"{self.name} is defined inside a function: it cannot be pickled")
        return _load_task, (self.fn.__module__, self.fn.__qualname__)

    @property
    def fn(self) -> Callable[P, R]:
        """The function (unwrapped)."""
        return self.spec.fn

    @property
    def name(self) -> str:
        """``module:qualname``: the folder of its records in the state."""
        return self.spec.name

    @property
    def signature(self) -> inspect.Signature:
        return self.spec.signature

    @property
    def options(self) -> TaskOptions:
        return self.spec.options

    def code(self) -> CodeKey:
        """The code part of this task's keys."""
        return self.spec.code()

    def __repr__(self) -> str:
        return f"<taskkit task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.invoke(args, kwargs)

    def invoke(
        self,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        *,
        stores: Stores | None = None,
        observer: Observer | None = None,
        environ: Mapping[str, str] | None = None,
        rerun: bool = False,
        state: str | None = None,
    ) -> R:
        """One call: the stored result when its goal is met, else the function run (its
        exception raised on a failure, after the in-process retries); ``rerun`` forgets a
        recorded result or permanent failure first. Requests go through ``stores`` (default:
        the calling task's, else a set of its own); ``observer`` (default: the calling
        task's, else the ``"taskkit"`` logger) hears what it does; ``environ``: the
        environment it reads (default: this process's)."""
        from taskkit.function.execute import call

        return call(  # type: ignore[return-value]
            self.spec,
            args,
            dict(kwargs or {}),
            stores=stores,
            observer=observer,
            environ=environ,
            rerun=rerun,
            state=state,
        )

    def plan_call(
        self,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        *,
        stores: Stores | None = None,
        environ: Mapping[str, str] | None = None,
        state: str | None = None,
        rerun: bool = False,
    ) -> CallPlan:
        """What a call would do, found with no side effect at all."""
        from taskkit.function.execute import planned

        return planned(
            self.spec,
            args,
            dict(kwargs or {}),
            stores=stores,
            environ=environ,
            state=state,
            rerun=rerun,
        )

    def plan(self, *args: P.args, **kwargs: P.kwargs) -> CallPlan:
        """What ``self(*args, **kwargs)`` would do (:class:`~taskkit.function.plan.CallPlan`),
        with no side effect at all."""
        return self.plan_call(args, kwargs)

    def explain(self, *args: P.args, **kwargs: P.kwargs) -> Explanation:
        """Whether ``self(*args, **kwargs)`` would run and why: ``never run``, ``goal met``,
        or ``would run`` with every part that differs from the most recent recorded call."""
        return self.plan_call(args, kwargs).explanation

    def forget(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Clear the recorded result or permanent failure of this call's key, so the next
        call runs; whether there was one."""
        from taskkit.function.execute import forget

        return forget(self.spec, args, dict(kwargs))

    def verdict(self, exc: BaseException) -> Verdict:
        """Permanent or retryable, for this task (its ``retry_on``/``permanent_on``)."""
        return self.spec.verdict(exc)


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    state: str | None = None,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | Exceptions = (),
    permanent_on: type[BaseException] | Exceptions = (),
    deadline: float | str | None = None,
    version: str | None = None,
    depends: Sequence[object] = (),
    ignore: Collection[str] = (),
    key: Mapping[str, Callable[[Any], object]] | None = None,
    result: ResultFormat = "json",
    allow_empty: bool = False,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Make ``fn`` a goal-seeking task: ``@task`` or ``@task(retries=2, ...)`` (the options of
    :class:`Task`)."""
    if fn is not None:
        return Task(fn, **options)

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        return Task(fn, **options)

    return decorate


def explain(fn: Task[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Explanation:
    """``fn.explain(*args, **kwargs)``: whether that call would run, and why."""
    if not is_task(fn):
        raise MisuseError(f"explain() takes a taskkit task, not {fn!r}")
    return fn.explain(*args, **kwargs)
