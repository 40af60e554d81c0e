"""taskkit.runner.logs and taskkit.runner.command: output teed to the console, logs uploaded on
every exit.

Commands are real processes and signals are real. The runner side is either called in-process
(its console copy read with ``capfd``) or run as a real process, ``tests/logs_child.py``, when
the test must signal it or compare its console output byte for byte. Nothing sleeps for luck:
tests wait on files with a deadline (:func:`wait_for`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import secrets
import signal
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from observing import Warnings, taskkit_records
from store_counts import counting_stores

from taskkit.exceptions import MisuseError, UsageError
from taskkit.runner import command
from taskkit.runner.command import DRAIN_SECONDS, Finished, run_logged
from taskkit.runner.logs import LINE_LIMIT, LogFile, LogSink
from taskkit.storage.stores import Stores
from taskkit.testing import Azurite

CHILD = str(Path(__file__).parent.parent / "logs_child.py")
PY = sys.executable
FILES = ("stdout.txt", "stderr.txt", "taskkit.txt")

#: A command that prints "ready" once its SIGTERM/SIGINT handler is set, then waits to be
#: signalled; on the signal it prints "got TERM"/"got INT" and exits 0.
TRAPS = (
    "import signal, sys\n"
    "def on(n, f):\n"
    "    print('got', signal.Signals(n).name[3:], flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, on)\n"
    "signal.signal(signal.SIGINT, on)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    signal.pause()\n"
)
#: A command that ignores SIGTERM and SIGINT: only SIGKILL ends it.
STUBBORN = (
    "import signal\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    signal.pause()\n"
)


# -- helpers -------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def contains(path: Path, text: bytes) -> Callable[[], bool]:
    return lambda: path.is_file() and text in path.read_bytes()


class Driver(Protocol):
    def __call__(
        self,
        command: list[str],
        *options: str,
        dest: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]: ...


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Driver]:
    """Starts ``tests/logs_child.py`` as a real process, its console captured. Whatever a
    failing test leaves running, the driver and the command's group, is killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        command: list[str],
        *options: str,
        dest: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                *(PY, CHILD, str(tmp_path / "logs"), dest or f"file://{tmp_path}/store/"),
                *(*options, "--result", str(tmp_path / "result.json"), "--", *command),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    kill_noted(tmp_path / "logs" / "taskkit.txt")


def result(tmp_path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((tmp_path / "result.json").read_text())
    return loaded


def stored(tmp_path: Path, name: str) -> bytes:
    return (tmp_path / "store" / name).read_bytes()


def release(fifo: Path) -> None:
    """Write to ``fifo`` once its reader has opened it (never block on a reader that died)."""

    def opened() -> bool:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            return False
        os.write(fd, b"go")
        os.close(fd)
        return True

    wait_for(opened, f"a reader of {fifo}")


def kill_noted(notes: Path) -> None:
    """Kill the process group of every command a sink noted as started."""
    pids = re.findall(rb"\(pid (\d+)\)", notes.read_bytes()) if notes.is_file() else []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGKILL)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[LogSink]:
    """A sink uploading to ``tmp_path/store`` (no trailing slash), which must never warn.
    A watchdog kills the commands it logs after 30 s, so a broken run_logged fails the test
    instead of hanging it."""
    warnings = Warnings()
    watchdog = threading.Timer(30, kill_noted, [tmp_path / "logs" / "taskkit.txt"])
    watchdog.start()
    try:
        with LogSink(tmp_path / "logs", f"file://{tmp_path}/store", observer=warnings) as opened:
            yield opened
    finally:
        watchdog.cancel()
    assert warnings == []


# -- tee -----------------------------------------------------------------------------------------


