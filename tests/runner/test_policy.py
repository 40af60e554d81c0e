"""taskkit.runner.policy: code sets, the runner's exit-code policy, its table and its
composition."""

from __future__ import annotations

import dataclasses

import pytest

from taskkit.exceptions import (
    EX_RUN_CONFIG,
    EX_RUN_DATA,
    EX_RUN_DEADLINE,
    EX_RUN_IOERR,
    EX_RUN_NOINPUT,
    EX_RUN_SOFTWARE,
    EX_RUN_TEMPFAIL,
    ConfigError,
    Conflict,
    DataError,
    InputNotFound,
    IOFailure,
    MisuseError,
    PermissionDenied,
    TaskFailure,
    TaskkitError,
    TransientError,
    UsageError,
)
from taskkit.runner.codes import CodeSet
from taskkit.runner.command import Finished
from taskkit.runner.policy import (
    DEFAULT_POLICY,
    Decision,
    Ending,
    ExitPolicy,
    Verdict,
    error_verdict,
    on_signal,
    permanent_codes,
    retryable_codes,
    success_codes,
)

S, R, P = Verdict.SUCCESS, Verdict.RETRYABLE, Verdict.PERMANENT


class Throttled(TransientError):
    """A subclass a storage layer might raise."""


def three_is_fine(ending: Ending) -> Verdict | None:
    return Verdict.SUCCESS if ending.code == 3 else None


# --- taskkit's own failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "verdict"),
    [
        (ConfigError("bad spec"), EX_RUN_CONFIG, P),
        (UsageError("bad option"), EX_RUN_CONFIG, P),
        (PermissionDenied("no access", path="/x"), EX_RUN_CONFIG, P),
        (InputNotFound("no such blob", path="in/a"), EX_RUN_NOINPUT, P),
        (DataError("digest mismatch"), EX_RUN_DATA, P),
        (IOFailure("disk full", path="/x"), EX_RUN_IOERR, R),
        (TransientError("throttled"), EX_RUN_TEMPFAIL, R),
        (Throttled("throttled again"), EX_RUN_TEMPFAIL, R),
        (Conflict("lost the race"), EX_RUN_TEMPFAIL, R),
        (MisuseError("bad call"), EX_RUN_SOFTWARE, R),
        (TaskFailure("something"), EX_RUN_SOFTWARE, R),
        (TaskkitError("anything"), EX_RUN_SOFTWARE, R),
    ],
)
def test_each_taskkit_error_has_its_band_code_and_verdict(
    error: TaskkitError, code: int, verdict: Verdict
) -> None:
    """Every class of the tree carries its EX_RUN code and verdict, and decide() uses them."""
    assert error.run_code == code
    assert error_verdict(error) is verdict
    decision = DEFAULT_POLICY.decide(Ending(code=0, error=error))
    assert decision.verdict is verdict
    assert decision.exit_code == code
    assert decision.reason.startswith(f"taskkit failed: {type(error).__name__}: ")


def test_error_reason_is_one_line() -> None:
    """A multi-line error message still gives a one-line reason."""
    decision = DEFAULT_POLICY.decide(Ending(error=ConfigError("first\nsecond")))
    assert decision.reason == "taskkit failed: ConfigError: first\\nsecond"


def test_deadline_is_retryable_and_exits_205() -> None:
    """A command stopped at the deadline exits 205, retryable, whatever it returned."""
    decision = DEFAULT_POLICY.decide(Ending(code=143, signal=15, timed_out=True))
    assert decision == Decision(R, EX_RUN_DEADLINE, "deadline reached")


def test_no_rule_makes_taskkit_failure_or_deadline_a_success() -> None:
    """Taskkit's failure and the deadline are decided before any rule, even one placed first."""

    def everything_fine(ending: Ending) -> Verdict:
        return Verdict.SUCCESS

    policy = everything_fine | ExitPolicy.from_codes(success="0,143")
    assert policy.decide(Ending(code=0, error=TransientError("upload failed"))).exit_code == 204
    assert policy.decide(Ending(code=143, signal=15, timed_out=True)).exit_code == 205
    assert policy.decide(Ending(code=3)).verdict is S


