"""Test helpers for taskkit and for the projects that use it: a real Azurite blob server, and a
store that fails on purpose.

This module ships with taskkit on purpose, so that users test their tasks the way taskkit tests
itself. It needs pytest (``pip install taskkit[test]``). Enable the fixtures in a ``conftest.py``::

    pytest_plugins = ["taskkit.testing"]

and ask for ``azurite`` (one server for the whole session) or ``azurite_container`` (a fresh,
empty container per test, named by the fixture's value).

:class:`FaultyStore` wraps any store (a :class:`~taskkit.storage.memory.MemoryStore`, a local
folder, Azurite) and makes chosen requests fail as the network and the service make them fail:
5xx answers, timeouts, throttling, a reply lost after the write landed, a failed precondition.

Invariants:

- Every server gets its own free loopback port, its own data folder and its own random account
  name and key (passed through ``AZURITE_ACCOUNTS``); the well-known emulator account is never
  used, so nothing here relies on a published key and two servers never share state.
- The key stays in memory: no repr, log line or error message of this module shows it.
- Readiness is the server's own "listens on" line, awaited with a deadline; nothing sleeps.
- A stopped server is gone: its whole process group has exited and its data folder is deleted.
- A fault is an upstream error translated by the storage boundary's own
  :func:`~taskkit.storage.errors.translate`, so callers meet exactly the error a real store
  raises; every fault injected is recorded.

Azurite itself comes from npm: ``npm install --prefix .azurite azurite`` at the repository root
(``make test`` does it), or point ``TASKKIT_AZURITE`` at an ``azurite-blob`` executable.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar, get_args

import pytest

from taskkit.exceptions import Conflict, MisuseError, SourceChanged, TaskkitError
from taskkit.storage.base import RemoteFile, Store, Writer, is_conditional
from taskkit.storage.errors import translate

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

    from taskkit.storage.retry import RetryBudget

__all__ = [
    "AZURITE_ENV_VAR",
    "INSTALL_HINT",
    "OPERATIONS",
    "Azurite",
    "Fault",
    "FaultKind",
    "FaultyStore",
    "Injected",
    "Operation",
    "azurite",
    "azurite_container",
    "find_azurite",
]

AZURITE_ENV_VAR = "TASKKIT_AZURITE"
INSTALL_HINT = (
    "Azurite (the Azure Storage emulator) was not found. Install it at the repository root with "
    "`npm install --prefix .azurite azurite` (`make test` does this), or set "
    f"{AZURITE_ENV_VAR} to the path of an `azurite-blob` executable."
)

_LOCAL_BIN = Path(".azurite", "node_modules", ".bin", "azurite-blob")
_LISTENING = re.compile(r"listens on (?P<url>https?://\S+)")
_OPERATION = re.compile(r"^\S+ (?P<request>\S+) \w+: DispatchMiddleware: Operation=(?P<op>\w+)")
_REQUEST_URL = re.compile(
    r"^\S+ (?P<request>\S+) \w+: \S+: RequestMethod=\S+ RequestURL=(?P<url>\S+)"
)
_BARRIER_PREFIX = "tk-log-barrier-"
_OUTPUT_TAIL_LINES = 40


def find_azurite(
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Return the path of the ``azurite-blob`` executable to run.

    Looked up in this order: the ``TASKKIT_AZURITE`` environment variable; then
    ``.azurite/node_modules/.bin/azurite-blob`` in *cwd* or the nearest parent folder that has
    one; then ``azurite-blob`` on ``PATH``. Raises ``FileNotFoundError`` with an install hint.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(AZURITE_ENV_VAR)
    if explicit:
        # An explicit choice that is wrong must say so, not quietly fall back to another Azurite.
        found = (
            explicit if Path(explicit).is_file() else shutil.which(explicit, path=env.get("PATH"))
        )
        if found is None:
            raise FileNotFoundError(f"{AZURITE_ENV_VAR}={explicit!r} names no file. {INSTALL_HINT}")
        return found
    start = (Path.cwd() if cwd is None else cwd).resolve()
    for folder in (start, *start.parents):
        candidate = folder / _LOCAL_BIN
        if candidate.is_file():
            return str(candidate)
    on_path = shutil.which("azurite-blob", path=env.get("PATH"))
    if on_path is not None:
        return on_path
    raise FileNotFoundError(INSTALL_HINT)


def _random_account_name() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "tk" + "".join(secrets.choice(alphabet) for _ in range(10))


class Azurite:
    """A private ``azurite-blob`` server on a free loopback port; a context manager.

    ``with Azurite() as server:`` starts it and waits until it listens; leaving the block stops
    the process group and deletes the data folder. Every request is written to ``debug_log``;
    ``log_offset()`` and ``operations()`` count them (e.g. ``Blob_Download``,
    ``BlockBlob_Upload``).
    """

    def __init__(
        self,
        executable: str | os.PathLike[str] | None = None,
        *,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._executable = None if executable is None else os.fspath(executable)
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self.account_name = _random_account_name()
        self._key = base64.b64encode(os.urandom(64)).decode("ascii")
        self._workdir: Path | None = None
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=_OUTPUT_TAIL_LINES)
        self._listening = threading.Event()
        self._url: str | None = None
        self.startup_seconds: float | None = None
        # Request ids of our own log barriers, so that operations() does not count them.
        self._barrier_requests: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Azurite:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and return once it accepts connections (or raise ``RuntimeError``)."""
        if self._process is not None:
            raise RuntimeError(f"{self!r} is already started.")
        executable = self._executable or find_azurite()
        self._output.clear()
        self._workdir = Path(tempfile.mkdtemp(prefix="taskkit-azurite-"))
        data = self._workdir / "data"
        data.mkdir()
        command = [
            executable,
            "--blobHost",
            "127.0.0.1",
            # Port 0: the kernel picks a free port and Azurite prints it, so no race with others.
            "--blobPort",
            "0",
            "--location",
            str(data),
            "--debug",
            str(self.debug_log),
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ]
        env = {**os.environ, "AZURITE_ACCOUNTS": f"{self.account_name}:{self._key}"}
        started = time.monotonic()
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=env,
                cwd=self._workdir,
                start_new_session=True,
            )
        except OSError as exc:
            self._remove_workdir()
            raise RuntimeError(f"Could not run {executable!r}: {exc}") from exc
        process = self._process
        assert process.stdout is not None
        self._reader = threading.Thread(
            target=self._drain, args=(process.stdout,), name="azurite-output", daemon=True
        )
        self._reader.start()
        try:
            # The reader sets the event on the listening line and also at the end of the output,
            # so this wait ends as soon as the server is up or has died.
            output_ended = self._listening.wait(self._startup_timeout)
        except BaseException:  # Ctrl-C while waiting must not leave a server behind.
            self.stop()
            raise
        if self._url is None:
            self.stop()
            reason = (
                f"exited with code {process.returncode}"
                if output_ended
                else f"did not listen within {self._startup_timeout:g} s"
            )
            raise RuntimeError(
                f"Azurite ({executable}) {reason}. Its last output lines:\n{self.output_tail()}"
            )
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop the process group (SIGTERM, then SIGKILL) and delete the data folder. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(self._stop_timeout)
        if self._reader is not None:
            self._reader.join(self._stop_timeout)
            self._reader = None
        if process is not None and process.stdout is not None:
            process.stdout.close()
        self._url = None
        self._listening.clear()
        self._remove_workdir()

    @staticmethod
    def _signal_group(process: subprocess.Popen[str], signum: signal.Signals) -> None:
        # start_new_session=True made the server the leader of its own group: pgid == pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)

    def _drain(self, stream: IO[str]) -> None:
        # Reading until EOF keeps the pipe from filling up and blocking the server.
        for line in stream:
            self._output.append(line.rstrip("\n"))
            if self._url is None:
                match = _LISTENING.search(line)
                if match:
                    self._url = match.group("url").rstrip("/")
                    self._listening.set()
        self._listening.set()

    def _remove_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether the server process is started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id (also its process group id)."""
        return self._require_process().pid

    @property
    def port(self) -> int:
        """The loopback port the server listens on."""
        return int(self._require_url().rsplit(":", 1)[1])

    @property
    def workdir(self) -> Path:
        """The temporary folder holding the server's data and debug log; deleted on stop."""
        if self._workdir is None:
            raise RuntimeError(f"{self!r} is not started.")
        return self._workdir

    @property
    def debug_log(self) -> Path:
        """Azurite's ``--debug`` log: one block of lines per request, written asynchronously."""
        return self.workdir / "debug.log"

    @property
    def blob_endpoint(self) -> str:
        """``http://127.0.0.1:PORT/ACCOUNT``."""
        return f"{self._require_url()}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        """A connection string for this server's account; it contains the key: never log it."""
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={self.account_name};"
            f"AccountKey={self._key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def output_tail(self) -> str:
        """The last lines the server printed (stdout and stderr), for error messages."""
        return "\n".join(self._output) or "(no output)"

    def _require_process(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError(f"{self!r} is not started.")
        return self._process

    def _require_url(self) -> str:
        if self._url is None:
            raise RuntimeError(f"{self!r} is not started.")
        return self._url

    def __repr__(self) -> str:
        where = self.blob_endpoint if self._url is not None else "stopped"
        return f"Azurite(account_name={self.account_name!r}, endpoint={where!r})"

    # -- clients -------------------------------------------------------------------------------

    def storage_options(self) -> dict[str, str]:
        """Keyword arguments for ``adlfs.AzureBlobFileSystem`` / fsspec ``storage_options``."""
        return {"connection_string": self.connection_string}

    def filesystem(self, **kwargs: Any) -> Any:
        """A new ``adlfs.AzureBlobFileSystem`` on this server (never a cached instance)."""
        import adlfs

        options: dict[str, Any] = {"skip_instance_cache": True, **kwargs}
        return adlfs.AzureBlobFileSystem(**self.storage_options(), **options)

    def blob_service_client(self) -> BlobServiceClient:
        """A plain azure-storage-blob client on this server, to check what adlfs wrote."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    # -- request counting ----------------------------------------------------------------------

    def log_offset(self, *, timeout: float = 10.0) -> int:
        """A byte offset in ``debug_log`` after every request answered so far.

        Pass it to ``operations(since=...)`` to count only the requests made after this call.
        """
        return self._sync_log(timeout)

    def operations(self, since: int = 0, *, timeout: float = 10.0) -> list[str]:
        """Names of the operations served since byte offset *since* of ``debug_log``, in order.

        Names are Azurite's: ``BlockBlob_Upload`` (a one-shot PUT), ``BlockBlob_StageBlock`` and
        ``BlockBlob_CommitBlockList`` (a chunked PUT), ``Blob_Download`` (a GET),
        ``Blob_GetProperties`` (a HEAD), ``Container_ListBlobFlatSegment``, ...
        """
        end = self._sync_log(timeout)
        with self.debug_log.open("rb") as log:
            log.seek(since)
            text = log.read(end - since).decode("utf-8", errors="replace")
        operations = (_OPERATION.match(line) for line in text.splitlines())
        return [
            match.group("op")
            for match in operations
            if match and match.group("request") not in self._barrier_requests
        ]

    def _sync_log(self, timeout: float) -> int:
        """Send a barrier request; return the byte offset just after its line in ``debug_log``.

        Azurite answers a request before its log lines reach the file, but writes them in order:
        once a request sent now shows up, every earlier request's lines are in the file too.
        """
        marker = f"{_BARRIER_PREFIX}{uuid.uuid4().hex}"
        start = self.debug_log.stat().st_size  # The log only grows; the marker comes later.
        request = urllib.request.Request(f"{self.blob_endpoint}/{marker}")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                pass
        except urllib.error.HTTPError as exc:
            exc.close()  # A 400 that names no operation: any answer will do.
        deadline = time.monotonic() + timeout
        with self.debug_log.open("rb") as log:
            while True:
                log.seek(start)
                tail = log.read()
                found = tail.find(marker.encode())
                line_end = tail.find(b"\n", found)
                if found >= 0 and line_end >= 0:
                    line_start = tail.rfind(b"\n", 0, found) + 1
                    line = tail[line_start:line_end].decode(errors="replace")
                    logged = _REQUEST_URL.match(line)
                    if logged:
                        self._barrier_requests.add(logged.group("request"))
                    return start + line_end + 1
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Azurite did not log request {marker} in {timeout:g} s.")
                time.sleep(0.005)  # Bounded poll: a plain file gives no change notification.


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite server for the test session (fails, never skips, when Azurite is missing)."""
    try:
        executable = find_azurite()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    with Azurite(executable) as server:
        yield server


@pytest.fixture
def azurite_container(azurite: Azurite) -> Iterator[str]:
    """The name of a new, empty container on the session's server, deleted after the test."""
    name = f"tk-{uuid.uuid4().hex}"
    with azurite.blob_service_client() as service:
        service.create_container(name)
        yield name
        service.delete_container(name)


# -- a store that fails on purpose ---------------------------------------------------------------

_T = TypeVar("_T")

#: How a request fails: a 500 answer; a timeout before the request reached the service;
#: throttling (Azure Storage's 503 ServerBusy: taskkit's retry waits its own backoff, it does
#: not read Retry-After); a reply lost after the request took effect; a failed precondition
#: (412: :class:`~taskkit.exceptions.Conflict` for a put or delete, a changed source for a read).
FaultKind = Literal["transient", "timeout", "throttled", "lost_reply", "precondition"]
#: The requests a rule can name (``"*"``: any). ``write`` and ``commit`` are a writer's;
#: ``has_files`` is a ``list``, ``confirm`` a ``stat``.
Operation = Literal[
    "list", "stat", "read", "load", "put", "delete", "append", "write", "commit", "*"
]
OPERATIONS: tuple[str, ...] = get_args(Operation)


@dataclass(frozen=True)
class Fault:
    """One rule of a :class:`FaultyStore`: which requests of ``op`` fail, and how.

    ``nth``: the nth request of ``op`` (every try counts, retries too) fails, once;
    ``probability``: each request fails with that chance, drawn from the store's seeded
    random source. ``key``: only requests for keys starting with it count. ``error``: an
    upstream exception to raise instead of the kind's own (translated as a store would).
    """

    op: Operation
    kind: FaultKind = "transient"
    nth: int | None = None
    probability: float = 0.0
    key: str = ""
    error: BaseException | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.op not in OPERATIONS:
            raise MisuseError(f"a fault's op is one of {', '.join(OPERATIONS)}, not {self.op!r}")
        if self.kind not in get_args(FaultKind):
            raise MisuseError(f"a fault's kind is one of {get_args(FaultKind)}, not {self.kind!r}")
        if self.nth is not None and (isinstance(self.nth, bool) or self.nth < 1):
            raise MisuseError(f"nth counts from 1, not {self.nth!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise MisuseError(f"a probability is from 0 to 1, not {self.probability!r}")
        if (self.nth is None) == (self.probability == 0.0):
            raise MisuseError("a fault has either nth or a probability")

    @classmethod
    def on(
        cls,
        op: Operation,
        *,
        nth: int = 1,
        kind: FaultKind = "transient",
        key: str = "",
        error: BaseException | None = None,
    ) -> Fault:
        """The ``nth`` request of ``op`` fails as ``kind``."""
        return cls(op, kind, nth=nth, key=key, error=error)

    @classmethod
    def sometimes(
        cls,
        op: Operation,
        probability: float,
        *,
        kind: FaultKind = "transient",
        key: str = "",
        error: BaseException | None = None,
    ) -> Fault:
        """Each request of ``op`` fails as ``kind`` with ``probability``."""
        return cls(op, kind, probability=probability, key=key, error=error)

    def covers(self, op: str, key: str) -> bool:
        return self.op in ("*", op) and key.startswith(self.key)


class Injected(NamedTuple):
    """A fault a :class:`FaultyStore` injected: into the ``call``-th request of ``op``."""

    op: str
    key: str
    kind: FaultKind
    call: int


def _upstream(kind: FaultKind) -> BaseException:
    """The exception the Azure SDK raises for ``kind``."""
    from azure.core.exceptions import (
        HttpResponseError,
        ServiceRequestTimeoutError,
        ServiceResponseTimeoutError,
    )

    if kind == "timeout":
        return ServiceRequestTimeoutError("the connection timed out (injected)")
    if kind == "lost_reply":
        return ServiceResponseTimeoutError("the read timed out (injected)")
    status, code = {"transient": (500, "InternalError"), "throttled": (503, "ServerBusy")}.get(
        kind, (412, "ConditionNotMet")
    )
    exc = HttpResponseError(message=f"{code} (injected)")
    exc.status_code = status
    exc.error_code = code  # type: ignore[attr-defined]
    return exc


class FaultyStore(Store):
    """``inner`` with requests failing by ``rules``, for testing what a caller does then.

    Each request (a try: a retry is a request too) is counted per rule; the first rule that
    fires makes it fail, by raising what the storage boundary makes of the upstream error
    (:func:`~taskkit.storage.errors.translate`). A ``lost_reply`` lets the request reach
    ``inner`` first, so the write has landed when the caller hears of a failure. Injected
    faults are retried with ``retry`` (by default ``inner``'s budget), as a store retries
    what it meets, so a put whose reply was lost is retried and succeeds on meeting its own
    write (:meth:`Store.put`); errors of ``inner`` itself pass unchanged, already retried.
    A writer's ``write`` and ``commit`` are not retried: the caller sees the fault.

    Every request is recorded in :attr:`calls` as ``(op, key)``, every fault in
    :attr:`injected`. Safe from any thread; ``seed`` makes the probabilistic rules draw the
    same faults for the same order of requests. Closing it leaves ``inner`` open.

    Example::

        from taskkit.storage.memory import MemoryStore
        from taskkit.storage.retry import RetryBudget
        from taskkit.storage.stores import Stores
        from taskkit.testing import Fault, FaultyStore, Injected

        memory = MemoryStore("fake")
        faulty = FaultyStore(memory, [Fault.on("put", nth=1, kind="lost_reply")],
                             retry=RetryBudget(sleep=lambda s: None))
        with Stores(mounts={"fake://": faulty}) as stores:
            store, key = stores.open("fake://c/outcome.json")
            version = store.put(key, b"{}", {}, if_absent=True)  # landed, lost, retried
        assert faulty.injected == [Injected("put", "c/outcome.json", "lost_reply", 1)]
        assert memory.load("c/outcome.json") == (b"{}", version)
    """

    def __init__(
        self,
        inner: Store,
        rules: Sequence[Fault] = (),
        *,
        seed: int = 0,
        retry: RetryBudget | None = None,
    ) -> None:
        super().__init__(retry or inner.retry)
        self.inner = inner
        self.protocol = inner.protocol
        self.rules = tuple(rules)
        self.calls: list[tuple[str, str]] = []
        self.injected: list[Injected] = []
        self._random = random.Random(seed)
        self._counts = [0] * len(self.rules)
        self._ops: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r}, {len(self.rules)} rules)"

    def _draw(self, op: str, key: str) -> Fault | None:
        """Count a request of ``op`` on ``key``; the rule that makes it fail, if one does."""
        with self._lock:
            self.calls.append((op, key))
            self._ops[op] = call = self._ops.get(op, 0) + 1
            chosen = None
            for n, rule in enumerate(self.rules):
                if not rule.covers(op, key):
                    continue
                self._counts[n] += 1
                fires = (
                    self._counts[n] == rule.nth
                    if rule.nth is not None
                    else self._random.random() < rule.probability
                )
                if fires and chosen is None:
                    chosen = rule
            if chosen is not None:
                self.injected.append(Injected(op, key, chosen.kind, call))
            return chosen

    def _once(
        self, op: str, key: str, action: Callable[[], _T], what: str, raised: list[object]
    ) -> _T:
        """One request: ``action`` unless a rule makes it fail (after it, for a lost reply)."""
        fault = self._draw(op, key)
        if fault is not None and fault.kind != "lost_reply":
            self._fail(fault, op, what, raised)
        result = action()
        if fault is not None:
            self._fail(fault, op, what, raised)
        return result

    def _fail(self, fault: Fault, op: str, what: str, raised: list[object]) -> None:
        upstream = fault.error if fault.error is not None else _upstream(fault.kind)
        failure: BaseException | None = translate(
            upstream, what, conditional=op in ("put", "delete")
        )
        if failure is None:
            failure = upstream
        raised.append(failure)
        raise failure from (None if failure is upstream else upstream)

    def _run(self, op: str, key: str, action: Callable[[], _T], what: str) -> _T:
        """``action`` as one request with its retries; only injected faults are retried."""
        raised: list[object] = []

        def injected(exc: TaskkitError) -> bool:
            # As Store.call: a Conflict or a changed source would be met again.
            seen = any(exc is failure for failure in raised)
            return seen and not isinstance(exc, (Conflict, SourceChanged))

        return self.retry.call(lambda: self._once(op, key, action, what, raised), what, injected)

    def url(self, key: str) -> str:
        return self.inner.url(key)

    def identity(self, key: str) -> str:
        return self.inner.identity(key)

    def list(self, key: str) -> list[RemoteFile]:
        return self._run("list", key, lambda: self.inner.list(key), f"cannot list {self.url(key)}")

    def has_files(self, key: str) -> bool:
        what = f"cannot list {self.url(key)}"
        return self._run("list", key, lambda: self.inner.has_files(key), what)

    def stat(self, key: str) -> RemoteFile:
        return self._run("stat", key, lambda: self.inner.stat(key), f"cannot read {self.url(key)}")

    def read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        what = f"cannot read {file.url}"
        return self._run("read", file.key, lambda: self.inner.read(file, offset, length), what)

    def confirm(self, file: RemoteFile) -> None:
        self._run("stat", file.key, lambda: self.inner.confirm(file), f"cannot read {file.url}")

    def load(self, key: str) -> tuple[bytes, str] | None:
        return self._run("load", key, lambda: self.inner.load(key), f"cannot read {self.url(key)}")

    def put(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str],
        *,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        what = f"cannot write {self.url(key)}"
        conditional = is_conditional(if_match, if_absent)

        def attempt() -> str:
            return self.inner.put(key, data, metadata, if_match=if_match, if_absent=if_absent)

        if not conditional:
            return self._run("put", key, attempt, what)
        return self._settle(
            lambda a: self._run("put", key, a, what),
            attempt,
            lambda: self.inner._holding(key, data),
        )

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        what = f"cannot delete {self.url(key)}"
        if not is_conditional(if_match, False):
            return self._run("delete", key, lambda: self.inner.delete(key), what)

        def attempt() -> bool:
            self.inner.delete(key, if_match=if_match)
            return True

        self._settle(
            lambda a: self._run("delete", key, a, what), attempt, lambda: self.inner._gone(key)
        )
        return None

    def append(self, key: str, offset: int, data: bytes) -> None:
        what = f"cannot write {self.url(key)}"
        self._run("append", key, lambda: self.inner.append(key, offset, data), what)

    def writer(self, key: str) -> Writer:
        return _FaultyWriter(self, key, self.inner.writer(key))


class _FaultyWriter(Writer):
    """A writer of a :class:`FaultyStore`: its blocks and its commit are requests too."""

    def __init__(self, store: FaultyStore, key: str, inner: Writer) -> None:
        self.store = store
        self.key = key
        self.inner = inner
        self.parallel = inner.parallel
        self.what = f"cannot write {store.url(key)}"

    def known(self) -> frozenset[str]:
        return self.inner.known()

    def write(self, block_id: str, data: bytes) -> None:
        self.store._once("write", self.key, lambda: self.inner.write(block_id, data), self.what, [])

    def commit(self, block_ids: Sequence[str], metadata: Mapping[str, str]) -> str:
        action = lambda: self.inner.commit(block_ids, metadata)  # noqa: E731
        return self.store._once("commit", self.key, action, self.what, [])

    def abort(self) -> None:
        self.inner.abort()
