"""taskkit/cli/call.py: ``taskkit call MODULE:FUNCTION NAME=VALUE...`` as a real process.

The command runs through a launcher script outside the project, as the installed ``taskkit``
console script runs (``python -m`` would put the current directory on ``sys.path`` by itself,
making "the current directory is importable" vacuous). The user's functions count their real
runs in a file outside the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from runner_helpers import clean_environment, one_error

from taskkit.cli.call import local_task_id, parse_target

WORK = """
from __future__ import annotations

import enum
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import taskkit

print("importing work")  # a module that talks on stdout as it is imported


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def _count(name: str) -> None:
    with open(os.environ["CALL_RUNS"], "a") as runs:
        runs.write(name + "\\n")


@taskkit.task
def add(a: int, b: float = 1.0, tags: list[str] | None = None) -> dict[str, object]:
    _count("add")
    print("adding")
    subprocess.run([sys.executable, "-c", "print('child output')"], check=True)
    return {"sum": a + b, "tags": tags}


@taskkit.task
def kinds(
    n: int,
    ratio: float,
    flag: bool,
    color: Color,
    mode: Literal["fast", "slow"],
    where: Path,
    note: str | None = None,
) -> list[object]:
    _count("kinds")
    return [n, ratio, flag, color.name, mode, str(where), note]


@taskkit.task
def refuse(n: int) -> None:
    _count("refuse")
    raise ValueError(f"n must be even, not {n}")


@taskkit.task(retries=0)
def flaky(n: int) -> None:
    _count("flaky")
    raise ConnectionError("the service went away")


@taskkit.task(state=os.environ["CALL_PINNED_STATE"])
def pinned(n: int) -> int:
    _count("pinned")
    return n


@taskkit.task
def quits(n: int) -> None:
    _count("quits")
    sys.exit(n)


@taskkit.task(inputs={"reference": os.environ["CALL_REFERENCE"]})
def staged(n: int, reference: Path) -> list[object]:
    _count("staged")
    return [n, sorted(p.name for p in reference.iterdir())]


@taskkit.task
def place() -> list[object]:
    _count("place")
    env = os.environ
    return [os.getcwd(), env.get("AZ_BATCH_TASK_WORKING_DIR"), env.get("AZ_BATCH_TASK_ID")]


def plain(n: int) -> int:
    return n


class Holder:
    value = 3