def test_tee_is_byte_identical_on_console_and_in_the_store(driver: Driver, tmp_path: Path) -> None:
    """Binary bytes, a 64 KiB+ line and a last line without newline reach the console and
    the stored logs unchanged."""
    bulk = bytes(b for b in random.Random(7).randbytes(300_000) if b != ord("="))
    out = b"text\n\x00\xff\xfe binary \xc3\xa9\r\n" + bulk + b"\nno newline at the end"
    err = b"warning one\n\x80 raw\n"
    (tmp_path / "out.bin").write_bytes(out)
    (tmp_path / "err.bin").write_bytes(err)
    script = (
        "import sys\n"
        f"sys.stdout.buffer.write(open({str(tmp_path / 'out.bin')!r}, 'rb').read())\n"
        f"sys.stderr.buffer.write(open({str(tmp_path / 'err.bin')!r}, 'rb').read())\n"
    )
    proc = driver([PY, "-c", script])
    console_out, console_err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert console_out == out
    assert console_err == err
    assert stored(tmp_path, "stdout.txt") == out == (tmp_path / "logs" / "stdout.txt").read_bytes()
    assert stored(tmp_path, "stderr.txt") == err


def test_the_store_holds_what_the_local_files_hold(driver: Driver, tmp_path: Path) -> None:
    """After the sink closes, each stored file equals its local file, taskkit's notes too."""
    proc = driver(["sh", "-c", "echo a; echo b >&2"])
    proc.communicate(timeout=30)
    for name in FILES:
        assert stored(tmp_path, name) == (tmp_path / "logs" / name).read_bytes()
    assert b"taskkit: the command exited 0" in stored(tmp_path, "taskkit.txt")


# -- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_is_the_commands(code: int, capfd: pytest.CaptureFixture[str]) -> None:
    """A command's own exit code comes back as returncode and exit_code."""
    finished = run_logged([PY, "-c", f"raise SystemExit({code})"])
    assert (finished.returncode, finished.exit_code) == (code, code)
    assert finished.describe() == f"exited {code}"
    assert (finished.signal_received, finished.timed_out) == (None, False)


def test_death_by_sigkill_is_137(capfd: pytest.CaptureFixture[str]) -> None:
    """A command killed by SIGKILL has returncode -9 and exit_code 137, as in a shell."""
    finished = run_logged([PY, "-c", "import os; os.kill(os.getpid(), 9)"])
    assert (finished.returncode, finished.exit_code) == (-9, 137)
    assert finished.describe() == "killed by SIGKILL"


def test_command_not_found_is_127_with_one_line(
    sink: LogSink, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A missing command: 127 and one `taskkit: error:` line, on the console and in the log."""
    missing = str(tmp_path / "no-such-command")
    finished = run_logged([missing, "arg"], sink=sink)
    assert finished.exit_code == 127
    line = f"taskkit: error: cannot run {missing}: no such file or directory\n"
    assert capfd.readouterr().err == line
    sink.close()
    assert stored(tmp_path, "stderr.txt") == line.encode()


def test_command_not_executable_is_126(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A file without execute permission: 126, one line."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    assert run_logged([str(script)]).exit_code == 126
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"taskkit: error: cannot run {script}: permission denied")


def test_missing_working_directory_is_named(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A cwd that does not exist: 127, and the line names the folder, not the command."""
    finished = run_logged(["true"], cwd=tmp_path / "gone")
    assert finished.exit_code == 127
    assert str(tmp_path / "gone") in capfd.readouterr().err


def test_bad_arguments_are_refused() -> None:
    """An empty command is a UsageError; a negative deadline or grace, a zero interval misuse."""
    with pytest.raises(UsageError):
        run_logged([])
    with pytest.raises(MisuseError):
        run_logged(["true"], deadline=-1)
    with pytest.raises(MisuseError):
        run_logged(["true"], grace=-1)
    with pytest.raises(MisuseError):
        LogSink("unused", None, interval=0)
    with pytest.raises(MisuseError):
        LogSink("unused", None, interval=True)


@pytest.mark.parametrize(
    ("finished", "code", "text"),
    [
        (Finished(0, None, False, 1.0), 0, "exited 0"),
        (Finished(3, None, False, 1.0), 3, "exited 3"),
        (Finished(-9, None, False, 1.0), 137, "killed by SIGKILL"),
        (Finished(0, signal.SIGTERM, False, 1.0), 143, "stopped by SIGTERM"),
        (Finished(-9, signal.SIGINT, False, 1.0), 130, "stopped by SIGINT"),
        (Finished(-15, None, True, 1.0), 143, "stopped after the deadline"),
        (Finished(0, None, True, 1.0), 143, "stopped after the deadline"),
    ],
)
def test_finished_exit_code_and_description(finished: Finished, code: int, text: str) -> None:
    """128 + N for signals; a signal taskkit got or the deadline wins over the command's code."""
    assert finished.exit_code == code
    assert finished.describe() == text


# -- signals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_is_forwarded_to_the_command(
    driver: Driver, tmp_path: Path, signum: int, code: int
) -> None:
    """SIGTERM/SIGINT to taskkit reaches the command, which ends cleanly; taskkit exits
    128 + N and the stored logs hold the lines before and after the signal."""
    proc = driver([PY, "-c", TRAPS])
    wait_for(contains(tmp_path / "logs" / "stdout.txt", b"ready\n"), "the command to start")
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=30)
    name = signal.Signals(signum).name
    assert proc.returncode == code
    assert out == f"ready\ngot {name[3:]}\n".encode()
    assert stored(tmp_path, "stdout.txt") == out
    assert f"received {name}; forwarded it".encode() in stored(tmp_path, "taskkit.txt")
    assert result(tmp_path)["returncode"] == 0