# --- from_codes: each rule and its precedence -------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        (Ending(0), Decision(S, 0, "exit code 0 is a success code")),
        (Ending(3), Decision(R, 3, "exit code 3 is not a success or permanent code: retryable")),
        (Ending(126), Decision(P, 126, "command cannot execute (126)")),
        (Ending(127), Decision(P, 127, "command not found (127)")),
        (Ending(137, 9), Decision(R, 137, "killed by SIGKILL (exit 137): retryable")),
        (Ending(143), Decision(R, 143, "killed by SIGTERM (exit 143): retryable")),
        (Ending(signal=9), Decision(R, 137, "killed by SIGKILL (exit 137): retryable")),
        (
            Ending(201),
            Decision(P, 201, "a taskkit step in the command failed (exit 201): permanent"),
        ),
        (
            Ending(204),
            Decision(R, 204, "a taskkit step in the command failed (exit 204): retryable"),
        ),
        (
            Ending(255),
            Decision(R, 255, "exit code 255 is not a success or permanent code: retryable"),
        ),
    ],
)
def test_default_policy_decisions(ending: Ending, expected: Decision) -> None:
    """The default: 0 succeeds; 126/127 and taskkit's 200-202 are permanent; the rest retry."""
    assert DEFAULT_POLICY.decide(ending) == expected


def test_permanent_codes_are_permanent_and_exit_unchanged() -> None:
    """A listed permanent code is permanent; the process exits with that code."""
    policy = ExitPolicy.from_codes(permanent="3,7-9")
    assert policy.decide(Ending(8)) == Decision(P, 8, "exit code 8 is a permanent code")
    assert policy.decide(Ending(4)).verdict is R


def test_a_permanent_signal_code_beats_the_signal_rule() -> None:
    """137 listed as permanent wins over death by signal being retryable."""
    policy = ExitPolicy.from_codes(permanent="137")
    assert policy.decide(Ending(137, 9)) == Decision(P, 137, "exit code 137 is a permanent code")
    assert policy.decide(Ending(143, 15)).verdict is R


def test_a_success_code_exits_zero() -> None:
    """A non-zero success code makes taskkit exit 0."""
    policy = ExitPolicy.from_codes(success="0,1")
    assert policy.decide(Ending(1)) == Decision(S, 0, "exit code 1 is a success code")


def test_given_retryable_codes_make_unlisted_codes_permanent() -> None:
    """With retryable listed, other codes are permanent; signals and 203-206 still retry."""
    policy = ExitPolicy.from_codes(retryable="1")
    assert policy.decide(Ending(1)) == Decision(R, 1, "exit code 1 is a retryable code")
    assert policy.decide(Ending(2)) == Decision(
        P, 2, "exit code 2 is not listed as retryable: permanent"
    )
    assert policy.decide(Ending(137, 9)).verdict is R
    assert policy.decide(Ending(204)).verdict is R
    assert policy.decide(Ending(127)).verdict is P
    assert policy.decide(Ending(0)).verdict is S


def test_an_empty_retryable_set_still_counts_as_given() -> None:
    """retryable="" says nothing is worth retrying: unlisted codes are permanent."""
    assert ExitPolicy.from_codes(retryable="").decide(Ending(1)).verdict is P


def test_a_listed_retryable_code_beats_the_shell_codes() -> None:
    """127 listed as retryable wins over "command not found" being permanent."""
    policy = ExitPolicy.from_codes(retryable="127")
    assert policy.decide(Ending(127)).verdict is R


def test_from_codes_accepts_lists_and_codesets() -> None:
    """Spec files give lists of ints; code may give CodeSets: both mean the same."""
    written = ExitPolicy.from_codes(success="0,1", permanent="3")
    assert ExitPolicy.from_codes(success=[0, 1], permanent=3) == written
    assert ExitPolicy.from_codes(success=CodeSet.parse("0-1"), permanent=[3]) == written
    assert ExitPolicy.from_codes() == DEFAULT_POLICY
    assert hash(ExitPolicy.from_codes()) == hash(DEFAULT_POLICY)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"permanent": "3", "retryable": "2-3"}, "exit code 3 is both permanent and retryable"),
        (
            {"permanent": "3-4", "retryable": "3-4"},
            "exit codes 3-4 are both permanent and retryable",
        ),
        ({"success": "0,3", "permanent": "3"}, "exit code 3 is both success and permanent"),
        ({"success": "0,3", "retryable": "3"}, "exit code 3 is both success and retryable"),
        ({"permanent": "0"}, "exit code 0 cannot be permanent"),
        ({"retryable": "0,1"}, "exit code 0 cannot be retryable"),
        ({"success": ""}, "success exit codes: none given"),
        ({"permanent": "204"}, "exit code 204 is taskkit's own, retryable, not permanent"),
        ({"retryable": "1-255"}, "exit codes 200-202 are taskkit's own, permanent"),
        ({"permanent": "3,,4"}, "permanent exit codes: an empty item in '3,,4'"),
        ({"retryable": "x"}, "retryable exit codes: 'x' is not"),
        ({"success": "0-256"}, "success exit codes: '0-256' is out of range"),
    ],
)
def test_from_codes_rejects_contradictions_in_one_line(
    options: dict[str, str], message: str
) -> None:
    """Codes in two sets, 0 as a failure, no success, taskkit's band turned round: ConfigError."""
    with pytest.raises(ConfigError) as caught:
        ExitPolicy.from_codes(**options)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


