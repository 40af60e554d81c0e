"""Tests for taskkit.testing: the Azurite server and the fixtures built on it."""

from __future__ import annotations

import base64
import contextlib
import os
import random
import re
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from taskkit.exceptions import (
    Conflict,
    InputNotFound,
    MisuseError,
    SourceChanged,
    TaskkitError,
    TransientError,
)
from taskkit.storage.base import Store
from taskkit.storage.memory import MemoryStore
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.testing import (
    AZURITE_ENV_VAR,
    INSTALL_HINT,
    Azurite,
    Fault,
    FaultKind,
    FaultyStore,
    Injected,
    find_azurite,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _key_of(server: Azurite) -> str:
    match = re.search(r"AccountKey=([^;]+);", server.connection_string)
    assert match is not None
    return match.group(1)


def _executable(path: Path, body: str = "exit 0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# -- against a real server ---------------------------------------------------------------------


# The async azure SDK hands one-shot uploads (up to 64 MiB) to aiohttp as raw bytes, and aiohttp
# warns above 1 MiB; that is upstream's business, not what this test pins down.
@pytest.mark.azurite
def test_adlfs_round_trip_matches_sdk_view(
    azurite: Azurite, azurite_container: str, tmp_path: Path
) -> None:
    """Bytes written through adlfs (pipe and put) read back identical via adlfs and the SDK."""
    rng = random.Random(20240521)
    payloads = {
        "empty.bin": b"",
        "small.txt": b"hello, blob\n",
        "nested/dir/medium.bin": rng.randbytes(300_000),
        "big.bin": rng.randbytes(5 * 1024 * 1024 + 17),
    }
    fs = azurite.filesystem()
    for name, data in payloads.items():
        if name == "big.bin":
            local = tmp_path / "upload" / name
            local.parent.mkdir()
            local.write_bytes(data)
            fs.put(str(local), f"{azurite_container}/{name}")
        else:
            fs.pipe(f"{azurite_container}/{name}", data)

    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        for name, data in payloads.items():
            assert fs.cat(f"{azurite_container}/{name}") == data, name
            blob = container.get_blob_client(name)
            assert blob.exists(), name
            assert blob.download_blob().readall() == data, name

    downloaded = tmp_path / "download" / "big.bin"
    downloaded.parent.mkdir()
    fs.get(f"{azurite_container}/big.bin", str(downloaded))
    assert downloaded.read_bytes() == payloads["big.bin"]


@pytest.mark.azurite
def test_repr_hides_key(azurite: Azurite) -> None:
    """Neither repr nor str of a server shows its key or connection string, running or not."""
    key = _key_of(azurite)
    for text in (repr(azurite), str(azurite), repr(Azurite())):
        assert key not in text
        assert "AccountKey" not in text
    assert azurite.account_name in repr(azurite)
    assert azurite.blob_endpoint in repr(azurite)


@pytest.mark.azurite
def test_key_stays_out_of_debug_log_and_output(azurite: Azurite) -> None:
    """Azurite masks the AZURITE_ACCOUNTS value, so the key is in neither its log nor output."""
    azurite.log_offset()  # Makes sure startup lines are in the file.
    key = _key_of(azurite)
    assert key not in azurite.debug_log.read_text(encoding="utf-8")
    assert key not in azurite.output_tail()


@pytest.mark.azurite
def test_server_uses_private_random_account(azurite: Azurite, azurite_container: str) -> None:
    """Each server has its own account name and 64-byte key; any other key is refused."""
    assert re.fullmatch(r"tk[a-z0-9]{10}", azurite.account_name)
    assert len(base64.b64decode(_key_of(azurite))) == 64
    assert azurite.blob_endpoint == f"http://127.0.0.1:{azurite.port}/{azurite.account_name}"
    assert Azurite().account_name != azurite.account_name

    wrong_key = base64.b64encode(os.urandom(64)).decode()
    impostor = BlobServiceClient.from_connection_string(
        azurite.connection_string.replace(_key_of(azurite), wrong_key)
    )
    with impostor, pytest.raises(HttpResponseError) as excinfo:
        impostor.get_container_client(azurite_container).get_container_properties()
    assert excinfo.value.status_code == 403
    assert getattr(excinfo.value, "error_code", None) == "AuthorizationFailure"


@pytest.mark.azurite
def test_exit_stops_process_group_and_frees_port(tmp_path: Path) -> None:
    """After the with-block the process has exited, the port refuses, the data folder is gone."""
    with Azurite() as server:
        pid, port, workdir = server.pid, server.port, server.workdir
        assert server.is_running
        assert server.startup_seconds is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert workdir.is_dir()

    assert not server.is_running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 5):
        pass
    assert not workdir.exists()
    assert "stopped" in repr(server)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.blob_endpoint


@pytest.mark.azurite
def test_debug_log_counts_uploads_and_downloads(azurite: Azurite, azurite_container: str) -> None:
    """operations() lists exactly the requests made since log_offset(), in order, by name."""
    since = azurite.log_offset()
    with azurite.blob_service_client() as service:
        blob = service.get_blob_client(azurite_container, "counted/blob.bin")
        blob.upload_blob(b"x" * 1000)
        assert blob.download_blob().readall() == b"x" * 1000
        assert blob.download_blob().readall() == b"x" * 1000
        blob.get_blob_properties()

    assert azurite.operations(since) == [
        "BlockBlob_Upload",
        "Blob_Download",
        "Blob_Download",
        "Blob_GetProperties",
    ]
    assert azurite.operations(azurite.log_offset()) == []
    log = azurite.debug_log.read_text(encoding="utf-8")
    assert f"RequestURL=http://127.0.0.1/{azurite.account_name}/{azurite_container}/counted/" in log


# -- without a server --------------------------------------------------------------------------


def test_start_failure_reports_server_output(tmp_path: Path) -> None:
    """A server that dies at startup raises at once with its last output lines."""
    fake = _executable(tmp_path / "azurite-blob", 'echo "cannot bind: EACCES" >&2; exit 3')
    server = Azurite(fake)
    with pytest.raises(RuntimeError, match=r"exited with code 3[\s\S]*cannot bind: EACCES"):
        server.start()
    assert not server.is_running


def test_start_deadline_stops_whole_process_group(tmp_path: Path) -> None:
    """A server that never listens fails at the deadline, and its children are ended too."""
    child_pid_file = tmp_path / "child.pid"
    fake = _executable(
        tmp_path / "azurite-blob",
        f'sleep 300 & echo $! > "{child_pid_file}"; echo "still starting"; wait',
    )
    server = Azurite(fake, startup_timeout=1.0)
    with pytest.raises(RuntimeError, match=r"did not listen within 1 s[\s\S]*still starting"):
        server.start()
    child = int(child_pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    # A killed child of a dead shell may linger as a zombie until init reaps it: count it dead.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def test_find_prefers_environment_variable(tmp_path: Path) -> None:
    """TASKKIT_AZURITE wins over a local .azurite install and over PATH."""
    chosen = _executable(tmp_path / "chosen" / "azurite-blob")
    _executable(tmp_path / ".azurite" / "node_modules" / ".bin" / "azurite-blob")
    _executable(tmp_path / "bin" / "azurite-blob")
    environ = {AZURITE_ENV_VAR: str(chosen), "PATH": str(tmp_path / "bin")}
    assert find_azurite(cwd=tmp_path, environ=environ) == str(chosen)


def test_find_rejects_wrong_environment_variable(tmp_path: Path) -> None:
    """A TASKKIT_AZURITE that names nothing is an error, not a silent fallback."""
    _executable(tmp_path / "bin" / "azurite-blob")
    environ = {AZURITE_ENV_VAR: str(tmp_path / "missing"), "PATH": str(tmp_path / "bin")}
    with pytest.raises(FileNotFoundError, match=AZURITE_ENV_VAR):
        find_azurite(cwd=tmp_path, environ=environ)


def test_find_walks_up_to_local_install(tmp_path: Path) -> None:
    """From a subfolder, the nearest parent's .azurite install is found before PATH."""
    local = _executable(tmp_path / ".azurite" / "node_modules" / ".bin" / "azurite-blob")
    _executable(tmp_path / "bin" / "azurite-blob")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_azurite(cwd=deep, environ={"PATH": str(tmp_path / "bin")}) == str(local)


def test_find_falls_back_to_path(tmp_path: Path) -> None:
    """Without the variable or a local install, azurite-blob on PATH is used."""
    on_path = _executable(tmp_path / "bin" / "azurite-blob")
    assert find_azurite(cwd=tmp_path, environ={"PATH": str(tmp_path / "bin")}) == str(on_path)


def test_find_explains_how_to_install(tmp_path: Path) -> None:
    """With no Azurite anywhere the error says how to install it."""
    with pytest.raises(FileNotFoundError) as excinfo:
        find_azurite(cwd=tmp_path, environ={"PATH": str(tmp_path)})
    assert str(excinfo.value) == INSTALL_HINT
    assert "npm install --prefix .azurite azurite" in INSTALL_HINT
    assert AZURITE_ENV_VAR in INSTALL_HINT


def test_fixture_fails_rather_than_skips_without_azurite(tmp_path: Path) -> None:
    """A test asking for the azurite fixture fails, with the install hint, if Azurite is missing."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["taskkit.testing"]\n')
    (tmp_path / "test_needs_azurite.py").write_text(
        textwrap.dedent(
            """
            def test_needs_azurite(azurite):
                pass
            """
        )
    )
    env = {
        **os.environ,
        AZURITE_ENV_VAR: str(tmp_path / "no-such-azurite"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
    assert "npm install --prefix .azurite azurite" in result.stdout


# -- FaultyStore: requests that fail on purpose -------------------------------------------------


class Naps:
    """A retry budget's sleep that records instead of waiting; ``during`` runs in each pause."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.during: Callable[[], None] = lambda: None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.during()

    def budget(self, attempts: int = 3) -> RetryBudget:
        return RetryBudget(attempts=attempts, sleep=self.sleep, uniform=lambda _, high: high)


@pytest.fixture(params=["blob", "memory", "file", pytest.param("azure", marks=pytest.mark.azurite)])
def inner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, str]]:
    """A store to wrap and a key in it: a MemoryStore, fsspec's memory://, a local folder,
    a container on Azurite."""
    if request.param == "blob":
        yield MemoryStore("fake"), "c/rec.json"
        return
    options: dict[str, str] = {}
    if request.param == "memory":
        where = f"memory://faulty-{os.getpid()}-{time.monotonic_ns()}"
    elif request.param == "file":
        where = f"file://{tmp_path}/store"
    else:
        options = request.getfixturevalue("azurite").storage_options()
        where = f"az://{request.getfixturevalue('azurite_container')}"
    with Stores(RetryBudget(attempts=1), options) as stores:
        yield stores.open(f"{where}/rec.json")


