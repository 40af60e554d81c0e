"""One call of a task, in this process: run once per key, results kept, failures classified,
retries, nesting, outputs, checkpoints, deadline. (Processes, signals: test_execute_processes.)"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

import taskkit
from taskkit.exceptions import TransientError
from taskkit.function.deadline import DeadlineReached
from taskkit.function.execute import call
from taskkit.function.failures import PermanentFailure
from taskkit.function.kept import INLINE_RESULT
from taskkit.function.task import Task, task

RUNS: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    RUNS.clear()


@task
def add(x: int, y: int = 2) -> int:
    RUNS.append(("add", (x, y)))
    return x + y


def test_a_second_call_with_the_same_key_returns_the_stored_result() -> None:
    """The function runs once; the hit returns the same value."""
    assert add(1) == 3
    assert add(1) == 3
    assert RUNS == [("add", (1, 2))]


def test_binding_makes_positional_keyword_and_default_one_key() -> None:
    """f(2), f(x=2) and f(2, y=<default>) are one call."""
    add(2)
    add(x=2)
    add(2, y=2)
    add(2, 2)
    assert RUNS == [("add", (2, 2))]
    add(2, 3)
    assert RUNS[-1] == ("add", (2, 3))


def test_a_bad_call_raises_as_the_function_would_and_records_nothing(own_state: Path) -> None:
    """A TypeError from binding is Python's own; no state is written."""
    with pytest.raises(TypeError, match="argument"):
        add(1, 2, 3)  # type: ignore[call-arg]
    assert not (own_state / "state").exists()


def test_a_permanent_failure_is_recorded_and_raised_again_with_its_text() -> None:
    """The first call raises the function's error; later ones PermanentFailure at once."""
    calls = []

    @task
    def bad(n: int) -> int:
        calls.append(n)
        raise ValueError(f"row {n} has no id")

    with pytest.raises(ValueError, match="row 7 has no id"):
        bad(7)
    with pytest.raises(PermanentFailure) as info:
        bad(7)
    assert calls == [7]
    assert info.value.type_name == "ValueError"
    assert info.value.message == "row 7 has no id"
    assert "raise ValueError" in info.value.traceback_text


def test_forget_and_rerun_clear_a_record_on_purpose() -> None:
    """forget() makes the next call run; invoke(rerun=True) runs even when met."""
    add(5)
    assert add.forget(5) is True
    assert add.forget(5) is False
    add(5)
    add.invoke((5,), rerun=True)
    assert RUNS == [("add", (5, 2))] * 3


def test_retryable_failures_are_retried_in_process_each_an_attempt() -> None:
    """An OSError is retried with the backoff; each try is an attempt of the journal."""
    seen: list[int] = []
    pauses: list[float] = []

    @task(retries=2)
    def flaky(n: int) -> int:
        seen.append(taskkit.attempt())
        if len(seen) < 3:
            raise OSError("share not mounted yet")
        assert taskkit.is_last_attempt()
        return n

    assert call(flaky.spec, (4,), {}, sleep=pauses.append) == 4
    assert seen == [1, 2, 3]
    assert pauses == [1.0, 2.0]


def test_retries_spent_raise_the_last_error_and_a_later_call_runs_again() -> None:
    """A retryable failure is not permanent: the next call tries again."""
    tries: list[int] = []

    @task(retries=1)
    def down(n: int) -> int:
        tries.append(n)
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError):
        call(down.spec, (1,), {}, sleep=lambda _: None)
    assert len(tries) == 2
    explained = down.explain(1)
    assert explained.said == "would run"
    assert "the last call failed" in str(explained)
    with pytest.raises(ConnectionError):
        call(down.spec, (1,), {}, sleep=lambda _: None)
    assert len(tries) == 4


def test_retry_on_and_permanent_on_decide_for_the_task() -> None:
    """A ValueError in retry_on is retried; an OSError in permanent_on is not."""
    tries: list[str] = []

    @task(retries=1, retry_on=ValueError, permanent_on=[OSError])
    def picky(kind: str) -> None:
        tries.append(kind)
        raise ValueError("v") if kind == "v" else OSError("o")

    with pytest.raises(ValueError, match="v"):
        call(picky.spec, ("v",), {}, sleep=lambda _: None)
    with pytest.raises(OSError, match="o"):
        call(picky.spec, ("o",), {}, sleep=lambda _: None)
    assert tries == ["v", "v", "o"]
    with pytest.raises(PermanentFailure):
        picky("o")


