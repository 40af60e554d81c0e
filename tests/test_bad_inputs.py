"""R3, the bad-input corpus (bench/bad_inputs.py): every case exits with its documented code,
says what is wrong in one line, shows no traceback or credential, and changes nothing the
command does not own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The corpus lives in bench/ so that bench/reliability.py can run it too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from bad_inputs import CASES, FAKE_KEY, Case, check, run_all

#: Under pytest-xdist the corpus goes to one worker (``--dist loadgroup``), which runs every
#: case once for the module fixture below.
pytestmark = pytest.mark.xdist_group("bad-inputs")

#: Cases run at once: each is a Python process that mostly starts up, so two cores keep four
#: busy, and the whole corpus stays well under a minute.
JOBS = 4


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[str]]:
    """The problems of every case selected in this session, found by running them together."""
    wanted = {
        item.callspec.params["case"].name
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")
    }
    chosen = [c for c in CASES if c.name in wanted]
    found = run_all(tmp_path_factory.mktemp("bad-inputs"), dict(os.environ), JOBS, chosen)
    return {c.name: problems for c, problems in found}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, outcomes: dict[str, list[str]]) -> None:
    """The case's exit code, one clear line, no traceback, nothing changed it does not own."""
    assert outcomes[case.name] == []


def test_corpus_covers_every_command() -> None:
    """At least 60 cases, and at least 8 for local run and for task JSON each."""
    counts = {c.command: sum(1 for d in CASES if d.command == c.command) for c in CASES}
    assert len(CASES) >= 60
    for command in ("hash", "stage", "upload", "run", "step", "call", "spec"):
        assert counts.get(command, 0) >= 4, command
    assert counts["local run"] >= 8
    assert counts["task json"] >= 8
    assert len({c.name for c in CASES}) == len(CASES)


def test_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The checker fails a wrong code, a line missing its words, a file the command does not
    own, a credential shown, and two lines where one is due."""
    env = dict(os.environ)
    wrong_code = Case("c1", "hash", ("hash", "nothere"), 0, ("nothere",))
    assert check(wrong_code, tmp_path / "1", env) == ["exit 66, not 0"]
    wrong_words = Case("c2", "hash", ("hash", "nothere"), 66, ("elsewhere",))
    (problem,) = check(wrong_words, tmp_path / "2", env)
    assert problem.startswith("the line does not mention 'elsewhere'")
    not_owned = Case(
        "c3",
        "stage",
        ("stage", "-i", "file://{root}/a.txt=b.txt"),
        0,
        ("staged",),
        files={"a.txt": "a"},
    )
    assert "made 'b.txt', which the command does not own" in check(not_owned, tmp_path / "3", env)
    shown = Case("c4", "hash", ("hash", FAKE_KEY), 66, ("no such file",))
    assert check(shown, tmp_path / "4", env) == ["a credential on stderr"]
    two_lines = Case(
        "c5",
        "run",
        (
            "run",
            "--state",
            "file://{root}/s",
            "--job-id",
            "j",
            "--task-id",
            "t",
            "-i",
            "file://{root}/gone=x",
            "--",
            "true",
        ),
        201,
        ("permanent",),
        owns=("s",),
    )
    assert any("stderr has 2 lines" in p for p in check(two_lines, tmp_path / "5", env))