@pytest.mark.parametrize(
    ("kind", "op", "cls", "said"),
    [
        ("transient", "load", TransientError, "the service answered HTTP 500 InternalError"),
        ("throttled", "list", TransientError, "the service answered HTTP 503 ServerBusy"),
        ("timeout", "stat", TransientError, "the connection timed out"),
        ("precondition", "put", Conflict, "another writer changed it first (HTTP 412"),
        ("precondition", "read", SourceChanged, "it changed while being read"),
    ],
)
def test_each_kind_fails_as_a_store_fails(
    kind: FaultKind, op: str, cls: type[TaskkitError], said: str
) -> None:
    """A fault is the taskkit error the storage boundary makes of the SDK's: its class, its
    exit code (75, retryable) and a line naming the URL; the request never reached the store."""
    memory = MemoryStore("fake")
    memory.put("c/f", b"data", {})
    file = memory.stat("c/f")
    store = FaultyStore(memory, [Fault.on(op, kind=kind)], retry=RetryBudget(attempts=1))
    requests: dict[str, Callable[[], object]] = {
        "load": lambda: store.load("c/f"),
        "list": lambda: store.list("c/"),
        "stat": lambda: store.stat("c/f"),
        "put": lambda: store.put("c/f", b"new", {}, if_match=file.version),
        "read": lambda: store.read(file, 0, 4),
    }
    with pytest.raises(cls) as caught:
        requests[op]()
    assert type(caught.value) is cls
    assert caught.value.exit_code == 75
    verb = {"put": "write", "list": "list"}.get(op, "read")
    assert str(caught.value).startswith(f"cannot {verb} fake://c/")
    assert said in str(caught.value)
    assert store.injected == [Injected(op, "c/f" if op != "list" else "c/", kind, 1)]
    assert memory.load("c/f") == (b"data", file.version)