"""

#: Modules that fail to import, each in its own way.
BROKEN = {
    "broken.py": "import os\nx = 1\nraise RuntimeError('settings missing\\nsecond line')\n",
    "needs_missing.py": "import os\nimport not_installed_anywhere\n",
    "syntax.py": "def f(:\n    pass\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "pkg/__init__.py": "",
    "pkg/deep.py": "from pkg import helper\n",
    "pkg/helper.py": "VALUE = 1\nVALUE += undefined_name\n",
}

LAUNCHER = "from taskkit.cli import main\nmain()\n"


@dataclass
class Project:
    """A user's project folder with its task module, a state folder and a count of runs."""

    root: Path
    tmp: Path

    @property
    def state(self) -> str:
        return (self.tmp / "state").as_uri()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = clean_environment(self.tmp)
        env["CALL_RUNS"] = str(self.tmp / "runs.txt")
        env["CALL_PINNED_STATE"] = (self.tmp / "pinned").as_uri()
        env["CALL_REFERENCE"] = (self.tmp / "reference").as_uri() + "/"
        env.update(extra or {})
        return env

    def call(
        self,
        *args: str,
        cwd: Path | None = None,
        state: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``taskkit call ARGS`` as a process started in ``cwd`` (the project by default)."""
        launcher = self.tmp / "bin" / "taskkit_launcher.py"
        given = ["--state", self.state] if state else []
        done = subprocess.run(
            [sys.executable, str(launcher), "call", *given, *args],
            cwd=cwd or self.root,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in done.stderr or "-v" in args, done.stderr
        return done

    def runs(self) -> list[str]:
        path = self.tmp / "runs.txt"
        return path.read_text().split() if path.exists() else []


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    (root / "work.py").write_text(WORK)
    for name, text in BROKEN.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "genome.fa").write_text(">chr1\nACGT\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "taskkit_launcher.py").write_text(LAUNCHER)
    return Project(root, tmp_path)


def test_a_second_call_returns_the_stored_result_without_running(project: Project) -> None:
    """The second identical call exits 0 with the same result and does not run the function."""
    first = project.call("work:add", "a=2", "tags=x", "tags=y", "--json")
    assert first.returncode == 0, first.stderr
    second = project.call("work:add", "a=2", "tags=x", "tags=y", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout) == {"sum": 3.0, "tags": ["x", "y"]}
    assert project.runs() == ["add"]
    other = project.call("work:add", "a=3", "--json")  # other values: another call
    assert json.loads(other.stdout) == {"sum": 4.0, "tags": None}
    assert project.runs() == ["add", "add"]


def test_json_leaves_stdout_to_the_result_alone(project: Project) -> None:
    """With --json, what the module prints at import, the function prints and its child
    process prints all go to stderr: stdout is the result and nothing else."""
    done = project.call("work:add", "a=1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"sum": 2.0, "tags": None}
    assert done.stdout.count("\n") == 1
    for said in ("importing work", "adding", "child output"):
        assert said in done.stderr


def test_without_json_the_functions_own_output_stays_on_stdout(project: Project) -> None:
    """Without --json nothing is moved: the function's prints reach stdout as in a program,
    and no result is printed."""
    done = project.call("work:add", "a=1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["importing work", "adding", "child output"]
    assert "sum" not in done.stdout


def test_values_reach_the_function_as_their_annotated_types(project: Project) -> None:
    """Each NAME=VALUE arrives as its parameter's type (int, float, bool, Enum, Literal,
    Path, Optional)."""
    (project.root / "data").mkdir()
    (project.root / "data" / "in.csv").write_text("a,b\n")
    done = project.call(
        "work:kinds",
        "n=3",
        "ratio=0.5",
        "flag=yes",
        "color=blue",
        "mode=slow",
        "where=data/in.csv",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [3, 0.5, True, "BLUE", "slow", "data/in.csv", None]


KINDS = ["n=3", "ratio=0.5", "flag=no", "color=RED", "mode=fast", "where=x"]

#: (arguments, fragments of the one error line): every bad input exits 200.
BAD_INPUTS = [
    (["work"], ["expected MODULE:FUNCTION", "'work'"]),
    (["work:"], ["expected MODULE:FUNCTION"]),
    (["work:add-1"], ["expected MODULE:FUNCTION"]),
    (["nosuch:f"], ["no module named 'nosuch'", "the current directory"]),
    (["pkg.nosuch:f"], ["no module named 'pkg.nosuch'"]),
    (["broken:f"], ["cannot import broken: RuntimeError: settings missing (broken.py:3)"]),
    (
        ["needs_missing:f"],
        [
            "cannot import needs_missing: ModuleNotFoundError:",
            "not_installed_anywhere",
            "(needs_missing.py:2)",
        ],
    ),
    (
        ["pkg.deep:f"],
        [
            "cannot import pkg.deep: NameError:",
            "undefined_name",
            f"({os.path.join('pkg', 'helper.py')}:2)",
        ],
    ),
    (["syntax:f"], ["cannot import syntax: SyntaxError:", "(syntax.py:1)"]),
    (["exits:f"], ["cannot import exits: SystemExit: 3"]),
    (["work:nope"], ["work has no 'nope'"]),
    (["work:Holder.nope"], ["work:Holder has no 'nope'"]),
    (["work:plain", "n=1"], ["work:plain is a function, not a taskkit task", "@taskkit.task"]),
    (["work:Holder.value"], ["not a taskkit task"]),
    (["work:add"], ["missing required parameter a (an integer)"]),
    (["work:add", "a=x"], ["parameter a: 'x' is not an integer"]),
    (["work:add", "a=1", "c=2"], ["unknown parameter c", "a, b, tags"]),
    (["work:add", "a=1", "a=2"], ["parameter a is given 2 times"]),
    (["work:add", "a"], ["expected NAME=VALUE", "'a'"]),
    (
        ["work:kinds", *KINDS[:3], "color=GREEN", *KINDS[4:]],
        ["parameter color", "one of RED, BLUE"],
    ),
    (["work:kinds", *KINDS[:4], "mode=quick", *KINDS[5:]], ["parameter mode", "one of fast, slow"]),
    (["work:add", "a=1", "--json", "--dry-run"], ["--json and --dry-run"]),
    ([], ["no function to call"]),
    (["work:add", "a=" + "9" * 5000], ["parameter a:", "(5000 characters)", "5000 digits"]),
    (["--state", "az://", "work:add", "a=1"], ["'az://' names no container"]),
    (["work:add", "--no-such-option"], ["No such option"]),
]


@pytest.mark.parametrize(("args", "fragments"), BAD_INPUTS)
def test_each_bad_input_is_one_line_exit_200_and_nothing_on_stdout(
    project: Project, args: list[str], fragments: list[str]
) -> None:
    """Unknown module or function, an import error in the user's module (its first line and
    where), an undecorated function, a missing or unparsable value: one line naming it, exit
    200 (the run band's configuration code), no traceback, nothing on stdout under --json,
    nothing run."""
    done = project.call(*args, *([] if "--json" in args else ["--json"]))
    assert done.returncode == 200, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("taskkit:")]
    one_error("\n".join(errors), *fragments)
    assert done.stdout == ""
    assert project.runs() == []


def test_a_path_value_that_does_not_exist_is_a_missing_input(project: Project) -> None:
    """A Path argument is an input, keyed by its content: one that is not there exits 201
    (input missing, permanent), naming the parameter, and runs nothing."""
    done = project.call("work:kinds", *KINDS[:5], "where=no/such.csv", "--json")
    assert done.returncode == 201, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("taskkit:")]
    one_error("\n".join(errors), "where", "no/such.csv")
    assert done.stdout == ""
    assert project.runs() == []


def test_a_staged_input_is_the_tasks_to_pass_not_the_command_lines(project: Project) -> None:
    """A parameter the task stages (inputs=) is not asked for: the call runs with it staged;
    giving it as NAME=VALUE is refused in one line (200), running nothing."""
    done = project.call("work:staged", "n=2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [2, ["genome.fa"]]
    refused = project.call("work:staged", "n=2", "reference=elsewhere", "--json")
    assert refused.returncode == 200
    errors = [line for line in refused.stderr.splitlines() if line.startswith("taskkit:")]
    one_error("\n".join(errors), "parameter reference is an input the task stages itself")
    assert project.runs() == ["staged"]


def test_a_permanent_failure_exits_1_now_and_later_without_running(project: Project) -> None:
    """A ValueError is permanent: exit 1 with one line naming its type and message; the next
    call with the same values exits 1 at once with the original message, not running."""
    first = project.call("work:refuse", "n=3")
    assert first.returncode == 1
    one_error(first.stderr, "work:refuse", "ValueError: n must be even, not 3")
    second = project.call("work:refuse", "n=3")
    assert second.returncode == 1
    one_error(second.stderr, "ValueError: n must be even, not 3")
    assert project.runs() == ["refuse"]


def test_a_retryable_failure_exits_75(project: Project) -> None:
    """A ConnectionError is retryable: exit 75, one line naming it; the next call runs again."""
    first = project.call("work:flaky", "n=1")
    assert first.returncode == 75
    one_error(first.stderr, "work:flaky", "ConnectionError: the service went away")
    assert project.call("work:flaky", "n=1").returncode == 75
    assert project.runs() == ["flaky", "flaky"]


@pytest.mark.parametrize("code", ["0", "3"])
def test_a_function_calling_sys_exit_is_retryable_75_not_its_code(
    project: Project, code: str
) -> None:
    """sys.exit(N) inside the function stops the call (the core records an interruption):
    the command exits 75, one line saying so, never N; the next call runs it again."""
    for _ in range(2):
        done = project.call("work:quits", f"n={code}")
        assert done.returncode == 75, done.stderr
        one_error(done.stderr, f"work:quits called sys.exit({code})")
    assert project.runs() == ["quits", "quits"]


def test_verbose_shows_the_functions_traceback(project: Project) -> None:
    """-v adds the function's traceback above the one error line (without it: one line)."""
    done = project.call("work:refuse", "n=5", "-v")
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "raise ValueError" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("taskkit: error: ")


def test_rerun_runs_a_call_whose_goal_is_met(project: Project) -> None:
    """--rerun runs the function again although its result is recorded."""
    assert project.call("work:add", "a=1").returncode == 0
    assert project.call("work:add", "a=1", "--rerun").returncode == 0
    assert project.call("work:add", "a=1").returncode == 0
    assert project.runs() == ["add", "add"]


def test_dry_run_prints_the_plan_and_runs_nothing(project: Project) -> None:
    """--dry-run prints the plan on stdout, runs nothing and writes no state."""
    done = project.call("work:add", "a=1", "--dry-run")
    assert done.returncode == 0, done.stderr
    plan = [line for line in done.stdout.splitlines() if line != "importing work"]
    assert plan
    assert project.runs() == []
    assert not (project.tmp / "state").exists()


def test_the_current_directory_and_path_dirs_are_importable(project: Project) -> None:
    """The module is found in the current directory; from elsewhere only through --path
    (relative to the current directory too)."""
    elsewhere = project.tmp / "elsewhere"
    elsewhere.mkdir()
    lost = project.call("work:add", "a=1", cwd=elsewhere)
    assert lost.returncode == 200
    one_error(lost.stderr, "no module named 'work'")
    found = project.call("--path", str(project.root), "work:add", "a=1", "--json", cwd=elsewhere)
    assert found.returncode == 0, found.stderr
    relative = project.call("work:add", "a=2", "--path", "../project", "--json", cwd=elsewhere)
    assert json.loads(relative.stdout) == {"sum": 3.0, "tags": None}


def test_state_comes_from_the_environment_when_not_given(project: Project) -> None:
    """Without --state, TASKKIT_STATE names the state: a second call there is goal met."""
    env = {"TASKKIT_STATE": project.state}
    assert project.call("work:add", "a=1", state=False, env=env).returncode == 0
    assert project.call("work:add", "a=1", state=False, env=env).returncode == 0
    assert project.runs() == ["add"]
    assert (project.tmp / "state").is_dir()


def test_state_wins_over_a_tasks_own_state_as_options_win_over_a_spec(project: Project) -> None:
    """--state ranks above the task's state= (as taskkit run's options above a spec file);
    without --state the task's own state= keeps its calls."""
    first = project.call("work:pinned", "n=1")
    assert first.returncode == 0, first.stderr
    assert "warning" not in first.stderr
    assert (project.tmp / "state").is_dir()
    assert not (project.tmp / "pinned").exists()
    assert project.call("work:pinned", "n=1", state=False).returncode == 0
    assert (project.tmp / "pinned").is_dir()
    assert project.call("work:pinned", "n=1", state=False).returncode == 0
    assert project.runs() == ["pinned", "pinned"]


def test_a_bare_local_before_the_function_is_not_taken_for_its_dir(project: Project) -> None:
    """``taskkit call --local work:add a=1``: the word after a bare --local is the function,
    not DIR; the call runs in the local node under .taskkit/ and is goal met the second time."""
    pytest.importorskip("taskkit.runner.local")
    first = project.call("--local", "work:add", "a=1", "--json", state=False)
    assert first.returncode == 0, first.stderr
    assert project.call("work:add", "a=1", "--local", state=False).returncode == 0
    assert project.runs() == ["add"]
    assert (project.root / ".taskkit").is_dir()
    assert not (project.root / "work:add").exists()


def test_a_local_call_runs_in_its_task_and_keeps_its_output_as_batch_does(
    project: Project,
) -> None:
    """On a local node the function runs in its task's working directory with the task's
    AZ_BATCH_* variables, and its task's stdout.txt and stderr.txt keep what the console
    saw: under --json the result in stdout.txt, the prints (a child's too) and taskkit's lines
    in stderr.txt."""
    pytest.importorskip("taskkit.runner.local")
    done = project.call("work:place", "--local", "--json", state=False)
    assert done.returncode == 0, done.stderr
    cwd, workdir, task_id = json.loads(done.stdout)
    task_dir = project.root / ".taskkit" / "node" / "workitems" / "local" / "job-1" / "work-place"
    assert (Path(cwd), Path(workdir), task_id) == (task_dir / "wd", task_dir / "wd", "work-place")
    assert (task_dir / "stdout.txt").read_text() == done.stdout
    assert (task_dir / "stderr.txt").read_text() == done.stderr
    added = project.call("work:add", "a=1", "--local", "--json", state=False)
    assert added.returncode == 0, added.stderr
    kept = project.root / ".taskkit" / "node" / "workitems" / "local" / "job-1" / "work-add"
    assert json.loads((kept / "stdout.txt").read_text()) == {"sum": 2.0, "tags": None}
    for said in ("importing work", "adding", "child output"):
        assert said in (kept / "stderr.txt").read_text()


def test_a_local_calls_error_line_is_kept_in_stderr_txt(project: Project) -> None:
    """A refusal after the node is made (here a bad value) is said into the task's
    stderr.txt as well as on the console."""
    pytest.importorskip("taskkit.runner.local")
    done = project.call("work:add", "a=x", "--local", state=False)
    assert done.returncode == 200
    kept = project.root / ".taskkit" / "node" / "workitems" / "local" / "job-1" / "work-add"
    assert "parameter a: 'x' is not an integer" in (kept / "stderr.txt").read_text()


def test_local_dry_run_creates_nothing(project: Project) -> None:
    """``--local --dry-run`` prints the plan and makes no folder."""
    pytest.importorskip("taskkit.runner.local")
    done = project.call("work:add", "a=1", "--dry-run", "--local", state=False)
    assert done.returncode == 0, done.stderr
    assert not (project.root / ".taskkit").exists()
    assert project.runs() == []


# -- in-process ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("work:add", ("work", "add")),
        ("pkg.sub.mod:Class.method", ("pkg.sub.mod", "Class.method")),
        ("wörk:ädd", ("wörk", "ädd")),
        ("work", None),
        ("work:", None),
        (":add", None),
        ("work:add:x", None),
        ("work.:add", None),
        ("work:a-b", None),
        ("1work:add", None),
        ("../work:add", None),
    ],
)
def test_targets_are_module_colon_dotted_names(target: str, parsed: object) -> None:
    """MODULE:FUNCTION, each side dotted Python names; nothing else (no path, no second
    colon)."""
    assert parse_target(target) == parsed


