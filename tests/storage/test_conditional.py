"""taskkit.storage.base: one-request loads, and writes and deletes conditional on a file's version.

Local files and ``memory://`` in-process, real processes racing on one local file, and a real
Azurite server for Azure (marked ``azurite``): of writers racing on one condition exactly one
wins, and a retried write never loses to its own earlier try. The tests that take ``place`` and
``stores`` and nothing of fsspec run again on a MemoryStore in ``test_memory.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec
import pytest
from azure.core.exceptions import ServiceResponseTimeoutError

import taskkit.storage.base
import taskkit.storage.fsstore
from taskkit.exceptions import ConfigError, Conflict, MisuseError, TaskkitError, TransientError
from taskkit.storage.base import Store
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.testing import Azurite

RACERS = 8
#: Races per test, each on its own key: one race may pass by luck, thirty-two in a row do not.
ROUNDS = 32
#: One racer. For each (url, if_match) of its rounds it says "ready", waits for a byte on stdin
#: (the barrier the test releases once every racer is ready), tries its conditional put and
#: says how that went.
RACER = """
import json, sys
from taskkit.exceptions import Conflict
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores

name, rounds = sys.argv[1], json.loads(sys.argv[2])
with Stores(RetryBudget(attempts=1)) as stores:
    for url, if_match in rounds:
        store, key = stores.open(url)
        print("ready", flush=True)
        sys.stdin.read(1)
        try:
            version = store.put(key, name.encode(), {}, if_match=if_match, if_absent=not if_match)
        except Conflict:
            print("conflict -", flush=True)
        else:
            print("won", version, flush=True)
"""


class Recorder:
    """A clock and a sleep for RetryBudget that record instead of waiting; ``during_sleep``
    runs in the pause between two tries (another writer acting while we wait)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.during_sleep: Callable[[], None] = lambda: None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.during_sleep()

    def clock(self) -> float:
        return self.now

    def budget(self, attempts: int = 3) -> RetryBudget:
        return RetryBudget(
            attempts=attempts, sleep=self.sleep, clock=self.clock, uniform=lambda _, high: high
        )


# -- local files and memory:// -----------------------------------------------------------------