def test_inner_tasks_are_steps_a_retry_of_the_outer_does_not_run_them_again() -> None:
    """Finished inner calls return their stored results on the outer's retry."""
    inner_runs: list[int] = []

    @task
    def shard(i: int) -> int:
        inner_runs.append(i)
        return i * i

    @task(retries=1)
    def whole(n: int) -> int:
        total = sum(shard(i) for i in range(n))
        if taskkit.attempt() == 1:
            raise OSError("node lost its disk")
        return total

    assert call(whole.spec, (3,), {}, sleep=lambda _: None) == 5
    assert inner_runs == [0, 1, 2]


def test_a_result_that_would_not_come_back_the_same_is_refused_at_the_first_call() -> None:
    """A tuple under JSON is a clear error, recorded permanent (the code would do it again)."""

    @task
    def pair() -> tuple[int, int]:
        return (1, 2)

    with pytest.raises(taskkit.MisuseError, match="pair"):
        pair()
    with pytest.raises(PermanentFailure):
        pair()


def test_a_pickled_result_comes_back_as_it_went() -> None:
    """result='pickle' keeps what JSON cannot; first run and hit are equal."""

    @task(result="pickle")
    def pair() -> tuple[int, frozenset[str]]:
        return (1, frozenset({"a"}))

    assert pair() == pair() == (1, frozenset({"a"}))


def test_a_large_result_lives_in_a_blob_of_its_own(own_state: Path) -> None:
    """Over the inline limit the result is its own file, read back on a hit."""

    @task
    def big() -> str:
        return "x" * (INLINE_RESULT + 10)

    first = big()
    assert big() == first
    blobs = list((own_state / "state").rglob("result-*.json"))
    assert len(blobs) == 1
    assert json.loads(blobs[0].read_text()) == first


