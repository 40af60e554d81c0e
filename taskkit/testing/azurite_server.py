"""A real Azurite blob server for tests, and the pytest fixtures built on it.

``with Azurite() as server:`` runs a private ``azurite-blob``; the ``azurite`` fixture is one
server for the whole session and ``azurite_container`` a fresh, empty container per test (named
by the fixture's value). Enable the fixtures through the package: ``pytest_plugins =
["taskkit.testing"]``.

Invariants:

- Every server gets its own free loopback port, its own data folder and its own random account
  name and key (passed through ``AZURITE_ACCOUNTS``); the well-known emulator account is never
  used, so nothing here relies on a published key and two servers never share state.
- The key stays in memory: no repr, log line or error message of this module shows it.
- Readiness is the server's own "listens on" line, awaited with a deadline; nothing sleeps.
- A stopped server is gone: its whole process group has exited and its data folder is deleted.
  A paused one (``pause()``, for outage tests) has exited too, but keeps its port, account and
  data; ``resume()`` serves the same blobs on the same endpoint again.

Azurite itself comes from npm: ``npm install --prefix .azurite azurite`` at the repository root
(``make test`` does it), or point ``TASKKIT_AZURITE`` at an ``azurite-blob`` executable.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import os
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
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

__all__ = [
    "AZURITE_ENV_VAR",
    "INSTALL_HINT",
    "Azurite",
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
        #: While paused: the endpoint to serve again (its data stays in ``_workdir``).
        self._paused_url: str | None = None
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
        port = "0"  # the kernel picks a free port and Azurite prints it: no race with others
        if self._paused_url is not None:  # resume(): the same port and data as before
            port = self._paused_url.rsplit(":", 1)[1]
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="taskkit-azurite-"))
        assert self._workdir is not None
        data = self._workdir / "data"
        data.mkdir(exist_ok=True)
        command = [
            executable,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            port,
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
            self._paused_url = None
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
        self._end_process()
        self._paused_url = None
        self._remove_workdir()

    def pause(self) -> None:
        """Stop the server as an outage would (requests are refused), keeping its port, account
        and data for :meth:`resume`. Azurite is ended with SIGTERM, so it saves what it holds."""
        url = self._require_url()
        self._end_process()
        self._paused_url = url

    def resume(self) -> None:
        """Serve the paused server's blobs again, on the same endpoint; returns once it listens."""
        if self._paused_url is None:
            raise RuntimeError(f"{self!r} is not paused.")
        self.start()
        if self._url != self._paused_url:  # another process took the port meanwhile
            found = self._url
            self.stop()
            raise RuntimeError(f"Azurite resumed on {found}, not on {self._paused_url}.")
        self._paused_url = None

    @property
    def is_paused(self) -> bool:
        """Whether :meth:`pause` stopped the server and :meth:`resume` has not started it yet."""
        return self._paused_url is not None and self._process is None

    def _end_process(self) -> None:
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
