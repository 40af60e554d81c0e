"""taskkit.cli: checksum lines like xxhsum's, one-line errors, documented exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from taskkit import __version__
from taskkit.cli import cli
from taskkit.content.digest import hash_bytes

TASKKIT = [sys.executable, "-m", "taskkit"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(tmp_path / "cache"))


def run(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 60,
    **kw: object,
) -> subprocess.CompletedProcess[bytes]:
    """The CLI as a real process."""
    return subprocess.run(
        [*TASKKIT, *args],
        check=False,
        capture_output=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ},
        **kw,
    )  # type: ignore[call-overload,no-any-return]


def assert_one_line_error(stderr: bytes) -> None:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("taskkit: error: ")
    assert "Traceback" not in stderr.decode()


def test_lines_are_digest_two_spaces_path(tmp_path: Path) -> None:
    """`DIGEST  PATH` per file, directory contents in sorted order."""
    (tmp_path / "d" / "s").mkdir(parents=True)
    (tmp_path / "d" / "b").write_bytes(b"b")
    (tmp_path / "d" / "s" / "a").write_bytes(b"a")
    (tmp_path / "top").write_bytes(b"")
    proc = run("hash", "top", "d", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stderr == b""
    assert proc.stdout.decode().splitlines() == [
        f"{hash_bytes(b'')}  top",
        f"{hash_bytes(b'b')}  d/b",
        f"{hash_bytes(b'a')}  d/s/a",
    ]


def test_json_lines_carry_path_digest_size_and_cached(tmp_path: Path) -> None:
    """--json: one object per file; a second run after the racy window reports cached."""
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    first = run("hash", "--json", str(f))
    (obj,) = [json.loads(line) for line in first.stdout.splitlines()]
    assert obj == {"path": str(f), "digest": str(hash_bytes(b"12345")), "size": 5, "cached": False}


def test_names_with_newlines_and_backslashes_are_escaped_like_coreutils(tmp_path: Path) -> None:
    """A hostile name cannot forge a second line: the line starts with '\\' and escapes."""
    name = "we\\ird\nname"
    (tmp_path / name).write_bytes(b"x")
    proc = run("hash", name, cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == b"\\" + str(hash_bytes(b"x")).encode() + b"  we\\\\ird\\nname\n"


def test_non_utf8_names_are_written_as_their_bytes(tmp_path: Path) -> None:
    """A name that is not UTF-8 comes out byte for byte."""
    raw = b"caf\xe9"
    with open(os.fsencode(str(tmp_path)) + b"/" + raw, "wb") as f:
        f.write(b"x")
    proc = run("hash", ".", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == str(hash_bytes(b"x")).encode() + b"  ./" + raw + b"\n"


def test_lines_written_in_batches_are_each_files_line_byte_for_byte(tmp_path: Path) -> None:
    """Over more lines than one write holds, with plain, hostile, accented and non-UTF-8 names
    spread among them, stdout is exactly each file's line in walk order: nothing lost, doubled
    or re-encoded where batches meet."""
    from taskkit.cli.hashing import _BATCH

    odd = [b"we\\ird", b"new\nline", b"cr\rname", b"caf\xe9", "\u00e9t\u00e9".encode()]
    root = os.fsencode(str(tmp_path / "d"))
    os.mkdir(root)
    names = []
    for i in range(2 * _BATCH + 7):
        name = b"%05d" % i + (odd[i % len(odd)] if i % 97 == 0 else b"")
        with open(root + b"/" + name, "wb") as f:
            f.write(name)
        names.append(name)
    proc = run("hash", "d", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = []
    for name in sorted(names):
        digest = str(hash_bytes(name)).encode()
        if any(c in name for c in (b"\\", b"\n", b"\r")):
            escaped = name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
            expected.append(b"\\" + digest + b"  d/" + escaped + b"\n")
        else:
            expected.append(digest + b"  d/" + name + b"\n")
    assert proc.stdout == b"".join(expected)


def test_missing_path_is_one_line_exit_66_and_the_rest_is_hashed(tmp_path: Path) -> None:
    """Other paths are still hashed; the exit code is input-not-found."""
    (tmp_path / "ok").write_bytes(b"ok")
    proc = run("hash", "missing", "ok", cwd=tmp_path)
    assert proc.returncode == 66
    assert_one_line_error(proc.stderr)
    assert "'missing'" in proc.stderr.decode()
    assert proc.stdout.decode() == f"{hash_bytes(b'ok')}  ok\n"


def test_first_failure_sets_the_exit_code(tmp_path: Path) -> None:
    """With several failures, the exit code is the first one's."""
    (tmp_path / "loop").symlink_to("loop")
    proc = run("hash", "loop", "missing", cwd=tmp_path)
    assert proc.returncode == 74
    assert len(proc.stderr.decode().splitlines()) == 2


