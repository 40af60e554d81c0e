"""``taskkit run``'s transfer options, its durations' bounds and what it says about transfers.

The transfer options (``-j``, ``--cache-dir``, ``--no-node-cache``, ``--cache-max-bytes``,
``--retries``, ``--retry-budget``, ``--progress-interval``, ``-v``) are those of ``taskkit
stage``/``upload``; from the command line, ``TASKKIT_*`` or a spec file, each must reach the
stage and upload of an attempt. Runs whose calls are recorded go in this process (``invoke``),
with ``taskkit.transfer.stage.stage`` and ``taskkit.transfer.upload.upload`` wrapped; the others
are real
processes.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from runner_helpers import Task, invoke, one_error, sh, wait_for

import taskkit.cli.report
from taskkit.cli.report import RunReport
from taskkit.exceptions import EX_RUN_CONFIG
from taskkit.runner.spec import LONGEST, RunSpec
from taskkit.runner.transfers import Teller
from taskkit.transfer.telling import Telling

Calls = dict[str, dict[str, Any]]
DAY = 86400.0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """The keyword arguments of the last stage() and upload() of a run, which still go."""
    seen: Calls = {}
    # By module: ``taskkit.transfer.upload`` the attribute is the function the package exports.
    stager = importlib.import_module("taskkit.transfer.stage")
    uploader = importlib.import_module("taskkit.transfer.upload")
    real_stage, real_upload = stager.stage, uploader.upload

    def stage(inputs: Any, **kw: Any) -> Any:
        seen["stage"] = kw
        return real_stage(inputs, **kw)

    def upload(outputs: Any, **kw: Any) -> Any:
        seen["upload"] = kw
        return real_upload(outputs, **kw)

    monkeypatch.setattr(stager, "stage", stage)
    monkeypatch.setattr(uploader, "upload", upload)
    return seen


class World:
    """A source folder, a destination and a node's shared directory under ``root``; each
    :meth:`run` is a new task (a run of a task whose goal is met would transfer nothing)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "src").mkdir()
        (root / "src" / "a.txt").write_text("alpha\n")
        (root / "src" / "b.txt").write_text("beta\n")
        self.shared = root / "shared"
        self.runs = 0

    def task(self) -> Task:
        self.runs += 1
        return Task(self.root, task=f"task-{self.runs}")

    def options(self) -> list[str]:
        return ["-i", f"file://{self.root / 'src'}/=in/", "-o", f"in/*=file://{self.root}/dest/"]

    def spec(self, values: dict[str, object]) -> list[str]:
        path = self.root / f"spec-{self.runs}.toml"
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        return ["--spec", str(path)]

    def run(
        self,
        *options: str,
        env: dict[str, str] | None = None,
        spec: dict[str, object] | None = None,
    ) -> tuple[int, str, str]:
        task = self.task()
        given = [*self.options(), *options, *(self.spec(spec) if spec else [])]
        base = {**task.env, "AZ_BATCH_NODE_SHARED_DIR": str(self.shared)}
        return invoke(task.args(["true"], *given), env={**base, **(env or {})})


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _teller(call: dict[str, Any]) -> Teller:
    teller = call["observer"]
    assert isinstance(teller, Teller)
    return teller


def _console(call: dict[str, Any]) -> RunReport:
    """The command line's observer, which the attempt's transfers tell on to."""
    console = _teller(call).observer
    assert isinstance(console, RunReport)
    return console


def _cache_root(call: dict[str, Any]) -> Path | None:
    cache = call["node_cache"]
    return None if cache is None else cache.root


#: setting -> what stage() was given for it; upload() gets the same where it takes it.
SEEN: dict[str, Callable[[dict[str, Any]], object]] = {
    "jobs": lambda c: c["jobs"],
    "cache_dir": _cache_root,
    "no_node_cache": lambda c: c["node_cache"] is None,
    "cache_max_bytes": lambda c: c["node_cache"].max_bytes,
    "retries": lambda c: c["retry"].attempts,
    "retry_budget": lambda c: c["retry"].budget,
    "progress_interval": lambda c: _console(c).interval,
    "verbose": lambda c: _teller(c).verbose and _console(c).verbose,
}
IN_UPLOAD = ("jobs", "retries", "retry_budget", "progress_interval", "verbose")

