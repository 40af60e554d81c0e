"""taskkit.cli.progress: plain periodic lines in a log, a redrawn bar on a terminal."""

from __future__ import annotations

import io
import threading
import time

import pytest

from taskkit.cli.progress import Progress

DEADLINE = 30.0


class Stream(io.StringIO):
    """A StringIO that lets a test wait (with a deadline) until something was written."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            n = super().write(text)
            self._changed.notify_all()
            return n

    def wait_for(self, wanted: str) -> str:
        """Everything written so far, once it holds ``wanted``; fails at the deadline."""
        deadline = time.monotonic() + DEADLINE
        with self._changed:
            while wanted not in self.getvalue():
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"{wanted!r} was never written; got {self.getvalue()!r}")
                self._changed.wait(left)
            return self.getvalue()


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_plain_periodic_lines() -> None:
    """Not a terminal: whole lines 'taskkit: staging: ...' with bytes, files and the rate from
    the injected clock; no carriage return, no escape sequence."""
    stream = Stream()
    clock = Clock(100.0)
    progress = Progress(2048, 2, stream, tty=False, interval=0.01, clock=clock)
    progress.add_bytes(1024)
    progress.file_done()
    clock.now = 102.0
    with progress:
        text = stream.wait_for("\n")
    first = text.splitlines()[0]
    assert first == "taskkit: staging: 1.0 KiB of 2.0 KiB, 1/2 files, 512 B/s"
    assert "\r" not in text
    assert "\x1b" not in text


def test_a_log_line_follows_the_counts() -> None:
    """A line written after more bytes and files arrived reports the new counts."""
    stream = Stream()
    clock = Clock(0.0)
    progress = Progress(4 * 1024 * 1024, 3, stream, tty=False, interval=0.01, clock=clock)
    clock.now = 4.0
    with progress:
        stream.wait_for("0 B of 4.0 MiB, 0/3 files")
        progress.add_bytes(3 * 1024 * 1024)
        progress.add_bytes(1024 * 1024, reused=True)
        for _ in range(3):
            progress.file_done()
        text = stream.wait_for("4.0 MiB of 4.0 MiB, 3/3 files, 1.0 MiB/s")
    assert all(line.startswith("taskkit: staging: ") for line in text.splitlines())
    assert text.endswith("\n")


def test_a_log_gets_no_line_before_the_interval() -> None:
    """With a long interval, leaving at once writes nothing (no final line in a log)."""
    stream = Stream()
    with Progress(10, 1, stream, tty=False, interval=3600, clock=Clock()):
        pass
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_bar_redrawn_in_place_and_a_final_newline() -> None:
    """On a TTY each drawing starts with '\\r' and clears the line; the last one is the
    finished bar, followed by one newline."""
    stream = Stream()
    clock = Clock(10.0)
    progress = Progress(1000, 1, stream, tty=True, clock=clock)
    clock.now = 11.0
    with progress:
        stream.wait_for("\r\x1b[K[")
        progress.add_bytes(1000)
        progress.file_done()
    text = stream.getvalue()
    assert text.endswith("\n")
    assert text.count("\n") == 1
    drawings = text.rstrip("\n").split("\r\x1b[K")[1:]
    assert len(drawings) >= 2
    assert drawings[0].startswith("[" + "." * 24 + "]   0% 0 B of 1000 B, 0/1 files")
    assert drawings[-1] == "[" + "#" * 24 + "] 100% 1000 B of 1000 B, 1/1 files, 1000 B/s"


def test_a_half_done_bar_is_half_filled() -> None:
    """The bar and percentage follow the share of bytes done."""
    progress = Progress(200, 2, io.StringIO(), tty=True, clock=Clock())
    progress.add_bytes(100)
    assert progress.line().startswith("[" + "#" * 12 + "." * 12 + "]  50% 100 B of 200 B")


def test_nothing_to_move_is_complete() -> None:
    """A total of zero bytes is shown as done, not as a division by zero."""
    progress = Progress(0, 0, io.StringIO(), tty=True, clock=Clock())
    assert progress.line().startswith("[" + "#" * 24 + "] 100% 0 B of 0 B, 0/0 files")


def test_counts_from_many_threads_add_up() -> None:
    """add_bytes and file_done from worker threads lose no update."""
    progress = Progress(0, 0, io.StringIO(), tty=False, clock=Clock())

    def work() -> None:
        for _ in range(1000):
            progress.add_bytes(3)
            progress.file_done()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (progress.bytes, progress.files) == (24_000, 8000)


@pytest.mark.parametrize(
    ("kwargs", "prefix"),
    [({}, "taskkit: staging: "), ({"doing": "uploading"}, "taskkit: uploading: ")],
)
def test_a_log_line_says_what_is_being_done(kwargs: dict[str, str], prefix: str) -> None:
    """doing= names the transfer in a log line ('staging' unless told otherwise)."""
    clock = Clock(100.0)
    progress = Progress(2048, 2, io.StringIO(), tty=False, clock=clock, **kwargs)  # type: ignore[arg-type]
    progress.add_bytes(1024)
    clock.now = 101.0
    assert progress.line() == f"{prefix}1.0 KiB of 2.0 KiB, 0/2 files, 1.0 KiB/s"


def test_a_terminal_bar_does_not_repeat_what_is_being_done() -> None:
    """On a TTY the bar stands alone: doing= only names log lines."""
    progress = Progress(10, 1, io.StringIO(), tty=True, clock=Clock(), doing="uploading")
    assert progress.line().startswith("[")
    assert "uploading" not in progress.line()
