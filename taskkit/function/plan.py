"""What a call of a task would do, before it does anything: its key, where it stands, and why.

:func:`call_key` binds and hashes a call (the code, the arguments, the listed contents of its
inputs, its outputs); :func:`call_status` reads where that key stands in the journal (met,
permanent, being run by another live call, or open); :func:`plan_call` puts both together with
what differs from the most recent recorded call of the function. ``fn.plan(...)``,
``fn.explain(...)`` and ``taskkit call --dry-run`` show that plan; a call carries it out
(:mod:`taskkit.function.execute`).

Layout of a function's records in the state::

    <state>/calls/<module.function>/latest.json          the key of its most recent call
    <state>/calls/<module.function>/<key>/outcome.json    the journal of one key (as a task's),
                                       attempts/ published/ checkpoint/ result-NNNNN.json

Invariants: planning writes nothing (no record, no stat-cache entry, no directory); a goal is
met only while the outputs its success published are still there as published.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import xxhash

from taskkit.function.arguments import Hashed, bind, hash_argument
from taskkit.function.code import CodeKey, code_key
from taskkit.function.facts import is_users_class
from taskkit.function.key import CallKey, changes
from taskkit.redaction import public_url, shown_url
from taskkit.runner.goal import Goal, holder_alive
from taskkit.runner.journal import Journal
from taskkit.storage.base import Store
from taskkit.storage.stores import Stores

if TYPE_CHECKING:
    from taskkit.function.spec import TaskSpec

__all__ = [
    "CallPlan",
    "Calls",
    "Explanation",
    "call_key",
    "call_status",
    "explanation",
    "latest",
    "open_journal",
    "plan_call",
    "safe_name",
]

#: What :meth:`Task.explain` answers, first word.
Said = Literal["never run", "goal met", "would run", "failed permanently", "running"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """The folder of a function's records: its qualified name in characters any store takes
    (``pkg.mod:clean`` -> ``pkg.mod.clean``; ``pkg.mod:outer.<locals>.f`` ->
    ``pkg.mod.outer._locals_.f-<digest of the name>``), bounded in length."""
    wanted = name.replace(":", ".")
    safe = _UNSAFE.sub("_", wanted).strip("._-") or "task"
    if safe != wanted or len(safe) > 120:
        # Lossy (a letter outside ASCII, <locals>, <lambda>, a very long name): the name's
        # digest keeps two such functions apart.
        if len(safe) > 100:  # the module's start and the function's end say the most
            safe = safe[:40] + "_" + safe[-59:]
        safe = safe + "-" + xxhash.xxh3_64_hexdigest(name.encode())[:12]
    return safe


class Calls(NamedTuple):
    """Where the records of task functions live: the state's store and its key there."""

    store: Store
    root: str  # ends in "/"

    @classmethod
    def open(cls, stores: Stores, state: str) -> Calls:
        store, key = stores.open(state if state.endswith("/") else state + "/")
        return cls(store, key.rstrip("/") + "/calls/")

    def folder(self, name: str) -> str:
        """The key of the records of the function ``name`` (ends in "/")."""
        return f"{self.root}{safe_name(name)}/"


def open_journal(calls: Calls, name: str, key: CallKey) -> Journal:
    """The journal of the key ``key`` of the function ``name``."""
    return Journal(calls.store, f"{calls.folder(name)}{key.hex}/")


def latest(calls: Calls, name: str) -> dict[str, Any] | None:
    """The key, as stored, of the most recent call of ``name`` that ran, if any."""
    store, key = calls.store, calls.folder(name) + "latest.json"
    found = store.load(key)
    if found is None:
        return None
    try:
        data = json.loads(found[0])
        return dict(data["key"])
    except (ValueError, KeyError, TypeError):
        return None  # half written by a call beside this one, or damaged: explains nothing


def call_key(
    task: TaskSpec,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    *,
    stores: Stores,
    environ: Mapping[str, str],
    dry_run: bool,
    shown: bool = True,
) -> CallKey:
    """The key of ``task(*args, **kwargs)``: its arguments bound (defaults applied, ``ignore``
    dropped) and hashed, its inputs listed (one listing each; a missing one raises
    :class:`~taskkit.exceptions.InputNotFound`)."""
    options = task.options
    try:
        bound = bind(task.call_signature, args, kwargs, ignore=options.ignore)
    except TypeError as exc:  # as calling the function would say it, naming the function
        raise TypeError(f"{task.name.rpartition(':')[2]}(): {exc}") from None
    cache = None
    if any(isinstance(v, PurePath) for v in bound.values()):
        from taskkit.content.statcache import StatCache

        cache = StatCache.for_run(dry_run=dry_run, environ=environ)
    try:
        hashed: dict[str, Hashed] = {
            name: hash_argument(name, value, cache=cache, keyer=options.key.get(name), shown=shown)
            for name, value in bound.items()
        }
    finally:
        if cache is not None:
            cache.close()
    inputs: dict[str, tuple[str, Mapping[str, str]]] = {}
    if options.inputs:
        from taskkit.runner.fingerprint import describe
        from taskkit.transfer.stage_plan import Input

        given = sorted(options.inputs.items())
        work = describe([], [Input(url, name) for name, url in given], [], stores)
        for (name, url), (_, files) in zip(given, work.inputs, strict=True):
            inputs[name] = (public_url(url), dict(files))
    return CallKey(
        task.name,
        task.code(),
        hashed,
        inputs,
        task.output_texts,
        values=bound,
        classes=_argument_classes(bound.values()),
    )