# setting, spec value, env text, command-line args, and what each source gives stage().
PRECEDENCE: list[tuple[str, object, str, list[str], tuple[object, object, object]]] = [
    ("jobs", 2, "3", ["-j", "4"], (2, 3, 4)),
    ("cache_dir", "{root}/c1", "{root}/c2", ["--cache-dir", "{root}/c3"], ("c1", "c2", "c3")),
    ("cache_max_bytes", "1M", "2M", ["--cache-max-bytes", "3M"], (1 << 20, 2 << 20, 3 << 20)),
    ("retries", 2, "3", ["--retries", "4"], (2, 3, 4)),
    ("retry_budget", "5s", "6", ["--retry-budget", "7s"], (5.0, 6.0, 7.0)),
    ("progress_interval", "1m", "2m", ["--progress-interval", "3m"], (60.0, 120.0, 180.0)),
    # A flag on the command line can only turn a setting on: the env turns the spec's off.
    ("no_node_cache", True, "0", ["--no-node-cache"], (True, False, True)),
    ("verbose", True, "0", ["-v"], (True, False, True)),
]
DEFAULTS = {
    "jobs": None,
    "cache_dir": "shared/taskkit/cache",
    "cache_max_bytes": None,
    "retries": 6,
    "retry_budget": 60.0,
    "progress_interval": 10.0,
    "no_node_cache": False,
    "verbose": False,
}


def _expected(world: World, setting: str, value: object) -> object:
    if setting == "cache_dir":
        return world.root / str(value)
    return value


@pytest.mark.parametrize(
    ("setting", "in_spec", "in_env", "on_line", "gives"), PRECEDENCE, ids=[p[0] for p in PRECEDENCE]
)
def test_each_transfer_setting_reaches_stage_and_upload_cli_over_env_over_spec(
    world: World,
    calls: Calls,
    setting: str,
    in_spec: object,
    in_env: str,
    on_line: list[str],
    gives: tuple[object, object, object],
) -> None:
    """Each transfer setting reaches the attempt's stage() (and upload()), from the default,
    the spec file, TASKKIT_* over the spec, and the command line over both."""
    root = str(world.root)
    key = setting.replace("_", "-")
    variable = "TASKKIT_NODE_CACHE" if setting == "cache_dir" else f"TASKKIT_{setting.upper()}"
    spec = {key: in_spec.format(root=root) if isinstance(in_spec, str) else in_spec}
    env = {variable: in_env.format(root=root)}
    line = [arg.format(root=root) for arg in on_line]
    runs: list[tuple[list[str], dict[str, str], dict[str, object]]] = [
        ([], {}, {}),
        ([], {}, spec),
        ([], env, spec),
        (line, env, spec),
    ]
    wanted = [DEFAULTS[setting], *gives]
    for (options, environ, values), want in zip(runs, wanted, strict=True):
        calls.clear()
        code, _, err = world.run(*options, env=environ, spec=values)
        assert code == 0, err
        expected = _expected(world, setting, want)
        assert SEEN[setting](calls["stage"]) == expected, (options, environ, values)
        if setting in IN_UPLOAD:
            assert SEEN[setting](calls["upload"]) == expected


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--jobs", "0"),
        ("--jobs", "many"),
        ("--retries", "0"),
        ("--retry-budget", "-1"),
        ("--retry-budget", "soon"),
        ("--progress-interval", "0.01"),
        ("--progress-interval", "181d"),
        ("--cache-max-bytes", "lots"),
        ("--cache-max-bytes", "-5M"),
        ("--cache-dir", ""),
    ],
)
def test_a_bad_transfer_option_is_200_with_one_line_naming_it(
    world: World, option: str, value: str
) -> None:
    """A bad transfer option on the command line: exit 200, one line naming the option, and
    the command is not run."""
    task = world.task()
    code, _, err = invoke(task.args(sh(task.counted("cmd")), option, value), env=task.env)
    assert code == EX_RUN_CONFIG
    one_error(err, option)
    assert task.count("cmd") == 0


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("jobs", "0"),
        ("retries", "-2"),
        ("retry_budget", "later"),
        ("progress_interval", "0"),
        ("cache_max_bytes", "10X"),
        ("no_node_cache", "perhaps"),
        ("verbose", "loud"),
    ],
)
def test_a_bad_transfer_setting_in_the_env_or_a_spec_is_200_naming_it(
    world: World, setting: str, value: str
) -> None:
    """The same settings from TASKKIT_* or a spec file: exit 200, one line naming the
    variable, or the file and its key; the command is not run."""
    variable = f"TASKKIT_{setting.upper()}"
    task = world.task()
    code, _, err = invoke(task.args(sh(task.counted("cmd"))), env={**task.env, variable: value})
    assert code == EX_RUN_CONFIG
    one_error(err, variable)
    key = setting.replace("_", "-")
    spec = world.spec({key: value})
    code, _, err = invoke(task.args(sh(task.counted("cmd")), *spec), env=task.env)
    assert code == EX_RUN_CONFIG
    one_error(err, spec[1], key)
    assert task.count("cmd") == 0