# --- Ending.of -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finished", "ending"),
    [
        (Finished(3, None, False, 1.0), Ending(3, None, False)),
        (Finished(0, None, False, 1.0), Ending(0, None, False)),
        (Finished(-9, None, False, 1.0), Ending(137, 9, False)),
        (Finished(-9, 15, False, 1.0), Ending(143, 15, False)),
        (Finished(0, 2, False, 1.0), Ending(130, 2, False)),
        (Finished(0, None, True, 1.0), Ending(143, 15, True)),
        (Finished(-9, None, True, 1.0), Ending(143, 15, True)),
    ],
)
def test_ending_of_a_finished_command(finished: Finished, ending: Ending) -> None:
    """The code is Finished.exit_code; a signal is set exactly when one ended the command."""
    assert Ending.of(finished) == ending


def test_decisions_on_real_finished_values() -> None:
    """A plain exit, a kill and a deadline, as run_logged reports them, decide as expected."""
    decide = DEFAULT_POLICY.decide
    assert decide(Ending.of(Finished(3, None, False, 1.0))) == Decision(
        R, 3, "exit code 3 is not a success or permanent code: retryable"
    )
    assert decide(Ending.of(Finished(-9, None, False, 1.0))).exit_code == 137
    assert decide(Ending.of(Finished(0, None, True, 1.0))).exit_code == EX_RUN_DEADLINE


def test_an_ending_with_nothing_to_decide_is_misuse() -> None:
    """An Ending with no code, signal, error or deadline is a bug in the caller."""
    with pytest.raises(MisuseError):
        DEFAULT_POLICY.decide(Ending())
    with pytest.raises(MisuseError):
        DEFAULT_POLICY.decide(Ending(300))


# --- composition -----------------------------------------------------------------------------


def test_a_function_placed_first_wins() -> None:
    """function | policy: the function decides first; SUCCESS exits 0."""
    policy = three_is_fine | DEFAULT_POLICY
    assert policy.decide(Ending(3)) == Decision(
        S, 0, "three_is_fine decided exit code 3 is success"
    )
    assert policy.rules[0] is three_is_fine


def test_a_function_with_no_opinion_defers() -> None:
    """A rule returning None leaves the decision to the rules after it."""
    policy = three_is_fine | DEFAULT_POLICY
    assert policy.decide(Ending(127)) == DEFAULT_POLICY.decide(Ending(127))
    assert policy.decide(Ending(4)).verdict is R


def test_policy_or_function_asks_the_function_only_when_the_policy_has_no_opinion() -> None:
    """policy | function: the default has no opinion on plain codes, so the function decides."""
    policy = DEFAULT_POLICY | three_is_fine
    assert policy.decide(Ending(3)).verdict is S
    assert policy.decide(Ending(127)).verdict is P


def test_two_policies_combine_in_order() -> None:
    """policy | policy tries the left policy's rules first."""
    left = ExitPolicy(permanent_codes("3"))
    right = ExitPolicy(retryable_codes("3-4"))
    both = left | right
    assert both.rules == (*left.rules, *right.rules)
    assert both.decide(Ending(3)).verdict is P
    assert (right | left).decide(Ending(3)).verdict is R


def test_building_blocks_make_a_policy() -> None:
    """The exported rules compose into a policy of one's own, with a readable repr."""
    policy = ExitPolicy(success_codes("0,2"), on_signal(Verdict.PERMANENT), permanent_codes("1"))
    assert policy.decide(Ending(2)).exit_code == 0
    assert policy.decide(Ending(137, 9)) == Decision(
        P, 137, "killed by SIGKILL (exit 137): permanent"
    )
    assert policy.decide(Ending(1)).verdict is P
    assert repr(policy) == (
        "ExitPolicy(success_codes('0,2'), on_signal(Verdict.PERMANENT), permanent_codes('1'))"
    )


def test_a_rule_that_fails_exit_zero_does_not_exit_zero() -> None:
    """0 means success only: a rule failing a command that exited 0 makes taskkit exit 1."""

    def outputs_missing(ending: Ending) -> Verdict:
        return Verdict.PERMANENT

    assert ExitPolicy(outputs_missing).decide(Ending(0)).exit_code == 1


def test_rules_must_be_callables_returning_verdicts() -> None:
    """A non-callable rule, or a rule returning something else than a Verdict, is misuse."""
    with pytest.raises(MisuseError):
        ExitPolicy(3)  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match="returned 'success'"):
        ExitPolicy(lambda ending: "success").decide(Ending(0))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError):
        DEFAULT_POLICY | 3  # type: ignore[operator]


