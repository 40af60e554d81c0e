"""The plan of what to remove before a command runs (taskkit/runner/leftovers_plan.py): pure."""

from __future__ import annotations

import pytest

from taskkit.runner.leftovers_ledger import Ledger, Opened, Product
from taskkit.runner.leftovers_plan import Removal, Tidy, plan

A, B, C = "xxh3-128:" + "a" * 32, "xxh3-128:" + "b" * 32, "xxh3-128:" + "c" * 32


def dead(entry: Opened) -> bool:
    return False


def running(entry: Opened) -> bool:
    return True


def opened(work: str, before: dict[str, tuple[int, int, int]], *patterns: str) -> Opened:
    return Opened(1, work, patterns or ("out/**",), "host/boot", 4242, "77", before)


def test_without_a_ledger_nothing_is_removed() -> None:
    """No ledger (first attempt here, or an older taskkit): whatever matches is kept."""
    tidy = plan(None, {"out/a.csv": (1, 2, 3)}, {"out/**": {"out/a.csv"}}, A, (), dead)
    assert tidy == Tidy((), {}, (), ())


def test_products_of_other_work_go_and_those_of_this_work_stay() -> None:
    """Each recorded product still as recorded: removed when another work made it, kept (and
    still recorded) when this work did; removals come sorted."""
    ledger = Ledger(
        {
            "out/b.csv": Product(A, (2, 1, 1)),
            "out/a.csv": Product(A, (1, 1, 1)),
            "out/mine.csv": Product(B, (3, 1, 1)),
            "out/older.csv": Product(C, (4, 1, 1)),
        },
        (),
    )
    files = {"out/a.csv": (1, 1, 1), "out/b.csv": (2, 1, 1), "out/mine.csv": (3, 1, 1)}
    files["out/older.csv"] = (4, 1, 1)
    tidy = plan(ledger, files, {"out/**": set(files)}, B, (), dead)
    assert tidy.removals == (
        Removal("out/a.csv", A),
        Removal("out/b.csv", A),
        Removal("out/older.csv", C),
    )
    assert tidy.products == {"out/mine.csv": Product(B, (3, 1, 1))}
    assert plan(ledger, files, {"out/**": set(files)}, A, (), dead).removals == (
        Removal("out/mine.csv", B),
        Removal("out/older.csv", C),
    )


@pytest.mark.parametrize(
    "now",
    [
        None,  # gone
        (1, 1, 2),  # rewritten (mtime)
        (1, 5, 1),  # size
        (9, 1, 1),  # replaced by another file (inode)
    ],
)
def test_a_product_changed_or_gone_since_is_not_ours_any_more(
    now: tuple[int, int, int] | None,
) -> None:
    """A product whose identity moved since it was recorded (someone else wrote there) is
    neither removed nor kept in the ledger."""
    ledger = Ledger({"out/a.csv": Product(A, (1, 1, 1))}, ())
    files = {} if now is None else {"out/a.csv": now}
    tidy = plan(ledger, files, {"out/**": set(files)}, B, (), dead)
    assert tidy.removals == ()
    assert tidy.products == {}


def test_an_input_staged_now_is_never_removed() -> None:
    """A product of other work at a path this attempt staged an input to (e.g. skipped as
    identical) is the input now: kept, and dropped from the products."""
    ledger = Ledger({"out/ref.fa": Product(A, (1, 1, 1)), "out/x": Product(A, (2, 1, 1))}, ())
    files = {"out/ref.fa": (1, 1, 1), "out/x": (2, 1, 1)}
    tidy = plan(ledger, files, {"out/**": set(files)}, B, {"out/ref.fa"}, dead)
    assert tidy.removals == (Removal("out/x", A),)
    assert tidy.products == {}


def test_an_attempt_killed_mid_command_is_closed_from_what_it_left() -> None:
    """An open entry whose process is gone: what its patterns match that was not there before
    its command, or is there changed, is its work's product; what was there unchanged (the
    user's) is not; a path its patterns do not cover is not looked at."""
    before = {"out/user.txt": (1, 1, 1), "out/rewritten.csv": (2, 1, 1)}
    ledger = Ledger({}, (opened(A, before, "out/*"),))
    files = {
        "out/user.txt": (1, 1, 1),
        "out/rewritten.csv": (2, 9, 9),
        "out/new.csv": (3, 1, 1),
        "other/new.csv": (4, 1, 1),
    }
    matched = {"out/*": {"out/user.txt", "out/rewritten.csv", "out/new.csv"}}
    matched["other/*"] = {"other/new.csv"}
    tidy = plan(ledger, files, matched, B, (), dead)
    assert tidy.removals == (Removal("out/new.csv", A), Removal("out/rewritten.csv", A))
    assert tidy.running == ()
    same = plan(ledger, files, matched, A, (), dead)
    assert same.removals == ()
    assert same.products == {
        "out/new.csv": Product(A, (3, 1, 1)),
        "out/rewritten.csv": Product(A, (2, 9, 9)),
    }