@pytest.mark.parametrize(
    "name", ["work:add", "pkg.mod:Class.method", "x" * 100 + ":f", "é:f", "a.b:c"]
)
def test_local_task_ids_are_batch_ids(name: str) -> None:
    """The local node's task id of any task name is a valid Batch id (1-64 letters, digits,
    '-', '_')."""
    import re

    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", local_task_id(name))


def test_long_task_names_keep_distinct_local_ids() -> None:
    """Two long names that share their first 64 characters get different ids."""
    base = "p" * 70
    assert local_task_id(base + ":f") != local_task_id(base + ":g")
    assert local_task_id("a.b:c") == "a-b-c"


# -- against Azurite ------------------------------------------------------------------------------


@pytest.fixture
def az_state(azurite: object) -> Iterator[tuple[str, dict[str, str]]]:
    """A state container of the test's own on Azurite: its URL and the environment to reach it."""
    from taskkit.testing import Azurite

    assert isinstance(azurite, Azurite)
    name = f"tk-call-{uuid.uuid4().hex[:12]}"
    with azurite.blob_service_client() as service:
        service.create_container(name)
        try:
            yield (
                f"az://{name}/calls",
                {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
            )
        finally:
            service.delete_container(name)


@pytest.mark.azurite
def test_a_second_call_against_azurite_exits_0_without_running(
    project: Project, az_state: tuple[str, dict[str, str]]
) -> None:
    """End to end on Azurite: the first call runs, the second exits 0 with the same result
    without running; a permanent failure is recorded there too."""
    url, env = az_state
    args = ("work:add", "a=2", "--state", url, "--json")
    first = project.call(*args, state=False, env=env)
    assert first.returncode == 0, first.stderr
    second = project.call(*args, state=False, env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout) == {"sum": 3.0, "tags": None}
    for _ in range(2):
        failed = project.call("work:refuse", "n=1", "--state", url, state=False, env=env)
        assert failed.returncode == 1
        one_error(failed.stderr, "ValueError: n must be even, not 1")
    assert project.runs() == ["add", "refuse"]
    assert env["AZURE_STORAGE_CONNECTION_STRING"] not in first.stderr + second.stderr


def test_module_text_is_plain_python() -> None:
    """The user module of these tests compiles (a typo there would make every test vacuous)."""
    compile(textwrap.dedent(WORK), "work.py", "exec")


def test_rerun_with_dry_run_says_the_record_would_be_forgotten(project: Project) -> None:
    """--rerun --dry-run plans a run (forgetting the success), not a goal met; it forgets
    nothing."""
    assert project.call("work:add", "a=1").returncode == 0
    plan = project.call("work:add", "a=1", "--rerun", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "would run: forgetting the success of attempt 1" in plan.stdout
    assert project.call("work:add", "a=1").returncode == 0
    assert project.runs() == ["add"]


def test_local_with_a_bare_target_and_no_values_is_the_call_not_its_folder(
    project: Project,
) -> None:
    """`taskkit call --local MODULE:FUNCTION` (every parameter defaulted) runs the function on
    the default node; the word is no DIR."""
    done = project.call("--local", "work:place", "--json", state=False)
    assert done.returncode == 0, done.stderr
    assert (project.root / ".taskkit" / "node").is_dir()
