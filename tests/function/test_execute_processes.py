"""Task functions across real processes: counted outside the process, killed with SIGKILL,
raced by two processes on one key, and silent on the user's stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.runner_helpers import kill_9_once, wait_for

PROGRAM = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import taskkit

    BOX = Path(os.environ["BOX"])

    def mark(name):
        with open(BOX / "runs.txt", "a") as f:
            f.write(name + "\\n")

    @taskkit.task
    def shard(i: int) -> int:
        mark(f"shard {i}")
        return i * 10

    @taskkit.task
    def pipeline(n: int) -> int:
        mark("pipeline")
        total = sum(shard(i) for i in range(n))
        if os.environ.get("HOLD"):
            (BOX / "holding").write_text(str(os.getpid()))
            while not (BOX / "go").exists():
                time.sleep(0.01)
        return total

    if __name__ == "__main__":
        print("result", pipeline(int(sys.argv[1])))
    """
)


@pytest.fixture
def program(own_state: Path) -> tuple[Path, dict[str, str]]:
    box = own_state / "box"
    box.mkdir()
    path = own_state / "pipe.py"
    path.write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKKIT_", "AZ_BATCH_"))}
    root = str(Path(__file__).resolve().parents[2])
    env.update(
        BOX=str(box),
        PYTHONPATH=os.pathsep.join([root, str(own_state)]),
        TASKKIT_STATE=f"file://{own_state}/state",
        TASKKIT_LOCAL=str(own_state / "local"),
        TASKKIT_CACHE_DIR=str(own_state / "cache"),
    )
    return path, env


def runs(env: dict[str, str]) -> list[str]:
    found = Path(env["BOX"]) / "runs.txt"
    return found.read_text().splitlines() if found.exists() else []


def module_output(module: str, what: str, env: dict[str, str]) -> str:
    """What ``python -m MODULE WHAT`` prints (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-m", module, what],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def run(path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path), *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_process_does_not_run_the_call_again(
    program: tuple[Path, dict[str, str]],
) -> None:
    """Counted outside the process: the second run returns the stored result, runs nothing."""
    path, env = program
    first, second = run(path, env, "3"), run(path, env, "3")
    assert first.stdout == second.stdout == "result 30\n", first.stderr + second.stderr
    assert runs(env) == ["pipeline", "shard 0", "shard 1", "shard 2"]


def test_nothing_reaches_stdout_or_stderr_from_the_library(
    program: tuple[Path, dict[str, str]],
) -> None:
    """A program that configures no logging hears nothing: first run, hit, and a changed
    argument that runs again with a reason (logged, not printed)."""
    path, env = program
    for args in (("2",), ("2",), ("3",)):
        done = run(path, env, *args)
        assert done.returncode == 0
        assert done.stderr == ""
        assert done.stdout.startswith("result ")
        assert done.stdout.count("\n") == 1


def test_a_call_killed_mid_run_resumes_with_finished_inner_calls_skipped(
    program: tuple[Path, dict[str, str]],
) -> None:
    """SIGKILL while the outer call holds its claim: the next process takes the dead
    holder's claim over at once and runs the outer call again, the inner ones not."""
    path, env = program
    box = Path(env["BOX"])
    kill_9_once(
        [sys.executable, str(path), "3"],
        {**env, "HOLD": "1"},
        [((box / "holding").exists, "the outer call holding its claim")],
    )
    assert runs(env) == ["pipeline", "shard 0", "shard 1", "shard 2"]
    again = run(path, env, "3")
    assert again.stdout == "result 30\n", again.stderr
    assert runs(env) == ["pipeline", "shard 0", "shard 1", "shard 2", "pipeline"]


def test_two_processes_on_one_key_run_it_once(program: tuple[Path, dict[str, str]]) -> None:
    """The second waits for the first's claim and returns the stored result."""
    path, env = program
    box = Path(env["BOX"])
    hold = {**env, "HOLD": "1"}
    first = subprocess.Popen(
        [sys.executable, str(path), "2"], env=hold, stdout=subprocess.PIPE, text=True
    )
    second = None
    try:
        wait_for(lambda: (box / "holding").exists() or first.poll() is not None, "the claim")
        second = subprocess.Popen(
            [sys.executable, "-c", _WAITER, str(path)],
            env=hold,
            stdout=subprocess.PIPE,
            text=True,
        )
        log = box / "waiter.log"
        wait_for(lambda: "waiting for it" in (log.read_text() if log.exists() else ""), "wait")
        (box / "go").write_text("")
        out_first, _ = first.communicate(timeout=60)
        out_second, _ = second.communicate(timeout=60)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert out_first == "result 10\n"
    assert out_second == "result 10\n"
    assert runs(env).count("pipeline") == 1