def test_injected_faults_are_retried_with_the_budget_and_recorded() -> None:
    """The first two loads fail (a 500, then throttling); the third answers: two waits, every
    request and every fault recorded in order."""
    naps = Naps()
    memory = MemoryStore("fake")
    version = memory.put("c/f", b"x", {})
    rules = [Fault.on("load", nth=1), Fault.on("load", nth=2, kind="throttled")]
    store = FaultyStore(memory, rules, retry=naps.budget())
    assert store.load("c/f") == (b"x", version)
    assert naps.sleeps == [0.5, 1.0]
    assert store.calls == [("load", "c/f")] * 3
    assert store.injected == [
        Injected("load", "c/f", "transient", 1),
        Injected("load", "c/f", "throttled", 2),
    ]


def test_a_lost_reply_lands_then_fails(inner: tuple[Store, str]) -> None:
    """Without retries, a put whose reply is lost is a TransientError to the caller, yet the
    store holds what it wrote."""
    store, key = inner
    faulty = FaultyStore(store, [Fault.on("put", kind="lost_reply")], retry=RetryBudget(attempts=1))
    with pytest.raises(TransientError):
        faulty.put(key, b"landed", {})
    found = store.load(key)
    assert found is not None
    assert found[0] == b"landed"


@pytest.mark.parametrize("condition", ["if_absent", "if_match"])
def test_a_retried_put_whose_reply_was_lost_is_a_success(
    inner: tuple[Store, str], condition: str
) -> None:
    """The first try of a conditional put lands and its reply is lost; the retry meets that
    write, a conflict with itself: put() returns the version of its own bytes (any store)."""
    store, key = inner
    before = store.put(key, b"old", {}) if condition == "if_match" else None
    naps = Naps()
    faulty = FaultyStore(store, [Fault.on("put", kind="lost_reply")], retry=naps.budget())
    version = faulty.put(key, b"mine", {}, if_match=before, if_absent=before is None)
    assert store.load(key) == (b"mine", version)
    assert faulty.calls == [("put", key)] * 2
    assert len(naps.sleeps) == 1