def test_fifo_socket_and_device_are_skipped_and_never_block(tmp_path: Path) -> None:
    """Special files give a warning, not a hang; the exit code stays 0."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "f").write_bytes(b"f")
    proc = run("hash", "fifo", "/dev/zero", ".", cwd=tmp_path, timeout=30)
    assert proc.returncode == 0
    err = proc.stderr.decode().splitlines()
    assert len(err) == 3
    assert all(line.startswith("taskkit: warning: skipped") for line in err)
    assert proc.stdout.decode() == f"{hash_bytes(b'f')}  ./f\n"


def test_symlink_loops_do_not_hang(tmp_path: Path) -> None:
    """A directory link back to an ancestor and a cycle of links both end promptly."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "up").symlink_to("..")
    (tmp_path / "d" / "a").symlink_to("b")
    (tmp_path / "d" / "b").symlink_to("a")
    proc = run("hash", ".", cwd=tmp_path, timeout=30)
    assert proc.returncode == 74
    assert "Traceback" not in proc.stderr.decode()


def without_root_powers() -> list[str]:
    """A command prefix under which even root obeys file permissions."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_file_is_exit_77_and_the_rest_is_hashed(tmp_path: Path) -> None:
    """Permission denied gets its own code and one line; other files are still hashed."""
    (tmp_path / "secret").write_bytes(b"secret")
    (tmp_path / "secret").chmod(0)
    (tmp_path / "ok").write_bytes(b"ok")
    proc = subprocess.run(
        [*without_root_powers(), *TASKKIT, "hash", "secret", "ok"],
        check=False,
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 77
    assert_one_line_error(proc.stderr)
    assert "permission denied" in proc.stderr.decode()
    assert proc.stdout.decode() == f"{hash_bytes(b'ok')}  ok\n"


def test_unreadable_directory_is_reported_and_the_walk_goes_on(tmp_path: Path) -> None:
    """A directory that cannot be listed is one error line; its siblings are hashed."""
    (tmp_path / "d" / "locked").mkdir(parents=True)
    (tmp_path / "d" / "z").write_bytes(b"z")
    (tmp_path / "d" / "locked").chmod(0)
    proc = subprocess.run(
        [*without_root_powers(), *TASKKIT, "hash", "d"],
        check=False,
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
    )
    (tmp_path / "d" / "locked").chmod(0o755)
    assert proc.returncode == 77
    assert_one_line_error(proc.stderr)
    assert "'d/locked'" in proc.stderr.decode()  # the path as the user wrote it
    assert proc.stdout.decode() == f"{hash_bytes(b'z')}  d/z\n"


def test_stdin_is_hashed_as_dash(tmp_path: Path) -> None:
    """`-` reads standard input, between the other paths."""
    (tmp_path / "a").write_bytes(b"a")
    proc = run("hash", "a", "-", "a", cwd=tmp_path, input=b"from stdin")
    assert proc.stdout.decode().splitlines() == [
        f"{hash_bytes(b'a')}  a",
        f"{hash_bytes(b'from stdin')}  -",
        f"{hash_bytes(b'a')}  a",
    ]


def test_no_cache_leaves_no_cache_behind(tmp_path: Path) -> None:
    """--no-cache neither reads nor writes the stat-cache."""
    (tmp_path / "a").write_bytes(b"a")
    proc = run("hash", "--no-cache", "a", cwd=tmp_path)
    assert proc.returncode == 0
    assert not (tmp_path / "cache").exists()


def test_summary_counts(tmp_path: Path) -> None:
    """--summary ends with a count line on stderr."""
    (tmp_path / "a").write_bytes(b"abc")
    proc = run("hash", "--summary", "a", "missing", cwd=tmp_path)
    last = proc.stderr.decode().splitlines()[-1]
    assert last.startswith("taskkit: hashed 1 files, 3 B in ")
    assert "1 failed" in last


@pytest.mark.parametrize(
    "args",
    [
        ["hash"],
        ["hash", "--jobs", "0", "x"],
        ["hash", "--jobs", "many", "x"],
        ["hash", "--bogus"],
        ["nosuchcommand"],
    ],
)
def test_usage_errors_are_one_line_exit_64(args: list[str]) -> None:
    """Malformed command lines get one line and EX_USAGE."""
    proc = run(*args)
    assert proc.returncode == 64
    assert_one_line_error(proc.stderr)


def test_no_arguments_shows_help_and_one_error_line() -> None:
    """`taskkit` alone prints the help on stdout, one error line on stderr, and exits 64."""
    proc = run()
    assert proc.returncode == 64
    assert b"Commands:" in proc.stdout
    assert_one_line_error(proc.stderr)


def test_version() -> None:
    """--version prints the package version."""
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.decode().strip() == f"taskkit {__version__}"


def test_every_command_has_help_with_examples() -> None:
    """Each command's --help works and shows examples."""
    runner = CliRunner()
    group = cli
    assert isinstance(group, click.Group)
    names = group.list_commands(click.Context(group))
    assert {"hash", "stage", "upload", "run", "batch"} <= set(names)  # listed before first use
    for name in [None, *names]:
        args = [name, "--help"] if name else ["--help"]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, args
        assert "Examples:" in result.output, args