def test_a_policy_with_no_rules() -> None:
    """With no rules, 0 is a success and any other code is retryable."""
    assert ExitPolicy().decide(Ending(0)).verdict is S
    assert ExitPolicy().decide(Ending(5)) == Decision(
        R, 5, "exit code 5 is not a success or permanent code: retryable"
    )


# --- table and permanent_codes ---------------------------------------------------------------

OWN_ROWS = [
    ("taskkit failed: options, spec, input, data", "permanent", "exits 200-202"),
    ("taskkit failed: local I/O, storage, internal", "retryable", "exits 203,204,206"),
    ("deadline reached", "retryable", "exits 205"),
]


def test_table_of_a_typical_policy() -> None:
    """Rows follow the rules in order, each showing only the codes it actually decides."""
    policy = ExitPolicy.from_codes(permanent="3,7-9,137")
    assert policy.table() == [
        ("0", "success", "exits 0"),
        ("3,7-9,137", "permanent", "exits the same code"),
        ("126 (cannot execute)", "permanent", "exits the same code"),
        ("127 (not found)", "permanent", "exits the same code"),
        ("200-202 (taskkit)", "permanent", "exits the same code"),
        ("203-206 (taskkit)", "retryable", "exits the same code"),
        ("129-136,138-192 (killed by a signal)", "retryable", "exits the same code"),
        ("other non-zero", "retryable", "exits the same code"),
        *OWN_ROWS,
    ]


def test_table_with_retryable_given_and_a_custom_rule() -> None:
    """A custom rule gets a row of its own; the catch-all row says unlisted codes are permanent."""
    policy = three_is_fine | ExitPolicy.from_codes(success="0,1", retryable="2")
    rows = policy.table()
    assert rows[0] == ("three_is_fine (custom rule)", "(custom rule)", "exits 0 or the code")
    assert rows[1:3] == [("0-1", "success", "exits 0"), ("2", "retryable", "exits the same code")]
    assert rows[-4:] == [("other non-zero", "permanent", "exits the same code"), *OWN_ROWS]


def test_permanent_codes_of_the_default_policy() -> None:
    """By default only 126, 127 and taskkit's 200-202 are permanent."""
    assert str(DEFAULT_POLICY.permanent_codes()) == "126-127,200-202"


def test_permanent_codes_include_the_listed_ones() -> None:
    """Listed permanent codes join the fixed ones, a signal code among them."""
    policy = ExitPolicy.from_codes(permanent="3,7-9,137")
    assert str(policy.permanent_codes()) == "3,7-9,126-127,137,200-202"


def test_permanent_codes_with_retryable_given() -> None:
    """With retryable listed, every code but success, retryable, signals and 203-206."""
    policy = ExitPolicy.from_codes(success="0,5", retryable="1-2")
    assert str(policy.permanent_codes()) == "3-4,6-128,193-202,207-255"
    assert policy.permanent_codes().ranges()[0] == (3, 4)


def test_permanent_codes_ignore_custom_rules() -> None:
    """A plain function cannot be enumerated; the other rules alone give the codes."""
    assert (three_is_fine | DEFAULT_POLICY).permanent_codes() == DEFAULT_POLICY.permanent_codes()


def test_permanent_codes_agree_with_decide() -> None:
    """For a policy of described rules, a code is listed exactly when deciding it is permanent."""
    for policy in (DEFAULT_POLICY, ExitPolicy.from_codes(permanent="3", retryable="1-2")):
        listed = policy.permanent_codes()
        for code in range(1, 256):
            assert (code in listed) == (policy.decide(Ending(code)).verdict is P), code


# --- values ----------------------------------------------------------------------------------


def test_policies_and_rules_are_frozen() -> None:
    """Neither a policy nor a rule object can be changed after it is made."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_POLICY.rules = ()  # type: ignore[misc]
    rule = permanent_codes("3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.codes = CodeSet.parse("4")  # type: ignore[attr-defined]


def test_default_policy_repr() -> None:
    """The repr lists the rules in order, each as the function that builds it."""
    assert repr(DEFAULT_POLICY) == (
        "ExitPolicy(success_codes('0'), permanent_codes('126'), permanent_codes('127'), "
        "permanent_codes('200-202'), retryable_codes('203-206'), on_signal(Verdict.RETRYABLE))"
    )


def test_verdict_values() -> None:
    """Verdicts carry the words the journal and the table use."""
    assert [verdict.value for verdict in Verdict] == ["success", "retryable", "permanent"]