def test_a_retried_put_that_meets_another_writer_is_a_conflict(inner: tuple[Store, str]) -> None:
    """The first try times out before it arrives; while it waits, another writer creates the
    file: the retry's conflict is real, and is raised."""
    store, key = inner
    naps = Naps()
    naps.during = lambda: store.put(key, b"theirs", {})
    faulty = FaultyStore(store, [Fault.on("put", kind="timeout")], retry=naps.budget())
    with pytest.raises(Conflict):
        faulty.put(key, b"mine", {}, if_absent=True)
    found = store.load(key)
    assert found is not None
    assert found[0] == b"theirs"


def test_a_retried_delete_and_append_whose_replies_were_lost_are_done_once(
    inner: tuple[Store, str],
) -> None:
    """A conditional delete that landed is a success when the retry finds the file gone; an
    append that landed is not made twice."""
    store, key = inner
    naps = Naps()
    rules = [Fault.on("delete", kind="lost_reply"), Fault.on("append", nth=2, kind="lost_reply")]
    faulty = FaultyStore(store, rules, retry=naps.budget())
    faulty.delete(key, if_match=store.put(key, b"one", {}))
    assert store.load(key) is None
    faulty.append(key, 0, b"ab")
    faulty.append(key, 2, b"cd")
    found = store.load(key)
    assert found is not None
    assert found[0] == b"abcd"
    assert len(naps.sleeps) == 2


