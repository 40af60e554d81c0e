"""What a task is, apart from how it is called: its function, name and options, checked once.

:class:`TaskSpec` is what the call machinery (:mod:`taskkit.function.plan`,
:mod:`taskkit.function.execute`) works from; :class:`~taskkit.function.task.Task` is the face a user
calls, holding one. Options mean what ``taskkit run``'s do: ``state`` (the store of records),
``inputs`` (name -> URL, staged and passed as a ``pathlib.Path`` keyword argument of that
name), ``outputs`` (GLOB -> URL, published after success as ``taskkit run -o``), ``retries``
(in-process retries of retryable failures), ``retry_on`` / ``permanent_on``, ``deadline``,
``version``, ``depends``, ``ignore``, ``key`` (per argument: a function whose value is keyed
instead) and ``result`` (``"json"`` or ``"pickle"``).

Invariants: everything a decoration can refuse is refused here, at decoration (a generator, an
``async def`` function, an option naming no parameter, an input a caller could pass by position,
a malformed output), never at a call; a task's name is ``module:qualname``, with a script run as
``__main__`` named by its module.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from taskkit.exceptions import BadTask, TaskkitError
from taskkit.function.failures import classify
from taskkit.function.results import ResultFormat
from taskkit.runner.policy import Verdict

if TYPE_CHECKING:
    from taskkit.function.code import CodeKey

__all__ = ["Exceptions", "TaskOptions", "TaskSpec", "staged"]

Exceptions = Sequence[type[BaseException]]


class _Staged:
    """The default of a parameter taskkit fills with a staged input."""

    def __repr__(self) -> str:
        return "taskkit.STAGED"


#: The default to give a parameter named in ``inputs=`` (``ref: Path = taskkit.staged``), so
#: a type checker knows callers do not pass it: taskkit does, with the staged path.
staged: Any = _Staged()


@dataclass(frozen=True)
class TaskOptions:
    """How a task runs; see the module docstring."""

    state: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = ()
    permanent_on: tuple[type[BaseException], ...] = ()
    deadline: float | None = None
    version: str | None = None
    depends: tuple[object, ...] = ()
    ignore: frozenset[str] = frozenset()
    key: Mapping[str, Callable[[Any], object]] = field(default_factory=dict)
    result: ResultFormat = "json"
    #: An output pattern may match no file (else a call whose outputs match nothing fails).
    allow_empty: bool = False


def _qualified(fn: Callable[..., object]) -> str:
    """``module:qualname``, with a script run as ``__main__`` named by its module, so that
    ``python pipeline.py`` and ``taskkit call pipeline:f`` are one function."""
    module = fn.__module__ or "__exec__"  # exec() without a __name__ names no module
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        path = getattr(main, "__file__", None)
        if spec is not None and spec.name:
            module = spec.name
        elif path:
            module = os.path.splitext(os.path.basename(path))[0]
    return f"{module}:{fn.__qualname__}"


def _check_inputs(signature: inspect.Signature, inputs: Mapping[str, str], where: str) -> None:
    """Inputs are passed by keyword: a positional-only one, or one before ``*args``, cannot be."""
    spread = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())
    for name in inputs:
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.POSITIONAL_ONLY or (
            spread and kind is not inspect.Parameter.KEYWORD_ONLY
        ):
            raise BadTask(
                f"inputs: {where} takes {name!r} by position; an input is passed by keyword "
                "(make it keyword-only)"
            )
        if not isinstance(inputs[name], str):
            raise BadTask(f"inputs: {name!r} needs a URL, not {inputs[name]!r}")


def _check_method(fn: Callable[..., Any], signature: inspect.Signature, where: str) -> None:
    """A function defined in a class body taking ``self`` or ``cls`` would be called unbound
    (a task is no descriptor), and its instance cannot be keyed: refused, with the way out."""
    owner, _, _ = getattr(fn, "__qualname__", "").rpartition(".")
    first = next(iter(signature.parameters), None)
    if owner and not owner.endswith("<locals>") and first in ("self", "cls"):
        raise BadTask(
            f"@taskkit.task: {where} is a method ({first!r} cannot be part of a key); make it "
            "a module-level function, or a @staticmethod that takes what it needs as arguments"
        )


def _classes(value: object, option: str) -> tuple[type[BaseException], ...]:
    found = value if isinstance(value, (tuple, list)) else (value,)
    for item in found:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise BadTask(f"{option}: {item!r} is not an exception class")
    return tuple(found)


class TaskSpec:
    """A task's function, name and options, checked (see the module docstring)."""

    #: The options :class:`~taskkit.function.task.Task` takes (for the refusal of a typo).
    OPTIONS = frozenset(option.name for option in fields(TaskOptions))

    def __init__(
        self,
        fn: Callable[..., Any],
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
    ) -> None:
        from taskkit.function.arguments import check_names

        if getattr(fn, "__taskkit_task__", False):  # a task of a task keys the function once
            fn = fn.fn  # type: ignore[attr-defined]
        if not inspect.isfunction(fn):
            raise BadTask(
                f"@taskkit.task decorates a function defined with def, not "
                f"{type(fn).__name__} {fn!r}"
            )
        if state is not None and (not isinstance(state, str) or not state.strip()):
            raise BadTask(f"state: a URL, not {state!r}")
        where = getattr(fn, "__qualname__", repr(fn))
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise BadTask(
                f"@taskkit.task: {where} is a generator; a task returns its result (return a list)"
            )
        if inspect.iscoroutinefunction(fn):
            raise BadTask(
                f"@taskkit.task: {where} is an async def function, which tasks do not support; "
                "decorate a plain function that calls asyncio.run(...)"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise BadTask(f"retries: a whole number of at least 0, not {retries!r}")
        if result not in ("json", "pickle"):
            raise BadTask(f"result: 'json' or 'pickle', not {result!r}")
        if version is not None and not isinstance(version, str):
            raise BadTask(f"version: a string, not {version!r}")
        self.fn: Callable[..., Any] = fn
        self.signature = inspect.signature(fn)
        inputs, outputs = dict(inputs or {}), dict(outputs or {})
        check_names(self.signature, inputs, "inputs")
        _check_method(fn, self.signature, where)
        for item in depends:
            if not (inspect.isfunction(item) or inspect.isclass(item) or inspect.ismodule(item)):
                raise BadTask(
                    f"depends=: functions, classes or modules, not {type(item).__name__} {item!r}"
                )
        for name, param in self.signature.parameters.items():
            if param.default is staged and name not in inputs:
                raise BadTask(
                    f"{where}: {name!r} defaults to taskkit.staged, but no inputs= entry "
                    f"names it (inputs={{{name!r}: URL}})"
                )
        _check_inputs(self.signature, inputs, where)
        check_names(self.signature, ignore, "ignore")
        check_names(self.signature, key or {}, "key")
        self.options = TaskOptions(
            state=state,
            inputs=inputs,
            outputs=outputs,
            retries=retries,
            retry_on=_classes(retry_on, "retry_on"),
            permanent_on=_classes(permanent_on, "permanent_on"),
            deadline=None if deadline is None else _seconds(deadline),
            version=version,
            depends=tuple(depends),
            ignore=frozenset(ignore),
            key=dict(key or {}),
            result=result,
            allow_empty=bool(allow_empty),
        )
        # What a caller passes: the inputs are taskkit's to pass.
        self.call_signature = self.signature.replace(
            parameters=[p for n, p in self.signature.parameters.items() if n not in inputs]
        )
        self.output_texts = tuple(f"{glob}={dest}" for glob, dest in outputs.items())
        if self.output_texts:
            from taskkit.transfer.patterns import parse_output

            for text in self.output_texts:
                parse_output(text)  # a malformed GLOB or DEST is refused now, not at a call
        self.name = _qualified(fn)
        self._code: CodeKey | None = None
        self.noted = False  # whether the notes of its code key were said

    def __repr__(self) -> str:
        return f"TaskSpec({self.name!r})"

    def arranged(
        self, args: Sequence[object], kwargs: Mapping[str, object], inputs: Mapping[str, object]
    ) -> tuple[list[object], dict[str, object]]:
        """The arguments of the function: the caller's, bound to the call signature, with the
        staged ``inputs`` by keyword (so a positional argument never lands on an input)."""
        bound = self.call_signature.bind(*args, **kwargs)
        spread = any(
            p.kind is p.VAR_POSITIONAL and bound.arguments.get(n)
            for n, p in self.call_signature.parameters.items()
        )
        positional: list[object] = []
        named: dict[str, object] = {}
        for name, value in bound.arguments.items():
            kind = self.call_signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                positional.extend(value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            elif kind is inspect.Parameter.POSITIONAL_ONLY or (
                spread and kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            ):
                positional.append(value)
            else:
                named[name] = value
        named.update(inputs)
        return positional, named

    def code(self) -> CodeKey:
        """The code part of this task's keys (computed once per process: the code of a
        running program does not change)."""
        if self._code is None:
            from taskkit.function.code import code_key

            found = code_key(self.fn, depends=self.options.depends, version=self.options.version)
            module = self.name.partition(":")[0]
            if self.fn.__module__ == "__main__" and module != "__main__":
                # A script run as a program is the module it is imported as elsewhere
                # (`python pipeline.py` and `taskkit call pipeline:f`): one key for both.
                found = replace(
                    found,
                    parts=tuple(
                        replace(part, name=module + part.name[len("__main__") :])
                        if part.name.startswith("__main__:")
                        else part
                        for part in found.parts
                    ),
                )
            self._code = found
        return self._code

    def verdict(self, exc: BaseException) -> Verdict:
        """Permanent or retryable, for this task (its ``retry_on``/``permanent_on``)."""
        options = self.options
        return classify(exc, retry_on=options.retry_on, permanent_on=options.permanent_on).verdict


def _seconds(value: float | str) -> float:
    from taskkit.runner.spec import parse_duration

    try:
        return parse_duration(value)
    except (TaskkitError, ValueError) as exc:
        raise BadTask(f"deadline: {exc}") from None