def test_a_damaged_stored_result_runs_the_call_again(
    own_state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A result blob changed behind taskkit's back is never returned: explain says the call
    would run, and the call runs again with one warning."""
    runs: list[int] = []

    @task
    def big() -> str:
        runs.append(1)
        return "y" * (INLINE_RESULT + 10)

    first = big()
    blob = next((own_state / "state").rglob("result-*.json"))
    blob.write_text('"tampered"')
    assert big.explain().said == "would run"
    with caplog.at_level("INFO", logger="taskkit"):
        assert big() == first
    assert len(runs) == 2
    said = [r.getMessage() for r in caplog.records if "stored result" in r.getMessage()]
    assert len(said) == 1
    assert said[0].endswith("damaged; running it again")


def test_a_json_task_never_unpickles_a_record_someone_else_wrote(own_state: Path) -> None:
    """A forged record saying 'pickle' is not a hit of a JSON task: nothing is unpickled, the
    call runs again."""
    import base64
    import pickle

    runs: list[int] = []

    @task
    def total(n: int) -> int:
        runs.append(n)
        return n * 2

    total(21)
    outcome = next((own_state / "state").rglob("outcome.json"))
    record = json.loads(outcome.read_text())
    forged = base64.b64encode(pickle.dumps(Path("/etc/forged"))).decode()
    record["work"]["result"] = {"format": "pickle", "inline": forged}
    outcome.write_text(json.dumps(record))
    assert total(21) == 42
    assert runs == [21, 21]


def test_outputs_are_published_after_success_and_a_lost_output_runs_again(
    own_state: Path,
) -> None:
    """As ``taskkit run -o``: a manifest per DEST; the goal holds only while it stands."""
    made: list[int] = []
    dest = f"file://{own_state}/results/"

    @task(outputs={"out/*.txt": dest})
    def write(n: int) -> int:
        made.append(n)
        Path("out").mkdir(exist_ok=True)
        Path("out/a.txt").write_text(str(n))
        return n

    write(1)
    manifest = own_state / "results" / "_taskkit_manifest.json"
    assert json.loads(manifest.read_text())["files"][0]["name"] == "a.txt"
    write(1)
    assert made == [1]
    manifest.unlink()
    assert write.explain(1).said == "would run"
    write(1)
    assert made == [1, 1]
    assert manifest.exists()


def test_inputs_are_staged_and_passed_as_paths_and_keyed_by_content(own_state: Path) -> None:
    """A new version of an input blob is a new key, and the explanation says which input."""
    source = own_state / "ref"
    source.mkdir()
    (source / "genome.fa").write_text("ACGT")
    seen: list[str] = []

    @task(inputs={"ref": f"file://{source}/"})
    def count(base: str, ref: Path = taskkit.staged) -> int:
        text = (ref / "genome.fa").read_text()
        seen.append(text)
        return text.count(base)

    assert count("A") == 1
    assert count("A") == 1
    (source / "genome.fa").write_text("AACGT")
    os.utime(source / "genome.fa", ns=(time.time_ns() + 10**9,) * 2)
    explained = str(count.explain("A"))
    assert "input ref: new version of" in explained, explained
    assert count("A") == 2
    assert seen == ["ACGT", "AACGT"]


def test_a_missing_input_is_a_clear_error_before_anything_runs(own_state: Path) -> None:
    """InputNotFound names the input; the function never runs."""
    ran: list[int] = []

    @task(inputs={"ref": f"file://{own_state}/nowhere/"})
    def use(ref: Path) -> None:
        ran.append(1)

    with pytest.raises(taskkit.InputNotFound):
        use()
    assert not ran


def test_the_checkpoint_dir_is_restored_for_a_later_call_on_another_node(
    own_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a failed attempt left in checkpoint_dir() is there for the next one, also with
    another local folder (another node) and the same state."""
    seen: list[list[str]] = []

    @task
    def resumable() -> int:
        folder = taskkit.checkpoint_dir()
        seen.append(sorted(p.name for p in folder.iterdir()))
        if not seen[-1]:
            (folder / "epoch-1.ckpt").write_text("weights")
            raise OSError("preempted")
        return len(seen)

    with pytest.raises(OSError, match="preempted"):
        resumable()
    monkeypatch.setenv("TASKKIT_LOCAL", str(own_state / "other-node"))
    assert resumable() == 2
    assert seen == [[], ["epoch-1.ckpt"]]


def test_the_deadline_stops_a_function_as_retryable() -> None:
    """A function past its deadline is stopped (main thread) and may be retried."""

    @task(deadline=0.2)
    def slow() -> None:
        time.sleep(30)

    started = time.monotonic()
    with pytest.raises(DeadlineReached):
        slow()
    assert time.monotonic() - started < 10
    assert slow.explain().said == "would run"


def test_explain_says_never_run_goal_met_and_each_changed_argument() -> None:
    """The three answers, and the argument that differs from the most recent call."""

    @task
    def scale(rows: int, threshold: float = 0.3) -> float:
        return rows * threshold

    assert scale.explain(10).said == "never run"
    scale(10)
    assert scale.explain(10).said == "goal met"
    assert taskkit.explain(scale, 10).said == "goal met"
    explained = scale.explain(10, threshold=0.5)
    assert explained.said == "would run"
    assert "argument threshold: 0.3 -> 0.5" in explained.reasons


def test_a_call_that_runs_although_results_exist_says_why_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A result thrown away (here: the last call with these arguments failed) is said at
    INFO; a call that only has other arguments than the last (a fan-out) at DEBUG."""
    tries: list[int] = []

    @task
    def scale(rows: int) -> int:
        tries.append(rows)
        if len(tries) == 1:
            raise OSError("disk full")
        return rows

    with pytest.raises(OSError, match="disk full"):
        scale(1)
    with caplog.at_level("INFO", logger="taskkit"):
        scale(1)
        scale(2)
    lines = [r.getMessage() for r in caplog.records if "running" in r.getMessage()]
    assert lines == ["scale(): running: the last call failed: OSError: disk full"]
    caplog.clear()
    with caplog.at_level("DEBUG", logger="taskkit"):
        scale(3)
    lines = [r.getMessage() for r in caplog.records if "running" in r.getMessage()]
    assert lines == ["scale(): running: argument rows: 2 -> 3"]


def test_plan_has_no_side_effect_at_all(own_state: Path) -> None:
    """fn.plan() writes nothing: no state, no local folder, no stat-cache."""
    before = sorted(p.name for p in own_state.iterdir())
    plan = add.plan(3)
    assert plan.runs
    assert plan.explanation.said == "never run"
    assert any("key" in line for line in plan.lines())
    assert sorted(p.name for p in own_state.iterdir()) == before


def test_the_state_defaults_to_the_local_folder_named_in_one_line(
    own_state: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without TASKKIT_STATE, records go under TASKKIT_LOCAL/state, said once."""
    monkeypatch.delenv("TASKKIT_STATE")
    monkeypatch.setenv("TASKKIT_LOCAL", str(own_state / "lab"))
    with caplog.at_level("INFO", logger="taskkit"):
        add(40)
        add(41)
    said = [r.getMessage() for r in caplog.records if "kept in" in r.getMessage()]
    assert len(said) == 1
    assert str(own_state / "lab" / "state") in said[0]
    assert (own_state / "lab" / "state" / "calls").is_dir()


def test_a_storage_failure_at_the_success_record_is_retryable() -> None:
    """taskkit's own transient error from inside the function is retryable, not permanent."""
    tries: list[int] = []

    @task
    def throttled() -> None:
        tries.append(1)
        raise TransientError("throttled")

    with pytest.raises(TransientError):
        throttled()
    with pytest.raises(TransientError):
        throttled()
    assert len(tries) == 2


def test_a_keyboard_interrupt_releases_the_claim() -> None:
    """Ctrl-C inside the function leaves no claim: the next call runs at once."""
    tries: list[int] = []

    @task
    def stopped() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise KeyboardInterrupt
        return 1

    with pytest.raises(KeyboardInterrupt):
        stopped()
    assert stopped() == 1


def test_a_task_object_is_usable_without_decoration() -> None:
    """Task(fn) runs once per key too."""

    def plain(x: int) -> int:
        RUNS.append(("plain", x))
        return x

    wrapped: Task[[int], int] = Task(plain)
    assert wrapped(1) == wrapped(1) == 1
    assert RUNS == [("plain", 1)]


def test_a_call_of_itself_with_the_same_arguments_is_refused_not_waited_for() -> None:
    """Recursion onto the same key would wait for its own claim: a clear error instead."""

    @task
    def loop(n: int) -> int:
        return loop(n) if n else 0

    @task
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    with pytest.raises(taskkit.MisuseError, match="calls itself"):
        loop(1)
    assert fib(10) == 55


def test_the_notes_of_a_code_key_are_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """A function without source says how its code is keyed, in one line, once."""
    space: dict[str, Any] = {}
    exec("def made(x):\n    return x\n", space)
    made = Task(space["made"])
    with caplog.at_level("INFO", logger="taskkit"):
        made(1)
        made(2)
    notes = [r.getMessage() for r in caplog.records if "made()" in r.getMessage()]
    noted = [n for n in notes if "running" not in n]
    assert made.code().notes
    assert len(noted) == len(made.code().notes)


def test_a_plan_first_does_not_swallow_the_state_note(
    own_state: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """explain() before the first call says nothing; the first call still names the state."""
    monkeypatch.delenv("TASKKIT_STATE")
    monkeypatch.setenv("TASKKIT_LOCAL", str(own_state / "fresh"))
    with caplog.at_level("INFO", logger="taskkit"):
        add.explain(90)
        assert not [r for r in caplog.records if "kept in" in r.getMessage()]
        add(90)
    assert [r for r in caplog.records if "kept in" in r.getMessage()]


def test_a_function_made_by_exec_without_a_module_has_a_name() -> None:
    """exec() with bare globals names no module: the task is still named and runs once."""
    space: dict[str, Any] = {}
    exec("def made(x):\n    return x + 1\n", space)
    made = Task(space["made"])
    assert made.name == "__exec__:made"
    assert made(1) == made(1) == 2


def _factory(k: int) -> Task[[int], int]:
    @task
    def scaled(x: int) -> int:
        return x * k

    return scaled


def test_a_value_captured_in_a_closure_is_part_of_the_key() -> None:
    """Two tasks a factory made with other captured values are other keys, explained."""
    assert _factory(3)(2) == 6
    four = _factory(4)
    assert four.explain(2).reasons == ("constant _factory.scaled.k: 3 -> 4",)
    assert four(2) == 8


def test_a_captured_value_that_cannot_be_keyed_is_a_note() -> None:
    """A lock in a closure is not silently ignored: the code key says so."""
    import threading

    lock = threading.Lock()

    @task
    def locked(x: int) -> int:
        with lock:
            return x

    assert any("locked.lock" in note for note in locked.code().notes)


def test_functions_whose_names_differ_outside_ascii_keep_their_own_records(
    own_state: Path,
) -> None:
    """caf and café are two folders: one's explanation never compares with the other's."""
    space: dict[str, Any] = {"__name__": "cafes"}
    exec("def caf(x):\n    return x\ndef café(x):\n    return -x\n", space)
    caf, cafe = Task(space["caf"]), Task(space["café"])
    caf(1)
    assert cafe.explain(1).said == "never run"
    cafe(1)
    folders = {p.name for p in (own_state / "state" / "calls").iterdir()}
    assert len(folders) == 2


def test_inner_calls_from_worker_threads_are_steps_of_the_task_that_started_them(
    own_state: Path,
) -> None:
    """A ThreadPoolExecutor fan-out inside a task keeps its inner records in the task's state."""
    from concurrent.futures import ThreadPoolExecutor

    @task
    def piece(i: int) -> int:
        return i * i

    @task(state=f"file://{own_state}/outer-state")
    def fan(n: int) -> int:
        with ThreadPoolExecutor(3) as pool:
            return sum(pool.map(piece, range(n)))

    assert fan(4) == 14
    kept = {p.name for p in (own_state / "outer-state" / "calls").iterdir()}
    assert any(".piece" in name for name in kept)
    assert not (own_state / "state").exists()


def test_a_call_sees_only_its_own_staged_inputs(own_state: Path) -> None:
    """What one call left in its staged input is not seen by a call with another key, and a
    call's staged folder is removed once it succeeded."""
    source = own_state / "ref"
    source.mkdir()
    (source / "a.txt").write_text("a")
    seen: list[list[str]] = []

    @task(inputs={"ref": f"file://{source}/"})
    def look(tag: str, ref: Path = taskkit.staged) -> str:
        seen.append(sorted(p.name for p in ref.iterdir()))
        (ref / f"left-by-{tag}.txt").write_text(tag)
        return tag

    look("x")
    look("y")
    assert seen == [["a.txt"], ["a.txt"]]
    assert not list((own_state / "local").rglob("left-by-*"))


def test_a_state_given_to_the_outer_call_is_the_inner_calls_state_too(own_state: Path) -> None:
    """invoke(state=...) (taskkit call --state) is passed down to the calls inside."""

    @task
    def inner(i: int) -> int:
        return i

    @task
    def outer(n: int) -> int:
        return sum(inner(i) for i in range(n))

    assert outer.invoke((3,), state=f"file://{own_state}/given") == 3
    kept = {p.name for p in (own_state / "given" / "calls").iterdir()}
    assert any(".inner" in name for name in kept)
    assert not (own_state / "state").exists()


def test_outputs_that_match_nothing_fail_with_the_tasks_advice_unless_allowed(
    own_state: Path,
) -> None:
    """A pattern matching nothing is InputNotFound naming allow_empty=True; with it the call
    succeeds and publishes an empty manifest."""
    dest = f"file://{own_state}/empty/"

    @task(outputs={"none/*.csv": dest})
    def strict() -> int:
        return 1

    @task(outputs={"none/*.csv": dest + "ok/"}, allow_empty=True)
    def lenient() -> int:
        return 2

    with pytest.raises(taskkit.InputNotFound, match=r"allow_empty=True"):
        strict()
    assert lenient() == 2
    assert (own_state / "empty" / "ok" / "_taskkit_manifest.json").exists()


def test_an_outer_failure_caused_by_an_inner_one_names_it_once(own_state: Path) -> None:
    """The outer's record says which inner task failed and how, without nesting its hint."""

    @task
    def inner_bad(n: int) -> int:
        raise KeyError("k")

    @task
    def outer_passes(n: int) -> int:
        return inner_bad(n)

    with pytest.raises(KeyError):
        inner_bad(1)  # recorded: from now on the inner call raises PermanentFailure
    with pytest.raises(PermanentFailure):
        outer_passes(1)
    with pytest.raises(PermanentFailure) as info:
        outer_passes(1)
    text = str(info.value)
    assert "inner_bad failed permanently: KeyError" in text
    assert text.count("--rerun") == 1


def test_an_inner_tasks_shorter_deadline_is_kept_inside_an_outer_one() -> None:
    """The nearer deadline is armed; the outer one still holds after the inner call."""

    @task(deadline=0.2)
    def inner_short() -> None:
        time.sleep(30)

    @task(deadline=30)
    def outer_long() -> str:
        try:
            inner_short()
        except DeadlineReached:
            return "inner stopped"
        return "inner ran on"

    started = time.monotonic()
    assert outer_long() == "inner stopped"
    assert time.monotonic() - started < 10

    @task(deadline=0.5)
    def outer_short() -> None:
        inner_quick()
        time.sleep(30)

    @task(deadline=20)
    def inner_quick() -> int:
        return 1

    started = time.monotonic()
    with pytest.raises(DeadlineReached):
        outer_short()
    assert time.monotonic() - started < 10


def _make_adder(n: int) -> Any:
    def add(x: int, n: int = n) -> int:
        return x + n

    return add


def test_a_helpers_default_bound_by_a_factory_is_part_of_the_key() -> None:
    """`def add(x, n=n)` keeps the factory's n as a default: a new n is a new key."""
    space: dict[str, Any] = {"__name__": "adders_mod", "_make_adder": _make_adder}
    exec("adder = _make_adder(5)\ndef uses(x):\n    return adder(x)\n", space)
    first = Task(space["uses"])
    assert first(2) == 7
    space["adder"] = _make_adder(6)
    second = Task(space["uses"])
    assert "constant _make_adder.add.n (default): 5 -> 6" in second.explain(2).reasons
    assert second(2) == 8


def test_a_call_of_itself_through_a_worker_thread_is_refused_not_waited_for() -> None:
    """A task submitting its own key (or a cycle) to a pool would wait on its own claim."""
    from concurrent.futures import ThreadPoolExecutor

    @task
    def selfpool(n: int) -> int:
        with ThreadPoolExecutor(2) as pool:
            return pool.submit(selfpool, n).result()

    with pytest.raises(taskkit.BadTask, match="calls itself"):
        selfpool(1)


def test_an_error_whose_message_cannot_be_shown_stays_the_functions_failure() -> None:
    """A ValueError with a broken __str__ is still the function's permanent failure (not a
    retryable error of taskkit's); a huge message is kept cut."""

    class Broken(ValueError):
        def __str__(self) -> str:
            raise RuntimeError("str blew up")

    @task
    def bad() -> None:
        raise Broken()

    @task
    def huge() -> None:
        raise ValueError("x" * 100_000)

    with pytest.raises(Broken):
        bad()
    with pytest.raises(PermanentFailure, match="cannot be shown"):
        bad()
    with pytest.raises(ValueError, match="x"):
        huge()
    with pytest.raises(PermanentFailure) as info:
        huge()
    assert len(str(info.value)) < 3000


def test_a_recursion_error_is_permanent() -> None:
    """As deterministic as a programming error: not retried for ever."""
    from taskkit.function.failures import classify

    assert classify(RecursionError()).verdict.value == "permanent"


def test_a_program_that_changes_directory_keeps_one_local_state(
    own_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative local folder is anchored where the process first asked: after os.chdir the
    same call is a hit, not a run in a new folder."""
    import uuid

    name = f"rel-{uuid.uuid4().hex[:8]}"
    monkeypatch.delenv("TASKKIT_STATE")
    monkeypatch.setenv("TASKKIT_LOCAL", name)
    elsewhere = own_state / "elsewhere"
    elsewhere.mkdir()
    add(70)
    monkeypatch.chdir(elsewhere)
    add(70)
    assert RUNS == [("add", (70, 2))]
    assert (own_state / name / "state").is_dir()
    assert not (elsewhere / name).exists()