def test_errors_of_the_inner_store_pass_unchanged_and_are_not_retried_again() -> None:
    """The wrapped store's own errors (a missing file; a failure it already retried) reach the
    caller after one request: only injected faults are retried by the wrapper."""
    naps = Naps()
    below = FaultyStore(MemoryStore("fake"), [Fault.on("load")], retry=RetryBudget(attempts=1))
    faulty = FaultyStore(below, retry=naps.budget())
    with pytest.raises(InputNotFound):
        faulty.stat("c/none")
    with pytest.raises(TransientError):
        faulty.load("c/none")
    assert faulty.calls == [("stat", "c/none"), ("load", "c/none")]
    assert naps.sleeps == []


def test_rules_count_the_requests_of_their_operation_and_keys() -> None:
    """nth counts only the requests of the rule's op on keys under its prefix; "*" counts
    every request."""
    memory = MemoryStore("fake")
    rules = [Fault.on("put", nth=2, key="c/b"), Fault.on("*", nth=5)]
    faulty = FaultyStore(memory, rules, retry=RetryBudget(attempts=1))
    outcomes = []
    for key in ("c/a1", "c/b1", "c/a2", "c/b2", "c/a3"):
        try:
            faulty.put(key, b"x", {})
        except TransientError:
            outcomes.append(key)
    assert outcomes == ["c/b2", "c/a3"]
    assert [(i.key, i.call) for i in faulty.injected] == [("c/b2", 4), ("c/a3", 5)]


def test_a_seed_draws_the_same_faults_for_the_same_requests() -> None:
    """Probabilistic rules draw from the seeded source: the same seed fails the same
    requests, another seed others; about the chance given fail."""

    def failures(seed: int) -> list[int]:
        faulty = FaultyStore(
            MemoryStore("fake"), [Fault.sometimes("load", 0.3)], seed=seed,
            retry=RetryBudget(attempts=1),
        )  # fmt: skip
        for n in range(200):
            with contextlib.suppress(TransientError):
                faulty.load(f"c/{n}")
        return [int(i.key[2:]) for i in faulty.injected]

    first = failures(1)
    assert failures(1) == first
    assert failures(2) != first
    assert 30 <= len(first) <= 90


def test_a_writer_fails_its_blocks_and_commit_without_retrying() -> None:
    """A block that fails is not stored and not retried; a commit whose reply is lost
    publishes the file, and the caller hears of a failure."""
    memory = MemoryStore("fake")
    rules = [Fault.on("write", kind="throttled"), Fault.on("commit", kind="lost_reply")]
    faulty = FaultyStore(memory, rules, retry=Naps().budget())
    writer = faulty.writer("c/big")
    assert writer.parallel
    with pytest.raises(TransientError):
        writer.write("b1", b"one")
    assert writer.known() == frozenset()
    writer.write("b1", b"one")
    with pytest.raises(TransientError):
        writer.commit(["b1"], {})
    assert memory.data("c/big") == b"one"
    assert faulty.calls == [("write", "c/big"), ("write", "c/big"), ("commit", "c/big")]


@pytest.mark.parametrize(
    "rule",
    [
        {"op": "rename", "nth": 1},
        {"op": "put", "kind": "gone", "nth": 1},
        {"op": "put", "nth": 0},
        {"op": "put", "probability": 1.5},
        {"op": "put", "nth": 1, "probability": 0.5},
        {"op": "put"},
    ],
)
def test_a_rule_that_cannot_be_is_misuse(rule: dict[str, Any]) -> None:
    """An unknown op or kind, nth below 1, a probability outside [0, 1], or both or neither
    of nth and probability: MisuseError (70) when the rule is made."""
    with pytest.raises(MisuseError) as caught:
        Fault(**rule)
    assert caught.value.exit_code == 70


def test_it_serves_a_run_when_mounted() -> None:
    """Mounted in Stores, the wrapped MemoryStore answers URLs; the docstring's example."""
    memory = MemoryStore("fake")
    naps = Naps()
    faulty = FaultyStore(memory, [Fault.on("put", nth=1, kind="lost_reply")], retry=naps.budget())
    with Stores(mounts={"fake://": faulty}) as stores:
        store, key = stores.open("fake://c/outcome.json")
        version = store.put(key, b"{}", {}, if_absent=True)
    assert faulty.injected == [Injected("put", "c/outcome.json", "lost_reply", 1)]
    assert memory.load("c/outcome.json") == (b"{}", version)