def test_a_killed_attempt_does_not_take_over_what_another_attempt_recorded() -> None:
    """An attempt of work A killed while an attempt of work B ran beside it and ended: B's
    recorded products (unchanged) stay B's, though they appeared after A's command began;
    one A rewrote becomes A's."""
    ledger = Ledger(
        {"out/b.csv": Product(B, (2, 1, 1)), "out/both.csv": Product(B, (3, 1, 1))},
        (opened(A, {}, "out/**"),),
    )
    files = {"out/a.csv": (1, 1, 1), "out/b.csv": (2, 1, 1), "out/both.csv": (3, 7, 7)}
    tidy = plan(ledger, files, {"out/**": set(files)}, B, (), dead)
    assert tidy.removals == (Removal("out/a.csv", A), Removal("out/both.csv", A))
    assert tidy.products == {"out/b.csv": Product(B, (2, 1, 1))}


def test_an_attempt_still_running_here_keeps_its_files() -> None:
    """An open entry whose process lives: the files it is writing and its work's recorded
    products are left alone, its entry stays open, and a note says why; products of a third
    work still go."""
    ledger = Ledger(
        {"out/old.csv": Product(A, (5, 1, 1)), "out/third.csv": Product(C, (6, 1, 1))},
        (opened(A, {"out/old.csv": (5, 1, 1), "out/third.csv": (6, 1, 1)}, "out/**"),),
    )
    files = {"out/writing.csv": (1, 1, 1), "out/old.csv": (5, 1, 1), "out/third.csv": (6, 1, 1)}
    tidy = plan(ledger, files, {"out/**": set(files)}, B, (), running)
    assert tidy.removals == (Removal("out/third.csv", C),)
    assert tidy.running == ledger.opened
    assert len(tidy.notes) == 1
    assert "attempt 1 of other work" in tidy.notes[0]
    assert "left alone" in tidy.notes[0]


def test_a_killed_attempt_is_charged_only_what_changed_before_its_command_was_gone() -> None:
    """Given when its command was over: a new or rewritten file whose change time is not
    after that moment is the killed attempt's; one changed later (the user's new file, the
    user's edit of a file that was there before) is not, so it is neither removed nor
    recorded; the entry is settled and no note is needed."""
    before = {"out/kept.txt": (1, 1, 1), "out/edited.txt": (2, 1, 1)}
    ledger = Ledger({}, (opened(A, before, "out/**"),))
    files = {
        "out/kept.txt": (1, 1, 1),
        "out/edited.txt": (2, 5, 5),
        "out/partial.csv": (3, 1, 1),
        "out/at-the-end.csv": (4, 1, 1),
        "out/mine.txt": (5, 1, 1),
    }
    changed = {
        "out/kept.txt": 10,
        "out/edited.txt": 101,
        "out/partial.csv": 50,
        "out/at-the-end.csv": 100,
        "out/mine.txt": 101,
    }
    matched = {"out/**": set(files)}
    tidy = plan(ledger, files, matched, B, (), dead, changed=changed, ended=lambda e: 100)
    assert tidy.removals == (Removal("out/at-the-end.csv", A), Removal("out/partial.csv", A))
    assert tidy.products == {}
    assert tidy.notes == ()
    assert tidy.settled == ledger.opened
    same = plan(ledger, files, matched, A, (), dead, changed=changed, ended=lambda e: 100)
    assert set(same.products) == {"out/at-the-end.csv", "out/partial.csv"}


def test_without_the_moment_a_killed_attempt_is_charged_all_and_a_note_names_the_files() -> None:
    """No moment known for one killed attempt (no tombstone): every new or rewritten file is
    its, as before, and one note names its attempt, its work and those files; another killed
    attempt whose moment is known is bounded by it and gets no note."""
    ledger = Ledger(
        {},
        (
            opened(A, {}, "out/*.csv")._replace(attempt=1),
            opened(C, {}, "log/*")._replace(attempt=2),
        ),
    )
    files = {"out/a.csv": (1, 1, 1), "out/b.csv": (2, 1, 1), "log/late": (3, 1, 1)}
    matched = {"out/*.csv": {"out/a.csv", "out/b.csv"}, "log/*": {"log/late"}}
    changed = {"out/a.csv": 5, "out/b.csv": 500, "log/late": 500}

    def ended(entry: Opened) -> int | None:
        return None if entry.attempt == 1 else 100

    tidy = plan(ledger, files, matched, B, (), dead, changed=changed, ended=ended)
    assert tidy.removals == (Removal("out/a.csv", A), Removal("out/b.csv", A))
    assert tidy.notes == (
        f"attempt 1 ({A}) was interrupted and when its command ended is not known, so what "
        "its output patterns match that is new or changed since it started is taken for its "
        "outputs (2 files): out/a.csv, out/b.csv",
    )


def test_removal_notes_name_the_work_and_the_first_few_files() -> None:
    """One line per earlier work, counting every file and naming five."""
    removals = (*(Removal(f"out/{n}.csv", A) for n in range(7)), Removal("x", B))
    lines = Tidy(removals, {}, (), ()).removal_notes()
    assert lines == [
        f"removed 7 outputs of earlier work ({A}): "
        "out/0.csv, out/1.csv, out/2.csv, out/3.csv, out/4.csv and 2 more",
        f"removed 1 output of earlier work ({B}): x",
    ]