@pytest.fixture
def memory() -> Iterator[None]:
    """fsspec's process-wide memory filesystem, empty before and after the test."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    yield
    fs.store.clear()


@pytest.fixture(params=["file", "memory"])
def place(request: pytest.FixtureRequest, tmp_path: Path, memory: None) -> str:
    """The URL of a directory for records: a local one (file://) or an in-memory one."""
    if request.param == "file":
        return f"file://{tmp_path}/journal"
    return f"memory://journal-{uuid.uuid4().hex}"


def opened(stores: Stores, place: str, name: str = "rec.json") -> tuple[Store, str]:
    return stores.open(f"{place}/{name}")


def names_in(store: Store, key: str) -> list[str]:
    """Every name in the directory of ``key``, temporary files included."""
    fs: Any = store.fs  # type: ignore[attr-defined]
    parent = key.rsplit("/", 1)[0]
    return sorted(name.rsplit("/", 1)[1] for name in fs.find(parent))


def test_load_of_a_missing_file_is_none(place: str, stores: Stores) -> None:
    """No file at the key (not even its directory): None, not an error."""
    store, key = opened(stores, place)
    assert store.load(key) is None


def test_put_and_load_agree_on_one_version_with_stat_and_list(place: str, stores: Stores) -> None:
    """load() gives the bytes put() wrote and the version put() returned, which is also the
    version stat() and list() report for the file."""
    store, key = opened(stores, place)
    version = store.put(key, b'{"n": 1}', {}, if_absent=True)
    assert store.load(key) == (b'{"n": 1}', version)
    assert store.stat(key).version == version
    assert [(f.key, f.version) for f in store.list(key.rsplit("/", 1)[0])] == [(key, version)]


def test_an_unconditional_put_still_overwrites(place: str, stores: Stores) -> None:
    """Without a condition, put() replaces whatever is there, as before."""
    store, key = opened(stores, place)
    store.put(key, b"one", {})
    version = store.put(key, b"two", {})
    assert store.load(key) == (b"two", version)


def test_if_absent_on_an_existing_file_is_a_conflict_and_changes_nothing(
    place: str, stores: Stores
) -> None:
    """The second if_absent put loses: Conflict (exit 75) naming the URL, the file as it was."""
    store, key = opened(stores, place)
    version = store.put(key, b"first", {}, if_absent=True)
    with pytest.raises(Conflict, match="another writer changed it first") as caught:
        store.put(key, b"second", {}, if_absent=True)
    assert caught.value.exit_code == 75
    assert store.url(key) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert store.load(key) == (b"first", version)


def test_if_match_with_a_stale_version_is_a_conflict(place: str, stores: Stores) -> None:
    """A put conditional on a version that was replaced since loses, and changes nothing."""
    store, key = opened(stores, place)
    old = store.put(key, b"one", {}, if_absent=True)
    new = store.put(key, b"two", {}, if_match=old)
    with pytest.raises(Conflict):
        store.put(key, b"three", {}, if_match=old)
    assert store.load(key) == (b"two", new)


def test_if_match_with_the_current_version_writes_a_new_version(place: str, stores: Stores) -> None:
    """A put on the current version wins and returns a new version, even for the very same
    bytes (same size; the same second, as likely as not)."""
    store, key = opened(stores, place)
    versions = [store.put(key, b"same", {}, if_absent=True)]
    for _ in range(5):
        versions.append(store.put(key, b"same", {}, if_match=versions[-1]))
        assert store.load(key) == (b"same", versions[-1])
    assert len(set(versions)) == len(versions)


def test_if_match_on_a_missing_file_is_a_conflict(place: str, stores: Stores) -> None:
    """A version cannot match a file that is not there: Conflict, and nothing is created."""
    store, key = opened(stores, place)
    version = store.put(key, b"one", {})
    store.delete(key)
    with pytest.raises(Conflict, match="gone"):
        store.put(key, b"two", {}, if_match=version)
    assert store.load(key) is None


@pytest.mark.parametrize("if_match", ["v1", "", 7])
def test_a_bad_condition_is_misuse_before_any_write(
    place: str, stores: Stores, if_match: Any
) -> None:
    """Both conditions at once, or a version that is not a non-empty string: MisuseError (70),
    and nothing is written."""
    store, key = opened(stores, place)
    with pytest.raises(MisuseError) as caught:
        store.put(key, b"x", {}, if_match=if_match, if_absent=bool(if_match == "v1"))
    assert caught.value.exit_code == 70
    assert store.load(key) is None


def test_delete_if_match_removes_only_the_current_version(place: str, stores: Stores) -> None:
    """A delete on a stale version is a Conflict and keeps the file; on the current version
    it removes it; on a file already gone it is a Conflict; without a condition a missing file
    is fine."""
    store, key = opened(stores, place)
    old = store.put(key, b"one", {}, if_absent=True)
    new = store.put(key, b"two", {}, if_match=old)
    with pytest.raises(Conflict):
        store.delete(key, if_match=old)
    assert store.load(key) == (b"two", new)
    store.delete(key, if_match=new)
    assert store.load(key) is None
    with pytest.raises(Conflict, match="gone"):
        store.delete(key, if_match=new)
    store.delete(key)


def test_no_partial_or_temporary_file_is_left(place: str, stores: Stores) -> None:
    """After wins, conflicts and deletes, the directory holds the records and nothing else."""
    store, key = opened(stores, place)
    other_store, other = opened(stores, place, "other.json")
    version = store.put(key, b"one", {}, if_absent=True)
    for attempt in (lambda: store.put(key, b"x", {}, if_absent=True),
                    lambda: store.put(key, b"x", {}, if_match="stale"),
                    lambda: store.delete(key, if_match="stale")):  # fmt: skip
        with pytest.raises(Conflict):
            attempt()
    store.put(key, b"two", {}, if_match=version)
    other_store.put(other, b"three", {}, if_absent=True)
    assert names_in(store, key) == ["other.json", "rec.json"]


def test_a_conflict_is_not_retried(place: str) -> None:
    """A Conflict is raised after one try, with no wait: the same request would lose again."""
    recorder = Recorder()
    with Stores(recorder.budget(attempts=4)) as stores:
        store, key = opened(stores, place)
        store.put(key, b"one", {}, if_absent=True)
        with pytest.raises(Conflict):
            store.put(key, b"two", {}, if_absent=True)
    assert recorder.sleeps == []


def lose_first_reply(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, *, landed: bool
) -> list[int]:
    """Make the first call of ``owner.<name>`` fail with a dropped connection, after doing
    its work when ``landed`` (the reply of a request that took effect was lost), before it
    otherwise (the request never arrived). The calls are counted."""
    real = getattr(owner, name)
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1 and not landed:
            raise ConnectionResetError("connection reset by peer")
        result = real(*args, **kwargs)
        if len(calls) == 1:
            raise ConnectionResetError("connection reset by peer")
        return result

    monkeypatch.setattr(owner, name, flaky)
    return calls


@pytest.mark.parametrize("condition", ["if_absent", "if_match"])
def test_a_retried_put_whose_first_try_landed_is_a_success(
    place: str, monkeypatch: pytest.MonkeyPatch, condition: str
) -> None:
    """The first try writes the file, then its connection drops; the retry meets the file the
    first try wrote, a conflict with itself: put() returns that file's version instead."""
    recorder = Recorder()
    with Stores(recorder.budget()) as stores:
        store, key = opened(stores, place)
        before = store.put(key, b"old", {}) if condition == "if_match" else None
        calls = lose_first_reply(monkeypatch, store, "_published", landed=True)
        if before is None:
            version = store.put(key, b"mine", {}, if_absent=True)
        else:
            version = store.put(key, b"mine", {}, if_match=before)
        assert store.load(key) == (b"mine", version)
    assert len(calls) == 1  # the retry stopped at its check: the file was no longer absent/old
    assert len(recorder.sleeps) == 1


def test_a_retried_put_that_meets_another_writer_is_a_conflict(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try never arrives; while it waits to retry, another writer creates the file
    with other bytes: the retry's conflict is real, and is raised."""
    recorder = Recorder()
    with Stores(recorder.budget()) as stores:
        store, key = opened(stores, place)
        fs: Any = store.fs  # type: ignore[attr-defined]
        recorder.during_sleep = lambda: fs.pipe_file(key, b"theirs")
        lose_first_reply(monkeypatch, store, "_write", landed=False)
        with pytest.raises(Conflict):
            store.put(key, b"mine", {}, if_absent=True)
        found = store.load(key)
        assert found is not None
        assert found[0] == b"theirs"


def test_a_first_try_conflict_stands_even_for_the_same_bytes(place: str, stores: Stores) -> None:
    """Only a retry may be excused: a put whose first try conflicts is a Conflict, though the
    file holds the very bytes it wanted to write (another writer's, not its own)."""
    store, key = opened(stores, place)
    store.put(key, b"same", {}, if_absent=True)
    with pytest.raises(Conflict):
        store.put(key, b"same", {}, if_absent=True)


def test_a_retried_delete_whose_first_try_landed_is_a_success(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try deletes the file, then its connection drops; the retry finds no file,
    which is the first try's work: no Conflict."""
    recorder = Recorder()
    with Stores(recorder.budget()) as stores:
        store, key = opened(stores, place)
        version = store.put(key, b"one", {}, if_absent=True)
        fs: Any = store.fs  # type: ignore[attr-defined]
        lose_first_reply(monkeypatch, fs, "rm_file", landed=True)
        store.delete(key, if_match=version)
        assert store.load(key) is None
    assert len(recorder.sleeps) == 1


def test_local_versions_are_new_even_when_the_clock_stands_still(
    tmp_path: Path, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local version is size, mtime and inode, and a filesystem reuses inodes: A -> B -> A'
    with a coarse clock could give A' the version of A. Each conditional write is stamped later
    than the file it replaces, so versions never repeat, even with the clock stopped."""
    stopped = 1_700_000_000_000_000_000
    monkeypatch.setattr(taskkit.storage.fsstore.time, "time_ns", lambda: stopped)
    store, key = stores.open(f"file://{tmp_path}/rec.json")
    versions = [store.put(key, b"same", {}, if_absent=True)]
    stamps = [os.stat(key).st_mtime_ns]
    for _ in range(10):
        versions.append(store.put(key, b"same", {}, if_match=versions[-1]))
        stamps.append(os.stat(key).st_mtime_ns)
    assert len(set(versions)) == len(versions)
    assert stamps[0] == stopped
    assert all(later > earlier for earlier, later in itertools.pairwise(stamps))


def test_a_load_that_meets_a_rewrite_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a store without a read of file and version together, a version that changed during
    the read is a transient failure, retried: the bytes returned are of the version returned."""
    recorder = Recorder()
    with Stores(recorder.budget()) as stores:
        store, key = stores.open(f"memory://journal-{uuid.uuid4().hex}/rec.json")
        store.put(key, b"one", {})
        fs: Any = store.fs  # type: ignore[attr-defined]
        real = fs.cat_file
        calls: list[int] = []

        def rewritten_while_read(path: str, *args: Any, **kwargs: Any) -> Any:
            data = real(path, *args, **kwargs)
            calls.append(1)
            if len(calls) == 1:
                store.put(key, b"two!", {})
            return data

        monkeypatch.setattr(fs, "cat_file", rewritten_while_read)
        data, version = store.load(key) or (b"", "")
        assert (data, version) == (b"two!", store.stat(key).version)
    assert len(recorder.sleeps) == 1


def test_a_local_load_of_a_directory_is_an_error(tmp_path: Path, stores: Stores) -> None:
    """A directory at the key is not a missing record: it is an error, not None."""
    (tmp_path / "rec.json").mkdir()
    store, key = stores.open(f"file://{tmp_path}/rec.json")
    with pytest.raises(TaskkitError):
        store.load(key)


# -- real processes racing on one local file ----------------------------------------------------


def race(rounds: list[tuple[str, str | None]]) -> list[list[tuple[str, str]]]:
    """RACERS processes race each round (url, if_match) together, released by a barrier once
    all are ready; per round, what each racer said: ("won", version) or ("conflict", "-")."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argument = json.dumps(rounds)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, f"racer-{n}", argument],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(RACERS)
    ]
    said: list[list[tuple[str, str]]] = []
    try:
        pipes = [(racer.stdin, racer.stdout) for racer in racers]
        for _ in rounds:
            for _, out in pipes:
                assert out is not None
                assert out.readline() == "ready\n"
            for into, _ in pipes:  # every racer is blocked reading its stdin: release them all
                assert into is not None
                into.write("g")
                into.flush()
            said.append([tuple(out.readline().split()) for _, out in pipes])  # type: ignore[misc, union-attr]
        for racer in racers:
            racer.communicate(timeout=60)
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    assert [racer.returncode for racer in racers] == [0] * RACERS
    return said


def assert_one_winner(stores: Stores, url: str, said: list[tuple[str, str]]) -> None:
    """One racer won, the others got Conflict, the file holds the winner's bytes at the version
    it was told, and no temporary file is left."""
    won = [n for n, (outcome, _) in enumerate(said) if outcome == "won"]
    assert len(won) == 1, said
    assert [outcome for outcome, _ in said].count("conflict") == RACERS - 1
    store, key = stores.open(url)
    assert store.load(key) == (f"racer-{won[0]}".encode(), said[won[0]][1])


def test_processes_racing_if_absent_on_a_local_file_have_one_winner(
    tmp_path: Path, stores: Stores
) -> None:
    """Eight processes released together put(if_absent=True) on one local file: one wins."""
    urls = [f"file://{tmp_path}/journal/outcome-{n}.json" for n in range(ROUNDS)]
    for url, said in zip(urls, race([(url, None) for url in urls]), strict=True):
        assert_one_winner(stores, url, said)
    store, key = stores.open(urls[0])
    assert names_in(store, key) == sorted(f"outcome-{n}.json" for n in range(ROUNDS))


def test_processes_racing_if_match_on_a_local_file_have_one_winner(
    tmp_path: Path, stores: Stores
) -> None:
    """Eight processes released together put(if_match=V0) on one local file: one wins."""
    urls = [f"file://{tmp_path}/journal/outcome-{n}.json" for n in range(ROUNDS)]
    rounds: list[tuple[str, str | None]] = []
    for url in urls:
        store, key = stores.open(url)
        rounds.append((url, store.put(key, b"start", {}, if_absent=True)))
    for url, said in zip(urls, race(rounds), strict=True):
        assert_one_winner(stores, url, said)
    store, key = stores.open(urls[0])
    assert names_in(store, key) == sorted(f"outcome-{n}.json" for n in range(ROUNDS))


# -- Azure, on a real Azurite server -----------------------------------------------------------


@pytest.fixture
def azure(azurite: Azurite, azurite_container: str) -> Iterator[tuple[Store, str]]:
    """An Azure store on the session's Azurite, and the key of a record in a new container."""
    with Stores(RetryBudget(attempts=1), azurite.storage_options()) as stores:
        yield stores.open(f"az://{azurite_container}/journal/rec.json")


@pytest.mark.azurite
def test_azure_load_is_one_download_request(azurite: Azurite, azure: tuple[Store, str]) -> None:
    """load() of a missing blob is None, of a blob its bytes and etag: each one Blob_Download,
    and the etag is the quoted form put() and stat() give."""
    store, key = azure
    since = azurite.log_offset()
    assert store.load(key) is None
    assert azurite.operations(since) == ["Blob_Download"]
    version = store.put(key, b'{"n": 1}', {}, if_absent=True)
    since = azurite.log_offset()
    assert store.load(key) == (b'{"n": 1}', version)
    assert azurite.operations(since) == ["Blob_Download"]
    assert version.startswith('"')
    assert version == store.stat(key).version


@pytest.mark.azurite
def test_azure_load_in_a_missing_container_is_a_config_error(azure: tuple[Store, str]) -> None:
    """A missing blob is None, but a missing container is a setting to fix (78), as for writes."""
    store, _ = azure
    with pytest.raises(ConfigError, match="does not exist") as caught:
        store.load("no-such-container/rec.json")
    assert caught.value.exit_code == 78


@pytest.mark.azurite
def test_azure_if_absent_on_an_existing_blob_is_a_conflict(azure: tuple[Store, str]) -> None:
    """Azure answers If-None-Match: * on an existing blob with 409 BlobAlreadyExists: Conflict,
    one line naming the URL, the blob unchanged."""
    store, key = azure
    version = store.put(key, b"first", {}, if_absent=True)
    with pytest.raises(Conflict, match="409 BlobAlreadyExists") as caught:
        store.put(key, b"second", {}, if_absent=True)
    assert store.url(key) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert store.load(key) == (b"first", version)


@pytest.mark.azurite
def test_azure_if_match_conflicts_on_a_stale_version_and_writes_on_the_current(
    azure: tuple[Store, str],
) -> None:
    """If-Match on a replaced etag is 412 ConditionNotMet (Conflict, nothing written); on the
    current etag the write lands and returns the new quoted etag, the one stat() reports."""
    store, key = azure
    old = store.put(key, b"one", {}, if_absent=True)
    new = store.put(key, b"two", {}, if_match=old)
    assert new != old
    assert new.startswith('"')
    assert new == store.stat(key).version
    with pytest.raises(Conflict, match="412 ConditionNotMet"):
        store.put(key, b"three", {}, if_match=old)
    assert store.load(key) == (b"two", new)


@pytest.mark.azurite
def test_azure_if_match_on_a_missing_blob_is_a_conflict(azure: tuple[Store, str]) -> None:
    """If-Match cannot match a blob that is not there: Conflict, and no blob is created."""
    store, key = azure
    version = store.put(key, b"one", {})
    store.delete(key)
    with pytest.raises(Conflict):
        store.put(key, b"two", {}, if_match=version)
    assert store.load(key) is None


@pytest.mark.azurite
def test_azure_conditional_writes_in_a_missing_container_are_config_errors(
    azure: tuple[Store, str],
) -> None:
    """A missing container is not a conflict: ConfigError (78) for put and delete alike."""
    store, _ = azure
    with pytest.raises(ConfigError):
        store.put("no-such-container/rec.json", b"x", {}, if_absent=True)
    with pytest.raises(ConfigError):
        store.delete("no-such-container/rec.json", if_match='"0x1"')


@pytest.mark.azurite
def test_azure_delete_if_match(azure: tuple[Store, str]) -> None:
    """Delete on a stale etag: Conflict, blob kept; on the current etag: gone; on a missing
    blob: Conflict."""
    store, key = azure
    old = store.put(key, b"one", {}, if_absent=True)
    new = store.put(key, b"two", {}, if_match=old)
    with pytest.raises(Conflict):
        store.delete(key, if_match=old)
    assert store.load(key) == (b"two", new)
    store.delete(key, if_match=new)
    assert store.load(key) is None
    with pytest.raises(Conflict):
        store.delete(key, if_match=new)


@pytest.mark.azurite
def test_azure_threads_racing_if_absent_have_one_winner(azure: tuple[Store, str]) -> None:
    """Eight threads released by one barrier put(if_absent=True) on one blob: one wins."""
    store, key = azure
    barrier = threading.Barrier(RACERS)

    def racer(n: int) -> str | None:
        barrier.wait()
        try:
            return store.put(key, f"racer-{n}".encode(), {}, if_absent=True)
        except Conflict:
            return None

    with ThreadPoolExecutor(RACERS) as pool:
        outcomes = list(pool.map(racer, range(RACERS)))
    won = [n for n, version in enumerate(outcomes) if version is not None]
    assert len(won) == 1
    assert store.load(key) == (f"racer-{won[0]}".encode(), outcomes[won[0]])


def lose_first_azure_reply(monkeypatch: pytest.MonkeyPatch, store: Store, *, landed: bool) -> None:
    """The store's first request fails with a read timeout: after Azurite served it when
    ``landed`` (the reply was lost), before it was sent otherwise."""
    real = store._sync  # type: ignore[attr-defined]
    calls: list[int] = []

    def flaky(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1 and not landed:
            raise ServiceResponseTimeoutError("read timed out")
        result = real(*args)
        if len(calls) == 1:
            raise ServiceResponseTimeoutError("read timed out")
        return result

    monkeypatch.setattr(store, "_sync", flaky)


@pytest.mark.azurite
def test_azure_retried_put_whose_first_try_landed_is_a_success(
    azurite: Azurite, azurite_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azurite really stores the first try's blob, but the client sees a timeout (as when the
    reply is lost). The retry gets 409 from its own blob: put() loads it, finds its own bytes,
    and returns that etag. What Azurite served: two uploads and one download."""
    recorder = Recorder()
    with Stores(recorder.budget(), azurite.storage_options()) as stores:
        store, key = stores.open(f"az://{azurite_container}/journal/rec.json")
        lose_first_azure_reply(monkeypatch, store, landed=True)
        since = azurite.log_offset()
        version = store.put(key, b"mine", {}, if_absent=True)
        assert azurite.operations(since) == ["BlockBlob_Upload"] * 2 + ["Blob_Download"]
        assert version == store.stat(key).version
        assert store.load(key) == (b"mine", version)
    assert len(recorder.sleeps) == 1


@pytest.mark.azurite
def test_azure_retried_put_that_meets_another_writer_is_a_conflict(
    azurite: Azurite, azurite_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try never reaches Azurite; while it waits, another client writes the blob:
    the retry's 409 is a real conflict, and put() raises it."""
    recorder = Recorder()
    with (
        azurite.blob_service_client() as other,
        Stores(recorder.budget(), azurite.storage_options()) as stores,
    ):
        store, key = stores.open(f"az://{azurite_container}/journal/rec.json")
        blob = other.get_blob_client(azurite_container, "journal/rec.json")
        recorder.during_sleep = lambda: blob.upload_blob(b"theirs")
        lose_first_azure_reply(monkeypatch, store, landed=False)
        with pytest.raises(Conflict):
            store.put(key, b"mine", {}, if_absent=True)
        found = store.load(key)
        assert found is not None
        assert found[0] == b"theirs"


def test_conflict_is_a_transient_error_that_store_call_does_not_retry() -> None:
    """Conflict exits 75 like any TransientError, but Store.call raises it after one try."""
    recorder = Recorder()
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise Conflict("cannot write x: another writer changed it first")

    with pytest.raises(Conflict):
        Store(recorder.budget(attempts=4)).call(action, "cannot write x")
    assert issubclass(Conflict, TransientError)
    assert calls == [1]
    assert recorder.sleeps == []