# The second process: the same program, logging to a file so the test sees it wait.
_WAITER = textwrap.dedent(
    """
    import logging, os, runpy, sys
    logging.basicConfig(filename=os.path.join(os.environ["BOX"], "waiter.log"), level=logging.INFO)
    sys.argv = [sys.argv[1], "2"]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def test_a_script_run_as_a_program_and_imported_is_one_function(
    program: tuple[Path, dict[str, str]],
) -> None:
    """`python pipe.py` and `import pipe` key their calls alike: the second hits."""
    path, env = program
    assert run(path, env, "2").stdout == "result 10\n"
    imported = subprocess.run(
        [sys.executable, "-c", "import pipe; print('result', pipe.pipeline(2))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert imported.stdout == "result 10\n", imported.stderr
    assert runs(env) == ["pipeline", "shard 0", "shard 1"]


def test_an_edit_of_a_helper_in_another_module_is_explained_and_runs_again(
    own_state: Path, program: tuple[Path, dict[str, str]]
) -> None:
    """A helper of the user's package edited between two processes: explain names it, a
    comment or docstring edit does not count, and the call runs again once."""
    _, env = program
    package = own_state / "lab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    helpers = package / "helpers.py"
    helpers.write_text("LIMIT = 3\n\ndef clean(x):\n    return x * 2\n")
    (package / "flow.py").write_text(
        textwrap.dedent(
            """
            import os, sys
            import taskkit
            from lab.helpers import clean, LIMIT

            @taskkit.task
            def flow(n: int) -> int:
                with open(os.path.join(os.environ["BOX"], "runs.txt"), "a") as f:
                    f.write("flow\\n")
                return clean(n) + LIMIT

            if __name__ == "__main__":
                if sys.argv[1] == "explain":
                    print(flow.explain(2))
                else:
                    print(flow(2))
            """
        )
    )

    def flow(what: str) -> str:
        return module_output("lab.flow", what, env)

    assert flow("run") == "7"
    helpers.write_text('LIMIT = 3\n\ndef clean(x):\n    """Doubles."""\n    return x * 2  # why\n')
    assert flow("explain").startswith("goal met")
    helpers.write_text("LIMIT = 3\n\ndef clean(x):\n    return x * 3\n")
    assert flow("explain") == "would run: code of clean() changed"
    assert flow("run") == "9"
    helpers.write_text("LIMIT = 4\n\ndef clean(x):\n    return x * 3\n")
    assert flow("explain") == "would run: constant LIMIT: 3 -> 4"
    assert runs(env) == ["flow", "flow"]


def test_an_edit_of_an_arguments_own_class_runs_the_call_again(
    own_state: Path, program: tuple[Path, dict[str, str]]
) -> None:
    """A method the task calls on its argument is code it runs: editing the argument's class
    (in the user's package) is named by explain, and the call runs again."""
    _, env = program
    package = own_state / "cfgs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    models = package / "models.py"
    models.write_text(
        "from dataclasses import dataclass\n\n@dataclass\nclass Cfg:\n    a: int\n\n"
        "    def compute(self):\n        return self.a * 2\n"
    )
    (package / "flow.py").write_text(
        textwrap.dedent(
            """
            import sys
            import taskkit
            from cfgs.models import Cfg

            @taskkit.task
            def run(cfg) -> int:
                return cfg.compute()

            if __name__ == "__main__":
                print(run.explain(Cfg(3)) if sys.argv[1] == "explain" else run(Cfg(3)))
            """
        )
    )

    def flow(what: str) -> str:
        return module_output("cfgs.flow", what, env)

    assert flow("run") == "6"
    assert flow("explain").startswith("goal met")
    models.write_text(models.read_text().replace("self.a * 2", "self.a * 3"))
    assert flow("explain") == "would run: code of class Cfg changed (a class of an argument)"
    assert flow("run") == "9"


def test_a_task_fans_out_over_a_process_pool_and_each_call_runs_once(
    own_state: Path, program: tuple[Path, dict[str, str]]
) -> None:
    """ProcessPoolExecutor.map(task, ...) pickles the task by name; each key runs once, in
    whichever process, and a second program runs none."""
    _, env = program
    (own_state / "pool_prog.py").write_text(
        textwrap.dedent(
            """
            import os
            from concurrent.futures import ProcessPoolExecutor
            import taskkit

            @taskkit.task
            def sq(x: int) -> int:
                with open(os.path.join(os.environ["BOX"], "runs.txt"), "a") as f:
                    f.write(f"sq {x}\\n")
                return x * x

            if __name__ == "__main__":
                with ProcessPoolExecutor(2) as pool:
                    print(sum(pool.map(sq, [1, 2, 3])))
            """
        )
    )
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(own_state / "pool_prog.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.stdout == "14\n", done.stderr
    assert sorted(runs(env)) == ["sq 1", "sq 2", "sq 3"]