# -- durations ----------------------------------------------------------------------------------

#: option, the longest value accepted, and one second more.
BOUNDS = [
    ("deadline", "180d", "15552001"),
    ("log-interval", "60d", "5184001"),
    ("checkpoint-interval", "180d", "15552001"),
]


@pytest.mark.parametrize("source", ["command line", "environment", "spec file"])
@pytest.mark.parametrize(("key", "longest", "beyond"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_a_duration_beyond_its_bound_is_200_at_parse_time_from_any_source(
    world: World, key: str, longest: str, beyond: str, source: str
) -> None:
    """--deadline, --log-interval and --checkpoint-interval one second past their bound (or
    absurdly past it) are refused before anything runs, from each source, naming the key;
    the bound itself is accepted."""
    task = world.task()
    variable = "TASKKIT_" + key.upper().replace("-", "_")

    def given(value: str) -> tuple[list[str], dict[str, str]]:
        if source == "command line":
            return [f"--{key}", value], task.env
        if source == "environment":
            return [], {**task.env, variable: value}
        return world.spec({key: value}), task.env

    for value in (beyond, "99999999999", "1000000d"):
        options, env = given(value)
        code, _, err = invoke(task.args(sh(task.counted("cmd")), *options), env=env)
        assert code == EX_RUN_CONFIG, err
        named = {"command line": f"--{key}", "environment": variable}.get(source, key)
        one_error(err, "at most", named)
    assert task.count("cmd") == 0
    assert not task.journal.exists()  # refused at parse time: no attempt was recorded
    options, env = given(longest)
    code, _, err = invoke(task.args(["true"], *options, "--dry-run"), env=env)
    assert (code, err) == (0, ""), err


def test_the_longest_durations_run_a_real_attempt_cleanly(world: World) -> None:
    """A real run with every duration at its bound: the log, heartbeat, checkpoint and progress
    threads start and stop without a traceback, and the attempt succeeds."""
    task = world.task()
    longest = LONGEST
    options = [
        *world.options(),
        "--deadline", f"{longest['deadline']:.0f}",
        "--log-interval", f"{longest['log_interval']:.0f}",
        "--checkpoint-interval", f"{longest['checkpoint_interval']:.0f}",
        "--progress-interval", f"{longest['progress_interval']:.0f}",
        "--retry-budget", f"{longest['retry_budget']:.0f}",
    ]  # fmt: skip
    ended = task.run(["true"], *options)
    assert ended.returncode == 0, ended.stderr
    assert all(line.startswith("taskkit: ") for line in ended.stderr.splitlines()), ended.stderr
    assert task.attempt(1)["verdict"] == "success"


def test_the_duration_bounds_are_batchs_task_lifetime() -> None:
    """180 days for the deadline and the sync and progress intervals; the log interval a third
    of it, so that three heartbeats (when another node calls an attempt interrupted) fit."""
    assert LONGEST["deadline"] == 180 * DAY
    assert LONGEST["checkpoint_interval"] == 180 * DAY
    assert LONGEST["log_interval"] == 60 * DAY
    assert RunSpec(log_interval=60 * DAY).log_interval == 60 * DAY


# -- what run says about its transfers -----------------------------------------------------------


def _stored_log(task: Task, attempt: int = 1) -> str:
    return (task.journal / "logs" / f"{attempt:05d}" / "taskkit.txt").read_text()


def test_run_says_what_staging_and_upload_did_on_stderr_and_in_taskkit_txt(world: World) -> None:
    """The attempt's console and stored taskkit.txt both carry stage's and upload's summary
    lines: files staged and how, files sent and where they were published."""
    task = world.task()
    ended = task.run(["true"], *world.options())
    assert ended.returncode == 0, ended.stderr
    dest = f"file://{world.root}/dest/"
    staged = "staged 2 files in "
    uploaded = "uploaded 2 files in "
    stored = _stored_log(task)
    for text in (ended.stderr, stored):
        line = next(x for x in text.splitlines() if staged in x)
        assert "2 downloaded (11 B" in line
        assert "0 linked from the node cache" in line
        assert "0 already present, 0 failed" in line
        line = next(x for x in text.splitlines() if uploaded in x)
        assert "2 sent (11 B" in line
        assert line.endswith(f"0 failed; published {dest}")
    assert f"taskkit: note: {staged}" in ended.stderr
    # Another task publishing the same files: already there.
    again = world.task().run(["true"], *world.options())
    assert again.returncode == 0, again.stderr
    assert "0 sent (0 B, 0 resumed), 2 already there, 0 failed; published" in again.stderr


def test_run_stages_through_the_node_cache_and_says_so(world: World, tmp_path: Path) -> None:
    """Two tasks on one node (AZ_BATCH_NODE_SHARED_DIR): the second links both files from the
    node cache, hard links of its objects, and says so; the dry run of a third plans links."""
    env = {"AZ_BATCH_NODE_SHARED_DIR": str(world.shared)}
    first, second = world.task(), world.task()
    for task in (first, second):
        ended = task.run(["true"], *world.options(), env=env, workdir=tmp_path / task.task)
        assert ended.returncode == 0, ended.stderr
    assert "2 linked from the node cache" in ended.stderr
    assert "2 linked from the node cache" in _stored_log(second)
    cached = (world.shared / "taskkit" / "cache" / "objects").rglob("*")
    objects = {p.stat().st_ino for p in cached if p.is_file()}
    staged = {p.stat().st_ino for p in (tmp_path / second.task / "in").iterdir()}
    assert len(staged) == 2
    assert staged <= objects
    third = world.task()
    (tmp_path / third.task).mkdir()
    plan = third.run(
        ["true"], *world.options(), "--dry-run", env=env, workdir=tmp_path / third.task
    )
    assert plan.returncode == 0, plan.stderr
    assert sum(line.startswith("link ") for line in plan.stdout.splitlines()) == 2, plan.stdout


@pytest.mark.parametrize("where", ["--cache-dir", "TASKKIT_NODE_CACHE", "--no-node-cache"])
def test_the_node_cache_is_found_as_stage_finds_it(world: World, where: str) -> None:
    """--cache-dir and TASKKIT_NODE_CACHE move the node cache away from the shared directory;
    --no-node-cache makes none."""
    task = world.task()
    elsewhere = world.root / "elsewhere"
    env = {"AZ_BATCH_NODE_SHARED_DIR": str(world.shared)}
    options = world.options()
    if where == "--cache-dir":
        options += ["--cache-dir", str(elsewhere)]
    elif where == "TASKKIT_NODE_CACHE":
        env["TASKKIT_NODE_CACHE"] = str(elsewhere)
    else:
        options.append("--no-node-cache")
    ended = task.run(["true"], *options, env=env)
    assert ended.returncode == 0, ended.stderr
    assert not (world.shared / "taskkit" / "cache").exists()
    made = [p for p in (elsewhere / "objects").rglob("*") if p.is_file()]
    assert len(made) == (0 if where == "--no-node-cache" else 2)


def test_verbose_tells_each_file_in_both_places(world: World) -> None:
    """-v: one line per file staged and sent, on stderr and in taskkit.txt; none without."""
    loud, quiet = world.task(), world.task()
    told = loud.run(["true"], *world.options(), "-v")
    plain = quiet.run(["true"], *world.options())
    for text in (told.stderr, _stored_log(loud)):
        for name in ("a.txt", "b.txt"):
            assert f"{world.root}/src/{name} -> in/{name}" in text
            assert f"sent  in/{name} -> {world.root}/dest/{name}" in text
    for text in (plain.stderr, _stored_log(quiet)):
        assert "sent  in/" not in text
        assert "-> in/a.txt" not in text


class _Said:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, kind: str, line: str) -> None:
        with self.lock:
            self.lines.append((kind, line))

    def progress(self) -> list[str]:
        with self.lock:
            return [line for kind, line in self.lines if kind == "staging"]


@pytest.fixture
def said() -> _Said:
    return _Said()


def test_progress_lines_come_every_progress_interval_and_stop_with_the_transfer(
    said: _Said, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With files to move, one progress line per --progress-interval on the console (never
    into taskkit.txt), none after the transfer ends; nothing to move, no progress at all."""
    monkeypatch.setattr(taskkit.cli.report, "say", said)
    noted: list[str] = []
    spec = RunSpec(progress_interval=0.1)
    console = RunReport(verbose=spec.verbose, interval=spec.progress_interval)
    entry = SimpleNamespace(action="download", source=SimpleNamespace(size=100, url="u"))
    plan = SimpleNamespace(problems=(), entries=(entry,), lines=lambda: ())
    with Telling(Teller(spec, noted.append, console), "staging", dry_run=False) as telling:
        telling.staging_planned(plan)  # type: ignore[arg-type]
        telling.moved(40, False)
        wait_for(lambda: len(said.progress()) >= 2, "two progress lines")
    count = len(said.progress())
    assert said.progress()[0].startswith("40 B of 100 B, 0/1 files")
    assert noted == []
    with Telling(Teller(spec, noted.append, console), "staging", dry_run=False) as telling:
        nothing = SimpleNamespace(problems=(), entries=(), lines=lambda: ())
        telling.staging_planned(nothing)  # type: ignore[arg-type]
        assert console.shown is None
    assert len(said.progress()) == count  # the first stopped with its transfer


def test_stage_and_upload_take_the_same_checks(tmp_path: Path) -> None:
    """taskkit stage and upload refuse what run refuses (the options are defined once): a
    bound progress interval, a zero --jobs, a bad TASKKIT_RETRIES."""
    src = f"file://{tmp_path}/nothing/=x/"
    for argv, env in [
        (["stage", "-i", src, "--progress-interval", "181d"], {}),
        (["stage", "-i", src, "-j", "0"], {}),
        (["upload", "-o", "x/*=file:///d/", "--retry-budget", "-1"], {}),
        (["stage", "-i", src], {"TASKKIT_RETRIES": "0"}),
    ]:
        code, _, err = invoke(argv, env={"TASKKIT_CACHE_DIR": str(tmp_path / "c"), **env})
        assert code == 64, (argv, err)
        one_error(err, "Invalid value")
    code, _, err = invoke(
        ["stage", "-i", src, "--allow-empty", "--workdir", str(tmp_path)],
        env={"TASKKIT_CACHE_DIR": str(tmp_path / "c"), "TASKKIT_PROGRESS_INTERVAL": "1m"},
    )
    assert code == 0, err


def test_the_journal_keeps_the_retry_settings(tmp_path: Path) -> None:
    """With the state's storage unreachable (a closed port), ``--retries 1`` and
    ``--retry-budget 0`` hold for the journal's own requests too: the run gives up after one
    try of each (exit 204, one error line), not after the default minute of retries."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:  # a port nothing listens on once this socket is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    task = Task(tmp_path)
    env = {
        "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;"
        f"AccountName=devstoreaccount1;AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;",
    }
    argv = [sys.executable, "-m", "taskkit", *task.args(["true"], "--retries", "1")]
    argv[argv.index("--state") + 1] = "az://state/runs"
    argv.insert(argv.index("--"), "--retry-budget")
    argv.insert(argv.index("--"), "0")
    started = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, env={**task.env, **env}, timeout=60, check=False
    )
    assert time.monotonic() - started < 6, done.stderr
    assert done.returncode == 204, done.stderr
    assert "Traceback" not in done.stderr
