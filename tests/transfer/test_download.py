"""taskkit.transfer.download: ranged downloads into a locked partial, resumed from a verified
journal."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskkit.content.digest import CHUNK_SIZE, hash_bytes
from taskkit.exceptions import TransientError
from taskkit.storage.base import RemoteFile, Store
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.transfer.download import JOURNAL_SUFFIX, Fetched, Transfers, locked, remove_partial

SIZE = 2 * CHUNK_SIZE + 1000  # three chunks, the last one short
DEADLINE = 60.0


def chunk_length(index: int, size: int = SIZE) -> int:
    return min(CHUNK_SIZE, size - index * CHUNK_SIZE)


@pytest.fixture
def stores() -> Iterator[Stores]:
    with Stores(RetryBudget(attempts=1)) as opened:
        yield opened


@pytest.fixture
def remote(tmp_path: Path, stores: Stores) -> tuple[Store, RemoteFile, bytes]:
    """A three-chunk file in a local-directory store."""
    data = os.urandom(SIZE)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.bin").write_bytes(data)
    store, key = stores.open(str(tmp_path / "src" / "f.bin"))
    return store, store.stat(key), data


class Reads:
    """Wraps a store's read() to record the offsets asked for."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offsets: list[int] = []
        real = store.read

        def read(file: RemoteFile, offset: int, length: int) -> bytes:
            self.offsets.append(offset)
            return real(file, offset, length)

        monkeypatch.setattr(store, "read", read)

    def chunks(self) -> list[int]:
        """The chunks whose bytes were read (a chunk may take several range requests)."""
        return sorted({offset // CHUNK_SIZE for offset in self.offsets})


def fetch(store: Store, file: RemoteFile, partial: Path) -> tuple[Fetched, int]:
    """One download into ``partial``; returns the result and the bytes reported as reused."""
    reused: list[int] = []
    transfers = Transfers(3, lambda n, was_reused: reused.append(n) if was_reused else None)
    try:
        with locked(partial) as fd:
            return transfers.fetch(store, file, fd, partial), sum(reused)
    finally:
        transfers.close()


def journal_of(partial: Path) -> Path:
    return Path(f"{partial}{JOURNAL_SUFFIX}")


def test_a_download_fills_the_partial_and_notes_every_chunk(
    remote: tuple[Store, RemoteFile, bytes], tmp_path: Path
) -> None:
    """Cold: all bytes fetched, digest right, the journal names the version and each chunk."""
    store, file, data = remote
    partial = tmp_path / "dl" / "f.partial"
    fetched, reused = fetch(store, file, partial)
    assert fetched.digest == hash_bytes(data)
    assert (fetched.transferred, fetched.reused, reused) == (SIZE, 0, 0)
    assert len(fetched.chunks) == 3
    assert partial.read_bytes() == data
    header, *lines = journal_of(partial).read_text().splitlines()
    assert header.split() == [
        "taskkit-partial-v1",
        str(SIZE),
        store.identity(file.key),
        file.version,
    ]
    assert sorted(int(line.split()[0]) for line in lines) == [0, 1, 2]


def test_a_resume_keeps_verified_chunks_and_fetches_the_rest(
    remote: tuple[Store, RemoteFile, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one chunk's bytes were corrupted on disk and the journal's last line was torn,
    only the chunk still matching its noted digest is reused; the corrupted and the unnoted
    chunk are fetched again, and the digest is that of the source."""
    store, file, data = remote
    partial = tmp_path / "dl" / "f.partial"
    fetch(store, file, partial)
    journal = journal_of(partial)
    text = journal.read_text()
    last_line = text.splitlines()[-1]
    torn = int(last_line.split()[0])  # noted last: its line is torn, so it is not noted
    corrupted = (torn + 1) % 3
    (intact,) = {0, 1, 2} - {torn, corrupted}
    with open(partial, "r+b") as f:
        f.seek(corrupted * CHUNK_SIZE + 5)
        byte = f.read(1)
        f.seek(corrupted * CHUNK_SIZE + 5)
        f.write(bytes([byte[0] ^ 0xFF]))
    journal.write_text(text[: len(text) - len(last_line) // 2 - 1])
    assert not journal.read_text().endswith("\n")

    reads = Reads(store, monkeypatch)
    fetched, reported = fetch(store, file, partial)
    assert reads.chunks() == sorted([torn, corrupted])
    assert fetched.reused == chunk_length(intact)
    assert reported == chunk_length(intact)
    assert fetched.transferred == SIZE - chunk_length(intact)
    assert fetched.digest == hash_bytes(data)
    assert partial.read_bytes() == data


def test_a_complete_partial_of_the_same_version_is_not_fetched_again(
    remote: tuple[Store, RemoteFile, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every chunk verified from the journal: no read at all, every byte reused."""
    store, file, data = remote
    partial = tmp_path / "f.partial"
    fetch(store, file, partial)
    reads = Reads(store, monkeypatch)
    fetched, _ = fetch(store, file, partial)
    assert reads.offsets == []
    assert (fetched.reused, fetched.transferred) == (SIZE, 0)
    assert fetched.digest == hash_bytes(data)


def test_a_journal_of_another_version_is_ignored(
    remote: tuple[Store, RemoteFile, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's version changed (another header): nothing is reused, all is fetched,
    and the journal is started afresh for the new version."""
    store, file, _ = remote
    partial = tmp_path / "f.partial"
    fetch(store, file, partial)
    data = os.urandom(SIZE)
    (tmp_path / "src" / "f.bin").write_bytes(data)  # another version, of the same size
    os.utime(tmp_path / "src" / "f.bin", ns=(1, 1))  # whatever the clock's granularity
    newer = store.stat(file.key)
    assert newer.version != file.version
    reads = Reads(store, monkeypatch)
    fetched, reported = fetch(store, newer, partial)
    assert reads.chunks() == [0, 1, 2]
    assert (fetched.reused, reported, fetched.transferred) == (0, 0, SIZE)
    assert fetched.digest == hash_bytes(data)
    assert journal_of(partial).read_text().splitlines()[0].endswith(f" {newer.version}")


def test_a_partial_shorter_than_the_file_is_not_trusted(
    remote: tuple[Store, RemoteFile, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated partial (whatever its journal says) is fetched again in full."""
    store, file, data = remote
    partial = tmp_path / "f.partial"
    fetch(store, file, partial)
    os.truncate(partial, CHUNK_SIZE)
    reads = Reads(store, monkeypatch)
    fetched, _ = fetch(store, file, partial)
    assert reads.chunks() == [0, 1, 2]
    assert fetched.reused == 0
    assert partial.read_bytes() == data


def test_a_small_download_replaces_whatever_the_partial_held(
    tmp_path: Path, stores: Stores
) -> None:
    """A file of one chunk is written whole: leftover longer bytes are cut away."""
    (tmp_path / "small").write_bytes(b"fresh")
    store, key = stores.open(str(tmp_path / "small"))
    partial = tmp_path / "small.partial"
    partial.write_bytes(b"stale and much longer")
    fetched, _ = fetch(store, store.stat(key), partial)
    assert partial.read_bytes() == b"fresh"
    assert fetched.digest == hash_bytes(b"fresh")
    assert not journal_of(partial).exists()


def test_reads_fail_at_once_after_stop(remote: tuple[Store, RemoteFile, bytes]) -> None:
    """Once stop is set, a read that has not started is a TransientError."""
    store, file, _ = remote
    transfers = Transfers(2)
    transfers.stop.set()
    with pytest.raises(TransientError, match="stopped"):
        transfers.read(store, file, 0, 10)


def test_remove_partial_removes_the_file_and_its_journal(tmp_path: Path) -> None:
    """Both go; a missing one is no error."""
    partial = tmp_path / "p"
    partial.write_bytes(b"x")
    journal_of(partial).write_text("j")
    remove_partial(partial)
    remove_partial(partial)
    assert list(tmp_path.iterdir()) == []


# -- locked(): mutual exclusion between processes ----------------------------------------------

HOLDER = """
import os, sys
from pathlib import Path
from taskkit.transfer.download import locked

partial, marker, name, remove = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
print("waiting", flush=True)
with locked(partial) as fd:
    with open(marker, "a") as m:
        m.write(f"enter {name}\\n")
    print("locked", os.fstat(fd).st_ino, os.stat(partial).st_ino, flush=True)
    sys.stdin.readline()
    with open(marker, "a") as m:
        m.write(f"exit {name}\\n")
    if remove == "remove":
        os.unlink(partial)
print("released", flush=True)
"""


class Holder:
    """A process that takes locked(partial), says so, and lets go when told."""

    def __init__(self, partial: Path, marker: Path, name: str, remove: bool = False) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                HOLDER,
                str(partial),
                str(marker),
                name,
                "remove" if remove else "keep",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._buffer = b""

    def _fill(self, timeout: float) -> bool:
        """Read what the process wrote within ``timeout``; False when nothing came."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return False
        self._buffer += os.read(fd, 4096)
        return True

    def line(self) -> str:
        """The next line the process writes (failing at the deadline, not hanging)."""
        deadline = time.monotonic() + DEADLINE
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "the lock holder said nothing in time"
            assert self._fill(left), "the lock holder said nothing in time"
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    def has_output(self) -> bool:
        """Whether the process wrote anything not read yet (without waiting)."""
        return bool(self._buffer) or self._fill(0)

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        """Let the process end (closing its stdin releases a holder still holding); kill it
        only if it does not end by the deadline."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def wait_until_blocked(pid: int, partial: Path) -> None:
    """Poll /proc/locks until ``pid`` waits for the flock of ``partial`` (or fail at the
    deadline): the proof that it is blocked, not merely slow."""
    locks = Path("/proc/locks")
    if not locks.exists():
        pytest.skip("no /proc/locks to see a process wait for a lock")
    inode = os.stat(partial).st_ino
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for line in locks.read_text().splitlines():
            fields = line.split()
            if "->" in fields and str(pid) in fields and fields[-3].endswith(f":{inode}"):
                return
        time.sleep(0.01)
    pytest.fail(f"process {pid} never waited for the lock of {partial}")


def test_locked_excludes_another_process_until_released(tmp_path: Path) -> None:
    """While one process holds locked(partial), another waits in it; it enters only after
    the first left, and no one else can lock the file meanwhile."""
    partial = tmp_path / "f.partial"
    marker = tmp_path / "marker"
    first = Holder(partial, marker, "A")
    second: Holder | None = None
    try:
        assert first.line() == "waiting"
        assert first.line().startswith("locked ")
        fd = os.open(partial, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        second = Holder(partial, marker, "B")
        assert second.line() == "waiting"
        wait_until_blocked(second.proc.pid, partial)
        assert not second.has_output()
        first.release()
        assert first.line() == "released"
        assert second.line().startswith("locked ")
        second.release()
        assert second.line() == "released"
    finally:
        first.finish()
        if second is not None:
            second.finish()
    assert marker.read_text().splitlines() == ["enter A", "exit A", "enter B", "exit B"]
    assert (first.proc.returncode, second.proc.returncode) == (0, 0)


def test_a_waiter_locks_the_new_file_when_the_holder_removed_the_old_one(tmp_path: Path) -> None:
    """The holder deletes the partial (a finished download) before letting go: the waiter
    must not keep the lock of the deleted file, but lock the one now at the path."""
    partial = tmp_path / "f.partial"
    marker = tmp_path / "marker"
    first = Holder(partial, marker, "A", remove=True)
    second: Holder | None = None
    try:
        assert first.line() == "waiting"
        assert first.line().startswith("locked ")
        second = Holder(partial, marker, "B")
        assert second.line() == "waiting"
        wait_until_blocked(second.proc.pid, partial)
        first.release()
        assert first.line() == "released"
        _, held_ino, path_ino = second.line().split()
        assert held_ino == path_ino
        second.release()
        assert second.line() == "released"
    finally:
        first.finish()
        if second is not None:
            second.finish()
    assert os.stat(partial).st_ino == int(path_ino)
    assert marker.read_text().splitlines() == ["enter A", "exit A", "enter B", "exit B"]


def test_a_claim_whose_partial_was_renamed_into_place_meanwhile_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between this process's create of a new partial and its lock, another may open that
    file, lock it first, write it and rename it into place: the claim then gives it up (None,
    so the caller takes the locked path) rather than hold, and write into, a final file."""
    import fcntl

    from taskkit.transfer.download import claim

    partial, final = tmp_path / ".taskkit-0123456789abcdef.partial", tmp_path / "x"
    real = fcntl.flock

    def other_first(fd: int, operation: int) -> None:
        other = os.open(partial, os.O_RDWR)
        os.write(other, b"whole")
        os.close(other)
        os.rename(partial, final)
        partial.write_bytes(b"")  # and a third has claimed the name anew since
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", other_first)
    assert claim(str(partial)) is None
    assert final.read_bytes() == b"whole"
    assert partial.read_bytes() == b""  # the third's, left to it


def test_an_uncontested_claim_is_locked_and_named_by_its_partial(tmp_path: Path) -> None:
    """The common case: the new partial, locked (another claim of it fails), at its name."""
    from taskkit.transfer.download import claim

    partial = tmp_path / ".taskkit-0123456789abcdef.partial"
    fd = claim(str(partial))
    assert fd is not None
    try:
        assert os.fstat(fd).st_ino == partial.stat().st_ino
        assert claim(str(partial)) is None  # there already
    finally:
        os.close(fd)