def test_command_ignoring_sigterm_is_killed_after_grace(driver: Driver, tmp_path: Path) -> None:
    """A command that ignores SIGTERM is SIGKILLed once grace has passed; logs still upload."""
    proc = driver([PY, "-c", STUBBORN], "--grace", "0.5")
    wait_for(contains(tmp_path / "logs" / "stdout.txt", b"ready\n"), "the command to start")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert 0.5 <= time.monotonic() - signalled < 10
    assert proc.returncode == 143
    assert result(tmp_path)["returncode"] == -9
    assert stored(tmp_path, "stdout.txt") == b"ready\n"
    assert b"did not end within 0.5 s; killed" in stored(tmp_path, "taskkit.txt")


def test_second_signal_kills_at_once(driver: Driver, tmp_path: Path) -> None:
    """A second signal during the grace period kills the command without waiting it out."""
    proc = driver([PY, "-c", STUBBORN], "--grace", "600")
    notes = tmp_path / "logs" / "taskkit.txt"
    wait_for(contains(tmp_path / "logs" / "stdout.txt", b"ready\n"), "the command to start")
    proc.send_signal(signal.SIGTERM)
    wait_for(contains(notes, b"forwarded it"), "the first signal to be forwarded")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 143  # the first signal is the one reported
    assert result(tmp_path)["returncode"] == -9
    assert b"received SIGINT again; killed" in stored(tmp_path, "taskkit.txt")


#: Started by the command in a session of its own, holding the output: waits until taskkit has
#: reaped the command, then sends taskkit SIGTERM.
LATE_SIGNAL = (
    "import os, signal, sys, time\n"
    "command, taskkit = int(sys.argv[1]), int(sys.argv[2])\n"
    "while True:\n"
    "    try:\n"
    "        os.kill(command, 0)\n"
    "    except ProcessLookupError:\n"
    "        break\n"
    "    time.sleep(0.005)\n"
    "os.kill(taskkit, signal.SIGTERM)\n"
)


def test_signal_as_the_command_ends_is_reported(driver: Driver, tmp_path: Path) -> None:
    """A SIGTERM that reaches taskkit once the command has ended is not lost: the run still
    reports it (taskkit exits 143), since the handlers that caught it are gone afterwards."""
    script = (
        "import os, subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {LATE_SIGNAL!r}, str(os.getpid()),"
        " str(os.getppid())], start_new_session=True)\n"
    )
    proc = driver([PY, "-c", script])
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert result(tmp_path)["returncode"] == 0
    assert result(tmp_path)["signal_received"] == signal.SIGTERM