def _argument_classes(values: Iterable[object]) -> dict[str, CodeKey]:
    """The code of the user's own classes the arguments are instances of (a method the task
    calls on an argument is code it runs), by ``module:qualname``; each learned once."""
    found: dict[str, CodeKey] = {}
    for value in values:
        cls = type(value)
        if cls.__module__ == "builtins" or not is_users_class(cls):
            continue
        key = _CLASS_KEYS.get(cls)
        if key is None:
            key = _CLASS_KEYS[cls] = code_key(cls)
        found[f"{cls.__module__}:{cls.__qualname__}"] = key
    return found


_CLASS_KEYS: weakref.WeakKeyDictionary[type, CodeKey] = weakref.WeakKeyDictionary()


def call_status(journal: Journal, key: CallKey, stores: Stores) -> Goal:
    """Where ``key`` stands: ``met`` (its outputs still published), ``permanent``,
    ``publishing`` (a live call runs it) or ``open``."""
    found = journal.outcome()
    if found is None:
        return Goal("open", None, None, "never run with this key")
    outcome, version = found
    if outcome.state == "publishing":
        if holder_alive(journal, outcome.attempt):
            return Goal("publishing", outcome, version, f"attempt {outcome.attempt} runs it now")
        return Goal("open", outcome, version, f"attempt {outcome.attempt} was interrupted")
    if outcome.state == "success":
        if key.outputs:
            from taskkit.runner.published import gone

            missing = gone(stores, key.outputs, outcome)
            if missing is not None:
                return Goal("open", outcome, version, missing)
        return Goal("met", outcome, version, f"goal met by attempt {outcome.attempt}")
    if outcome.state == "permanent":
        return Goal("permanent", outcome, version, outcome.reason)
    return Goal("open", outcome, version, f"the last call failed: {outcome.reason}")


@dataclass(frozen=True)
class Explanation:
    """Why a call would or would not run: ``never run``, ``goal met``, ``would run``,
    ``failed permanently`` or ``running`` (another live call runs it now), and, when it would
    run after earlier calls, every part that differs from the most recent one."""

    said: Said
    reasons: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.said + (": " + "; ".join(self.reasons) if self.reasons else "")


@dataclass(frozen=True)
class CallPlan:
    """A call of a task, as its journal says now: nothing was written to find it."""

    task: str
    key: str
    journal: str  # the journal's URL, as shown
    status: Goal
    explanation: Explanation
    inputs: tuple[str, ...]  # NAME=URL, as shown
    outputs: tuple[str, ...]
    result: str
    notes: tuple[str, ...] = ()

    @property
    def runs(self) -> bool:
        """Whether the function would run."""
        return self.status.state == "open"

    def lines(self) -> list[str]:
        """The plan as ``taskkit call --dry-run`` prints it."""
        verdict = " / ".join(str(self.explanation).splitlines())  # one line, whatever it says
        lines = [
            f"call {self.task}",
            f"  key      {self.key}",
            f"  journal  {self.journal}",
            f"  verdict  {verdict}",
        ]
        lines += [f"  input    {i}" for i in self.inputs]
        lines += [f"  output   {o}" for o in self.outputs]
        lines.append(f"  result   {self.result}")
        lines += [f"  note     {n}" for n in self.notes]
        return lines


def explanation(status: Goal, key: CallKey, before: Mapping[str, Any] | None) -> Explanation:
    """What ``status`` means for a call, with what differs from ``before`` (the most recent
    recorded call of the function, as stored)."""
    if status.state == "met":
        assert status.outcome is not None
        return Explanation("goal met", (f"attempt {status.outcome.attempt} returned it",))
    if status.state == "permanent":
        return Explanation("failed permanently", (status.why,))
    if status.state == "publishing":
        return Explanation("running", (status.why,))
    if before is None:
        if status.outcome is None:
            return Explanation("never run")
        return Explanation("would run", (status.why,))
    differs = changes(before, key.as_json())
    if status.outcome is not None:
        differs = [status.why, *differs]  # this very key ran before and did not finish
    elif not differs:
        differs = ["no result is kept for this key"]
    return Explanation("would run", tuple(differs))


def plan_call(
    task: TaskSpec,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    *,
    stores: Stores,
    state: str,
    environ: Mapping[str, str],
    rerun: bool = False,
) -> CallPlan:
    """The plan of ``task(*args, **kwargs)`` with no side effect at all; ``rerun``: of a call
    that forgets its key's record first."""
    key = call_key(task, args, kwargs, stores=stores, environ=environ, dry_run=True)
    calls = Calls.open(stores, state)
    journal = open_journal(calls, task.name, key)
    status = call_status(journal, key, stores)
    if status.state == "met" and status.outcome is not None:
        from taskkit.function.kept import result_problem

        problem = result_problem(
            journal, status.outcome.work.get("result") or {}, task.options.result
        )
        if problem is not None:  # as the call would find it: it runs again
            status = Goal("open", status.outcome, status.version, problem)
    outcome = status.outcome
    if rerun and outcome is not None and status.state in ("met", "permanent"):
        said = "success" if status.state == "met" else "permanent failure"
        status = Goal(
            "open", outcome, status.version, f"forgetting the {said} of attempt {outcome.attempt}"
        )
    before = latest(calls, task.name) if status.state == "open" else None
    options = task.options
    return CallPlan(
        task=task.name,
        key=key.digest,
        journal=shown_url(journal.url("")),
        status=status,
        explanation=explanation(status, key, before),
        inputs=tuple(f"{n}={shown_url(u)}" for n, u in sorted(options.inputs.items())),
        outputs=task.output_texts,
        result=options.result,
        notes=task.code().notes,
    )