def test_help_does_not_import_azure_or_pydantic() -> None:
    """`taskkit --help` stays fast: adlfs, the Azure SDK and pydantic are not imported."""
    code = (
        "import sys\nfrom taskkit.cli import main\n"
        "try:\n    main(['hash', '--help'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('adlfs', 'azure', 'pydantic', 'fsspec', 'aiohttp')]\nprint(bad)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_closed_stdout_pipe_is_exit_141_without_a_traceback(tmp_path: Path) -> None:
    """`taskkit hash ... | head -1` ends quietly with the documented 141."""
    for i in range(3000):
        (tmp_path / f"f{i}").write_bytes(b"x")
    script = f"{sys.executable} -m taskkit hash . | head -1; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(
        ["bash", "-c", script], check=False, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert len(proc.stdout.splitlines()) == 1
    assert proc.stderr == b""
    assert proc.returncode == 141


@pytest.mark.parametrize(("closed", "args"), [("stdout", ["hash", "f"]), ("stdin", ["hash", "-"])])
def test_closed_standard_streams_are_an_io_error(
    tmp_path: Path, closed: str, args: list[str]
) -> None:
    """A closed stdout or stdin is one line and exit 74, not an internal error."""
    (tmp_path / "f").write_bytes(b"x")
    redirect = ">&-" if closed == "stdout" else "<&-"
    script = f"{sys.executable} -m taskkit {' '.join(args)} {redirect}"
    proc = subprocess.run(
        ["bash", "-c", script], check=False, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert proc.returncode == 74
    assert proc.stderr.decode() == f"taskkit: error: standard {closed[3:]}put is closed\n"


def test_a_path_through_a_link_and_dotdot_is_what_the_kernel_opens(tmp_path: Path) -> None:
    """`link/../f` names the file beside the link's target, not ./f."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to("d/sub")
    (tmp_path / "d" / "f").write_bytes(b"beside the target")
    (tmp_path / "f").write_bytes(b"beside the link")
    proc = run("hash", "link/../f", "link/..", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.decode().splitlines() == [
        f"{hash_bytes(b'beside the target')}  link/../f",
        f"{hash_bytes(b'beside the target')}  link/../f",
    ]


def test_a_size_zero_file_that_never_ends_is_refused(tmp_path: Path) -> None:
    """/proc/self/pagemap says 0 bytes and yields terabytes: one line, exit 74, promptly."""
    if not os.path.exists("/proc/self/pagemap"):
        pytest.skip("no /proc/self/pagemap here")
    proc = run("hash", "--no-cache", "/proc/self/pagemap", timeout=60)
    assert proc.returncode == 74
    assert_one_line_error(proc.stderr)
    assert "more than 64 MiB" in proc.stderr.decode()


def test_internal_errors_are_one_line_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug in taskkit shows one line asking for a report, not a traceback."""
    import taskkit.content.hashing

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(taskkit.content.hashing, "hash_paths", boom)
    monkeypatch.delenv("TASKKIT_DEBUG", raising=False)
    from taskkit.cli import main

    with pytest.raises(SystemExit) as info:
        main(["hash", "x"])
    assert info.value.code == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "internal error: RuntimeError: boom" in err


def many_files(root: Path, count: int) -> None:
    for i in range(count):
        sub = root / f"d{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}").write_bytes(i.to_bytes(4, "little") * 64)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_run_leaves_a_usable_cache(tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C (one line, exit 130) or kill -9 mid-run; the next run is complete and correct."""
    data = tmp_path / "data"
    many_files(data, 20000)
    proc = subprocess.Popen(
        [*TASKKIT, "hash", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the run is under way: output has started
    assert first
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert err.decode() == "taskkit: error: interrupted\n"
    else:
        assert proc.returncode == -signal.SIGKILL
    assert len(out.splitlines()) + 1 < 20000  # it really was stopped part-way
    again = run("hash", str(data))
    assert again.returncode == 0
    assert again.stderr == b""
    lines = again.stdout.decode().splitlines()
    assert len(lines) == 20000
    expected = {str(p): str(hash_bytes(p.read_bytes())) for p in data.rglob("f*")}
    assert dict(line.split("  ", 1)[::-1] for line in lines) == expected
    with contextlib.closing(sqlite3.connect(tmp_path / "cache" / "statcache-v1.sqlite3")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_command_modules_name_every_command_and_its_module() -> None:
    """The lazy command map is exact: importing all its modules adds exactly its commands, each
    defined in the module the map names (a command missing from the map would vanish)."""
    import importlib

    from taskkit.cli._app import COMMAND_MODULES

    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(module)
    assert set(cli.commands) == set(COMMAND_MODULES)  # type: ignore[attr-defined]
    for name, module in COMMAND_MODULES.items():
        command = cli.commands[name]  # type: ignore[attr-defined]
        assert command.callback is not None
        assert command.callback.__module__ == module, name


def test_hash_starts_without_the_other_wings(tmp_path: Path) -> None:
    """`taskkit hash` (a real run, cache on) loads only the content wing: no transfer engine,
    storage, runner, batch emulator or other command modules, so its start-up stays short."""
    (tmp_path / "f").write_bytes(b"x")
    code = (
        "import sys\nfrom taskkit.cli import main\n"
        f"try:\n    main(['hash', {str(tmp_path / 'f')!r}])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('taskkit.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert "taskkit.content.hashing" in loaded  # it did hash
    heavy = {"taskkit.storage", "taskkit.runner", "taskkit.batch", "taskkit.function"}
    heavy |= {"taskkit.transfer.stage", "taskkit.cli.transfer", "taskkit.cli.tasks"}
    assert not {m for m in loaded if any(m == h or m.startswith(h + ".") for h in heavy)}