def test_signal_handlers_are_restored(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The handlers taskkit sets while the command runs are gone afterwards, on every path."""

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not expected")

    before = {s: signal.signal(s, mine) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_logged(["true"])
        run_logged([str(tmp_path / "missing")])
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_runs_outside_the_main_thread(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """From another thread no handlers are set (Python forbids it) and the command still runs."""
    finished: list[Finished] = []
    thread = threading.Thread(target=lambda: finished.append(run_logged(["sh", "-c", "exit 5"])))
    thread.start()
    thread.join(30)
    assert [f.exit_code for f in finished] == [5]


# -- deadline and leftovers ----------------------------------------------------------------------


def test_deadline_stops_the_command(sink: LogSink, tmp_path: Path) -> None:
    """Past the deadline the command gets SIGTERM; it ends long before its own 60 s."""
    finished = run_logged(["sleep", "60"], sink=sink, deadline=0.5, grace=5)
    assert finished.timed_out
    assert 0.5 <= finished.seconds < 10
    assert (finished.returncode, finished.exit_code) == (-15, 143)
    sink.close()
    assert b"the deadline passed; sent SIGTERM" in stored(tmp_path, "taskkit.txt")


def test_deadline_then_grace_then_sigkill(
    sink: LogSink, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A command that ignores the deadline's SIGTERM is killed once grace has passed. The
    clock stands still until the command has set its handler, so the deadline cannot pass
    before."""
    ready = tmp_path / "logs" / "stdout.txt"
    real = time.monotonic

    def clock() -> float:
        return real() if b"ready" in ready.read_bytes() else 0.0

    started = time.monotonic()
    finished = run_logged([PY, "-c", STUBBORN], sink=sink, deadline=0.2, grace=0.3, clock=clock)
    assert time.monotonic() - started < 10
    assert finished.timed_out
    assert finished.returncode == -9
    sink.close()
    notes = stored(tmp_path, "taskkit.txt")
    assert b"deadline passed" in notes
    assert b"did not end within 0.3 s" in notes


def test_leftovers_in_the_group_are_killed(
    sink: LogSink, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A background process holding the output pipe is killed when the command ends, so the
    run returns at once, not when the leftover would end nor after giving up on the pipe."""
    finished = run_logged(["sh", "-c", "sleep 60 & echo started"], sink=sink)
    assert finished.exit_code == 0
    assert finished.seconds < DRAIN_SECONDS
    assert capfd.readouterr().out == "started\n"
    sink.close()
    assert b"output still open" not in stored(tmp_path, "taskkit.txt")


def test_output_held_outside_the_group_is_not_waited_for(
    sink: LogSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that left the command's group (setsid) and holds its output does not keep
    the run from returning; taskkit notes that it stopped waiting."""
    monkeypatch.setattr(command, "DRAIN_SECONDS", 0.2)
    script = (
        "import subprocess\n"
        "p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
    )
    finished = run_logged([PY, "-c", script], sink=sink)
    out = tmp_path / "logs" / "stdout.txt"
    wait_for(contains(out, b"\n"), "the pid of the escaped process")
    escaped = int(out.read_text())
    os.kill(escaped, signal.SIGKILL)
    assert finished.exit_code == 0
    assert finished.seconds < DRAIN_SECONDS
    sink.close()
    assert b"output still open 0.2 s after the end" in stored(tmp_path, "taskkit.txt")


# -- uploads -------------------------------------------------------------------------------------


def test_logs_are_uploaded_while_the_command_runs(driver: Driver, tmp_path: Path) -> None:
    """With a short interval the stored stdout shows a line while the command still runs."""
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    script = f"print('first', flush=True); open({str(fifo)!r}).read(); print('second')"
    proc = driver([PY, "-c", script], "--interval", "0.2")
    store = tmp_path / "store" / "stdout.txt"
    wait_for(contains(store, b"first\n"), "the periodic upload")
    assert proc.poll() is None  # the command is blocked on the FIFO until released below
    release(fifo)
    proc.communicate(timeout=30)
    assert stored(tmp_path, "stdout.txt") == b"first\nsecond\n"


def test_empty_files_exist_remotely_after_the_first_flush(sink: LogSink, tmp_path: Path) -> None:
    """The first flush creates all three files, empty ones too: the attempt's logs exist."""
    assert sink.flush()
    assert {p.name: p.read_bytes() for p in (tmp_path / "store").iterdir()} == {
        "stdout.txt": b"",
        "stderr.txt": b"",
        "taskkit.txt": b"",
    }


def test_flushes_append_what_was_added(sink: LogSink, tmp_path: Path) -> None:
    """Each flush sends only the new bytes; a partial line waits for its newline or close."""
    out = sink.file("stdout")
    out.write(b"one\ntw")
    assert sink.flush()
    assert stored(tmp_path, "stdout.txt") == b"one\n"
    out.write(b"o\nthree")
    assert sink.flush()
    assert stored(tmp_path, "stdout.txt") == b"one\ntwo\n"
    sink.close()
    assert stored(tmp_path, "stdout.txt") == b"one\ntwo\nthree"
    sink.close()  # idempotent


def test_a_line_longer_than_the_limit_is_written_without_its_newline(sink: LogSink) -> None:
    """A partial line is held back only up to 64 KiB (then all but its last 4 KiB, kept to see
    a credential at the cut whole, are written), so endless binary output still flows."""
    out = sink.file("stdout")
    out.write(b"x" * LINE_LIMIT)
    assert out.size == 0
    out.write(b"y")
    assert out.size == LINE_LIMIT + 1 - 4096
    out.drain()
    assert out.size == LINE_LIMIT + 1


def test_exception_inside_the_block_still_uploads(driver: Driver, tmp_path: Path) -> None:
    """An error in taskkit while the command runs leaves through the `with`, which uploads."""
    proc = driver(["sh", "-c", "echo done; printf partial"], "--fail")
    _, err = proc.communicate(timeout=30)
    assert b"RuntimeError: taskkit failed after the command" in err
    assert stored(tmp_path, "stdout.txt") == b"done\npartial"
    assert b"the command exited 0" in stored(tmp_path, "taskkit.txt")


def test_local_only_without_a_destination(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """dest=None keeps the logs local; flush has nothing to do and succeeds."""
    with LogSink(tmp_path / "logs", None) as sink:
        run_logged(["echo", "hi"], sink=sink)
        assert sink.flush()
    assert (tmp_path / "logs" / "stdout.txt").read_bytes() == b"hi\n"
    assert not (tmp_path / "store").exists()


def test_unknown_log_file_is_misuse(sink: LogSink) -> None:
    """Only stdout, stderr and taskkit exist."""
    with pytest.raises(MisuseError):
        sink.file("other")


# -- failing uploads -----------------------------------------------------------------------------


def test_failing_upload_warns_once_per_streak(tmp_path: Path) -> None:
    """Failures warn once until an upload succeeds; after that a new failure warns again; the
    store ends up with every byte once the way is clear."""
    warnings = Warnings()
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the store needs a folder")
    with LogSink(tmp_path / "logs", f"file://{blocker}/logs/", observer=warnings) as sink:
        sink.file("stdout").write(b"one\n")
        assert [sink.flush(), sink.flush(), sink.flush()] == [False, False, False]
        assert len(warnings) == 1
        assert warnings[0].startswith(f"cannot upload logs to file://{blocker}/logs/: ")
        assert warnings[0].endswith("; will try again")
        blocker.unlink()
        blocker.mkdir()
        assert sink.flush()
        (blocker / "logs").rename(tmp_path / "moved")
        (blocker / "logs").write_text("blocked again")
        sink.file("stdout").write(b"two\n")
        assert not sink.flush()
        assert len(warnings) == 2
    assert (tmp_path / "moved" / "stdout.txt").read_bytes() == b"one\n"
    assert (tmp_path / "logs" / "stdout.txt").read_bytes() == b"one\ntwo\n"
    assert (tmp_path / "logs" / "taskkit.txt").read_bytes().count(b"warning: cannot upload") == 2


def test_failing_upload_does_not_stop_the_command(driver: Driver, tmp_path: Path) -> None:
    """A store that cannot be written: the command runs to its end with its exit code, one
    warning line on stderr, the local files complete."""
    blocker = tmp_path / "blocked"
    blocker.write_text("")
    command = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    proc = driver(command, "--interval", "0.05", dest=f"{blocker}/logs/")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert out == b"out\n"
    lines = sorted(err.decode().splitlines())  # the warning may come before or after
    assert len(lines) == 2
    assert lines[0] == "err"
    assert lines[1].startswith(f"taskkit: warning: cannot upload logs to {blocker}/logs/: ")
    assert (tmp_path / "logs" / "stdout.txt").read_bytes() == b"out\n"
    assert (tmp_path / "logs" / "stderr.txt").read_bytes() == b"err\n"


def test_store_that_cannot_be_opened_only_warns(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A destination whose store cannot even be opened warns; the command and local logs work."""
    warnings = Warnings()
    with LogSink(tmp_path / "logs", "az://Bad_Container/x/", observer=warnings) as sink:
        assert run_logged(["echo", "hi"], sink=sink).exit_code == 0
    assert len(warnings) == 1
    assert "not a valid container name" in warnings[0]
    assert (tmp_path / "logs" / "stdout.txt").read_bytes() == b"hi\n"


def test_default_warning_is_one_redacted_record_and_nothing_on_the_console(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Without an observer: one WARNING record of the taskkit logger, no credential in it,
    and nothing on stdout or stderr (the library never prints)."""
    secret = secrets.token_hex(16)
    blocker = tmp_path / f"two\nlines?sig={secret}"
    blocker.write_text("a file where the store needs a folder")
    with taskkit_records() as records, LogSink(tmp_path / "logs", f"{blocker}/logs/") as sink:
        assert not sink.flush()
    warned = [r for r in records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert warned[0].getMessage().startswith("cannot upload logs to ")
    assert secret not in warned[0].getMessage()
    assert capfd.readouterr() == ("", "")


# -- redaction -----------------------------------------------------------------------------------


def test_credentials_never_reach_the_stored_logs(driver: Driver, tmp_path: Path) -> None:
    """An account key from the environment, a connection string's AccountKey and a SAS sig
    printed by the command are in no stored or local log file, taskkit's notes and warnings
    included; the console copy is the user's own output and stays as printed."""
    alphabet = string.ascii_letters + string.digits
    key = "".join(secrets.choice(alphabet) for _ in range(40))
    conn_key = "".join(secrets.choice(alphabet) for _ in range(40)) + "=="
    sig = "".join(secrets.choice(alphabet) for _ in range(30)) + "%3D"
    lines = (
        f"the key is {key}\n"
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={conn_key};EndpointSuffix=x\n"
        f"https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig={sig}&se=2030\n"
    )
    script = f"import sys; sys.stdout.write({lines!r}); sys.stderr.write({lines!r})"
    env = {**os.environ, "AZURE_STORAGE_ACCOUNT_KEY": key}
    # The key is also in the command line, which taskkit notes in taskkit.txt.
    proc = driver([PY, "-c", script, key], env=env)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == err == lines.encode()
    for name in FILES:
        for text in (stored(tmp_path, name), (tmp_path / "logs" / name).read_bytes()):
            for secret in (key, conn_key, sig):
                assert secret.encode() not in text, name
    assert b"AccountKey=***;EndpointSuffix=x\n" in stored(tmp_path, "stdout.txt")
    assert b"sig=***&se=2030\n" in stored(tmp_path, "stderr.txt")
    assert b"the key is ***\n" in stored(tmp_path, "stdout.txt")
    assert b"***" in stored(tmp_path, "taskkit.txt")


def test_taskkit_lines_are_redacted(
    driver: Driver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential in a failing destination or a missing command's name shows in no warning,
    no console line and no log file."""
    key = secrets.token_hex(20)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", key)
    (tmp_path / f"blocked-{key}").write_text("")
    proc = driver([str(tmp_path / key)], dest=f"{tmp_path}/blocked-{key}/x/")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 127
    assert err.count(b"\n") == 2  # the error line and the warning
    assert key.encode() not in err
    for name in FILES:
        assert key.encode() not in (tmp_path / "logs" / name).read_bytes()


# -- Azure ---------------------------------------------------------------------------------------


@pytest.mark.azurite
def test_azure_flushes_append_to_one_blob(
    azurite: Azurite, azurite_container: str, tmp_path: Path
) -> None:
    """On Azure the logs are append blobs: a flush adds blocks to the blob the first one
    created, and a line written between flushes arrives."""
    dest = f"az://{azurite_container}/job/task/attempt-1/"
    with Stores(storage_options=azurite.storage_options()) as stores:
        warnings = Warnings()
        with LogSink(tmp_path / "logs", dest, stores=stores, observer=warnings) as sink:
            since = azurite.log_offset()
            sink.file("stdout").write(b"one\n")
            assert sink.flush()
            assert azurite.operations(since=since).count("AppendBlob_Create") == 3
            since = azurite.log_offset()
            sink.file("stdout").write(b"two\n")
            assert sink.flush()
            assert azurite.operations(since=since) == ["AppendBlob_AppendBlock"]
        assert warnings == []
    with azurite.blob_service_client() as service:
        blobs = service.get_container_client(azurite_container)
        for name in FILES:
            blob = blobs.download_blob(f"job/task/attempt-1/{name}").readall()
            assert blob == (tmp_path / "logs" / name).read_bytes()
        assert blobs.download_blob("job/task/attempt-1/stdout.txt").readall() == b"one\ntwo\n"


@pytest.mark.parametrize("before", [64 * 1024 - 44, 128 * 1024 - 44, 8 * 1024 * 1024 - 30])
def test_a_key_at_the_cut_of_a_long_line_is_hidden(tmp_path: Path, before: int) -> None:
    """A bare account key printed at the end of a line longer than the cut (64 KiB, 128 KiB,
    8 MiB of text before it, fed in 64 KiB reads as a pipe gives them) is stored hidden."""
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    line = b"x" * before + b" " + key.encode() + b"\n"
    log = LogFile(str(tmp_path / "stdout.txt"), lambda message: None)
    for at in range(0, len(line), 65536):
        log.write(line[at : at + 65536])
    log.close()
    stored = (tmp_path / "stdout.txt").read_bytes()
    assert key.encode() not in stored
    assert stored.endswith(b"***\n")
    assert stored.count(b"x") == before
    assert len(stored) == before + len(" ***\n")


def test_given_stores_are_used_and_left_open(
    tmp_path: Path, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LogSink given stores uploads through them and leaves them open; without, it opens
    one at its first upload, keeps it for every flush, and closes it once when it closes."""
    counts = counting_stores(monkeypatch)
    with LogSink(tmp_path / "a", f"file://{tmp_path}/stored/a/", stores=stores) as sink:
        sink.note("one")
        assert sink.flush()
    assert (tmp_path / "stored" / "a" / "taskkit.txt").read_text().endswith("one\n")
    assert counts.opened == []
    assert counts.users() == {id(stores)}
    assert counts.closes[id(stores)] == 0
    with LogSink(tmp_path / "b", f"file://{tmp_path}/stored/b/") as sink:
        for line in ("one", "two"):
            sink.note(line)
            assert sink.flush()
    assert (tmp_path / "stored" / "b" / "taskkit.txt").read_text().endswith("two\n")
    assert len(counts.opened) == 1
    assert counts.closed_once_each()


def test_a_signal_as_the_watchdog_is_released_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last moment of run_logged's own handlers (the watchdog released, the handlers not
    yet put back): a SIGTERM there is reported as received, not dropped, and the caller's
    handler is not called for it as well."""
    from taskkit.runner.lifetime import Watchdog

    release = Watchdog.release

    def release_then_signal(self: Watchdog) -> None:
        release(self)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(Watchdog, "release", release_then_signal)
    with command.SignalsDeferred() as signals, signals.acting():
        finished = run_logged(["true"], tombstone=tmp_path / "tombstone")
    assert (finished.returncode, finished.signal_received) == (0, signal.SIGTERM)
    assert finished.exit_code == 143
