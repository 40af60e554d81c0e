"""The exit-code policy: what one attempt of ``taskkit run`` came to, and what it exits with.

After an attempt the runner builds an :class:`Ending` (the command's exit status, the signal
that ended it, whether the deadline stopped it, taskkit's own failure) and an
:class:`ExitPolicy` decides it: success, retryable or permanent, an exit code and one line of
reason. A policy is a frozen sequence of rules. A rule is any callable from an :class:`Ending`
to a :class:`Verdict`, or to ``None`` for no opinion; the first rule with an opinion decides.
Policies and rules combine with ``|``, self's rules first, like tenacity's strategies.

Invariants:

* ``taskkit run`` exits 0 exactly when the verdict is success.
* Otherwise it exits with the command's own code (128 + N after signal N), so that a shell
  and an Azure Batch exit condition see what the command meant. Taskkit's own failures and
  the deadline exit in a band of their own, 200-206 (each exception class's ``run_code``,
  :mod:`taskkit.exceptions`).
* Taskkit's own failure and the deadline are decided before any rule runs, so no rule can
  make a failed upload or a stopped command a success. A rule sees only endings of commands
  that ran to their end.
* A code in 200-206 has one meaning, whether taskkit or a ``taskkit step`` inside the command
  exits with it: 200-202 permanent, 203-206 retryable. :meth:`ExitPolicy.from_codes` refuses
  to say otherwise, so :meth:`ExitPolicy.permanent_codes` agrees with the decisions.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Union

from taskkit.exceptions import (
    EX_RUN_CONFIG,
    EX_RUN_DATA,
    EX_RUN_DEADLINE,
    EX_RUN_IOERR,
    EX_RUN_SOFTWARE,
    ConfigError,
    MisuseError,
    TaskkitError,
)
from taskkit.runner.codes import CodeSet, CodesLike

if TYPE_CHECKING:
    from taskkit.runner.command import Finished

__all__ = [
    "DEFAULT_POLICY",
    "Decision",
    "Ending",
    "ExitPolicy",
    "Rule",
    "Verdict",
    "error_verdict",
    "on_signal",
    "permanent_codes",
    "retryable_codes",
    "success_codes",
]


class Verdict(enum.Enum):
    """What an attempt came to, as retries and dependent tasks need to know it."""

    SUCCESS = "success"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


def error_verdict(error: TaskkitError) -> Verdict:
    """Permanent for what another attempt would meet again (``run_code`` 200-202), else
    retryable."""
    return Verdict.PERMANENT if error.run_code <= EX_RUN_DATA else Verdict.RETRYABLE


def _span(low: int, high: int) -> CodeSet:
    return CodeSet(frozenset(range(low, high + 1)))


_SIGNAL_CODES = _span(129, 192)  # 128 + N for Linux signals 1-64, as a shell reports them
_TASKKIT_PERMANENT = _span(EX_RUN_CONFIG, EX_RUN_DATA)
_TASKKIT_RETRYABLE = _span(EX_RUN_IOERR, EX_RUN_SOFTWARE)


class Ending(NamedTuple):
    """What one attempt came to: the command's exit status (128 + N when signal N ended it;
    ``None`` when it never ran), that signal, whether the deadline stopped it, and taskkit's
    own failure (staging, upload, journal) if there was one."""

    code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    error: TaskkitError | None = None

    @classmethod
    def of(cls, finished: Finished) -> Ending:
        """The ending of a command that :func:`taskkit.runner.command.run_logged` ran. One taskkit
        stopped (a signal it received, the deadline) ended by that signal, as in
        :attr:`~taskkit.runner.command.Finished.exit_code`."""
        code = finished.exit_code
        stopped = finished.signal_received is not None or finished.timed_out
        by_signal = stopped or finished.returncode < 0
        return cls(code, code - 128 if by_signal else None, finished.timed_out)


class Decision(NamedTuple):
    """A verdict, the code ``taskkit run`` exits with, and one line saying why."""

    verdict: Verdict
    exit_code: int
    reason: str


Rule = Callable[[Ending], Union[Verdict, None]]  # noqa: UP007 (a runtime alias, Python 3.10)


@dataclass(frozen=True)
class _CodeRule:
    """Codes of the command that mean ``verdict``. ``label`` and ``why`` say so in
    :meth:`ExitPolicy.table` and in reasons; the repr is the public function that builds it."""

    codes: CodeSet
    verdict: Verdict
    label: str = field(default="{codes}", compare=False)
    why: str = field(default="exit code {code} is a {verdict} code", compare=False)

    def __call__(self, ending: Ending) -> Verdict | None:
        return self.verdict if ending.code in self.codes else None

    def __repr__(self) -> str:
        return f"{self.verdict.value}_codes({str(self.codes)!r})"


@dataclass(frozen=True)
class _OnSignal:
    """Death by a signal: ``signal`` set, or a code 129-192 (a shell that saw its child die)."""

    verdict: Verdict
    label = "{codes} (killed by a signal)"

    def __call__(self, ending: Ending) -> Verdict | None:
        by_signal = ending.signal is not None or ending.code in _SIGNAL_CODES
        return self.verdict if by_signal else None

    def __repr__(self) -> str:
        return f"on_signal(Verdict.{self.verdict.name})"


_Known = (_CodeRule, _OnSignal)  # the rules taskkit can describe; plain functions are opaque


def _reason(rule: Rule, ending: Ending, code: int, verdict: Verdict) -> str:
    if isinstance(rule, _CodeRule):
        return rule.why.format(code=code, verdict=verdict.value)
    if isinstance(rule, _OnSignal):
        number = code - 128 if ending.signal is None else ending.signal
        name = next((s.name for s in signal.Signals if s == number), f"signal {number}")
        return f"killed by {name} (exit {code}): {verdict.value}"
    return f"{_name(rule)} decided exit code {code} is {verdict.value}"


def _name(rule: Rule) -> str:
    return rule.__name__ if hasattr(rule, "__name__") else repr(rule)


def success_codes(codes: CodesLike) -> Rule:
    """A rule: these codes of the command are a success (``taskkit run`` exits 0)."""
    return _CodeRule(CodeSet.parse(codes, what="success exit codes"), Verdict.SUCCESS)


def permanent_codes(codes: CodesLike) -> Rule:
    """A rule: these codes of the command are a permanent failure."""
    return _CodeRule(CodeSet.parse(codes, what="permanent exit codes"), Verdict.PERMANENT)


def retryable_codes(codes: CodesLike) -> Rule:
    """A rule: these codes of the command are worth another attempt."""
    return _CodeRule(CodeSet.parse(codes, what="retryable exit codes"), Verdict.RETRYABLE)


def on_signal(verdict: Verdict) -> Rule:
    """A rule: the command was ended by a signal (or exited 129-192, as a shell reports one)."""
    return _OnSignal(verdict)


_STEP = "a taskkit step in the command failed (exit {code}): {verdict}"
# Shells report 126/127 for a command that cannot run; a `taskkit step` inside exits 200-206.
_FIXED_RULES = (
    _CodeRule(
        _span(126, 126), Verdict.PERMANENT, "126 (cannot execute)", "command cannot execute (126)"
    ),
    _CodeRule(_span(127, 127), Verdict.PERMANENT, "127 (not found)", "command not found (127)"),
    _CodeRule(_TASKKIT_PERMANENT, Verdict.PERMANENT, "{codes} (taskkit)", _STEP),
    _CodeRule(_TASKKIT_RETRYABLE, Verdict.RETRYABLE, "{codes} (taskkit)", _STEP),
    _OnSignal(Verdict.RETRYABLE),
)
_OTHERWISE = "exit code {code} is not listed as retryable: {verdict}"
_OTHERWISE_PERMANENT = _CodeRule(_span(1, 255), Verdict.PERMANENT, "other non-zero", _OTHERWISE)
_OWN_ROWS = [
    ("taskkit failed: options, spec, input, data", "permanent", "exits 200-202"),
    ("taskkit failed: local I/O, storage, internal", "retryable", "exits 203,204,206"),
    ("deadline reached", "retryable", f"exits {EX_RUN_DEADLINE}"),
]


@dataclass(frozen=True, init=False, repr=False)
class ExitPolicy:
    """Rules tried in order on the ending of an attempt; the first with an opinion decides.

    With no opinion, exit code 0 is a success and any other is retryable. Taskkit's own
    failure and the deadline are decided before any rule, whatever the rules.
    """

    rules: tuple[Rule, ...]

    def __init__(self, *rules: Rule) -> None:
        for rule in rules:
            if not callable(rule):
                raise MisuseError(f"a rule maps an Ending to a Verdict or None, not {rule!r}")
        object.__setattr__(self, "rules", rules)

    def __or__(self, other: ExitPolicy | Rule) -> ExitPolicy:
        if isinstance(other, ExitPolicy):
            return ExitPolicy(*self.rules, *other.rules)
        return ExitPolicy(*self.rules, other) if callable(other) else NotImplemented

    def __ror__(self, other: Rule) -> ExitPolicy:
        return ExitPolicy(other, *self.rules) if callable(other) else NotImplemented

    def __repr__(self) -> str:
        return f"ExitPolicy({', '.join(map(_name, self.rules))})"

    def decide(self, ending: Ending) -> Decision:
        """The verdict on ``ending``, the code to exit with and why."""
        if ending.error is not None:
            error = ending.error
            said = f"taskkit failed: {type(error).__name__}: {error}".replace("\n", "\\n")
            return Decision(error_verdict(error), error.run_code, said)
        if ending.timed_out:
            return Decision(Verdict.RETRYABLE, EX_RUN_DEADLINE, "deadline reached")
        code = ending.code
        if code is None and ending.signal is not None:
            code = 128 + ending.signal
        if code is None or not 0 <= code <= 255:
            raise MisuseError(f"{ending!r} needs an exit code 0-255, an error or timed_out")
        ending = ending._replace(code=code)
        for rule in self.rules:
            verdict = rule(ending)
            if verdict is None:
                continue
            if not isinstance(verdict, Verdict):
                raise MisuseError(f"rule {_name(rule)} returned {verdict!r}, not a Verdict or None")
            reason = _reason(rule, ending, code, verdict)
            if verdict is Verdict.SUCCESS:
                return Decision(verdict, 0, reason)
            return Decision(verdict, code or 1, reason)  # 0 must mean success, whatever a rule says
        if code == 0:
            return Decision(Verdict.SUCCESS, 0, "exit code 0: success")
        return Decision(
            Verdict.RETRYABLE,
            code,
            f"exit code {code} is not a success or permanent code: retryable",
        )

    def _known(self, code: int) -> tuple[int, Verdict]:
        """The index of the rule that decides ``code`` (``len(rules)``: none) and its verdict,
        leaving out the rules taskkit cannot describe."""
        for index, rule in enumerate(self.rules):
            if isinstance(rule, _Known) and (verdict := rule(Ending(code))) is not None:
                return index, verdict
        return len(self.rules), Verdict.SUCCESS if code == 0 else Verdict.RETRYABLE

    def table(self) -> list[tuple[str, str, str]]:
        """Rows (codes, verdict, what ``taskkit run`` exits with), rule by rule, as
        ``--dry-run`` and the docs show the policy; taskkit's own failures come last."""
        groups: dict[tuple[int, Verdict], set[int]] = {}
        for code in range(256):
            groups.setdefault(self._known(code), set()).add(code)
        rows = []
        for index, rule in enumerate((*self.rules, None)):
            if rule is not None and not isinstance(rule, _Known):
                rows.append(
                    (f"{_name(rule)} (custom rule)", "(custom rule)", "exits 0 or the code")
                )
            for (at, verdict), found in groups.items():
                if at == index:
                    label = rule.label if isinstance(rule, _Known) else "{codes}"
                    if rule is None and verdict is not Verdict.SUCCESS:
                        label = "other non-zero"
                    exits = "exits 0" if verdict is Verdict.SUCCESS else "exits the same code"
                    codes = CodeSet(frozenset(found))
                    rows.append((label.format(codes=codes), verdict.value, exits))
        return rows + _OWN_ROWS

    def permanent_codes(self) -> CodeSet:
        """Every code ``taskkit run`` exits with that means a permanent failure, for Azure
        Batch ``exitConditions``. Custom function rules cannot be enumerated and are left out:
        these are the codes the policy's other rules make permanent."""
        found = (code for code in range(1, 256) if self._known(code)[1] is Verdict.PERMANENT)
        return CodeSet(frozenset(found)) | _TASKKIT_PERMANENT

    @classmethod
    def from_codes(
        cls,
        *,
        success: CodesLike = "0",
        permanent: CodesLike = "",
        retryable: CodesLike | None = None,
    ) -> ExitPolicy:
        """The runner's policy: ``success``, ``permanent``, ``retryable``, then 126/127
        (permanent), 200-206 from a ``taskkit step`` (as for taskkit), death by a signal
        (retryable). Any other non-zero code is permanent when ``retryable`` is given (it lists
        what is worth retrying), else retryable. A code may be in one set only, 0 only in
        ``success``, and 200-206 keep taskkit's meaning."""
        good = CodeSet.parse(success, what="success exit codes")
        bad = CodeSet.parse(permanent, what="permanent exit codes")
        again = CodeSet.parse("" if retryable is None else retryable, what="retryable exit codes")
        if not good:
            raise ConfigError("success exit codes: none given (0 is the usual one)")
        for name, codes in (("permanent", bad), ("retryable", again)):
            if 0 in codes:
                raise ConfigError(f"exit code 0 cannot be {name}: it means success")
        for codes, what in (
            (good & bad, "both success and permanent"),
            (good & again, "both success and retryable"),
            (bad & again, "both permanent and retryable"),
            (bad & _TASKKIT_RETRYABLE, "taskkit's own, retryable, not permanent"),
            (again & _TASKKIT_PERMANENT, "taskkit's own, permanent, not retryable"),
        ):
            if codes:
                are = f"exit code {codes} is" if len(codes) == 1 else f"exit codes {codes} are"
                raise ConfigError(f"{are} {what}")
        rules: list[Rule] = [_CodeRule(good, Verdict.SUCCESS)]
        rules += [_CodeRule(bad, Verdict.PERMANENT)] if bad else []
        rules += [_CodeRule(again, Verdict.RETRYABLE)] if again else []
        rules += [*_FIXED_RULES, *([_OTHERWISE_PERMANENT] if retryable is not None else [])]
        return cls(*rules)


DEFAULT_POLICY: ExitPolicy = ExitPolicy.from_codes()
