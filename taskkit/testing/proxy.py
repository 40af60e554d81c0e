"""An HTTP proxy that fails on purpose: :class:`FaultProxy` in front of a blob endpoint.

Where :class:`~taskkit.testing.faults.FaultyStore` fails requests inside one process, the proxy
fails them on the wire, so any process (a task under ``taskkit local run``, the real Azure SDK
with its own connection handling) meets the failures the network and the service cause:
``throttled`` (503 ServerBusy), ``transient`` (500 InternalError), ``reset`` (the connection
reset before the request was forwarded), ``lost_reply`` (forwarded and answered upstream, then
the connection dropped: the write landed but the client does not know) and ``latency``.

Invariants:

- A request is forwarded at most once, and only ``lost_reply`` and ``latency`` forward a
  faulted request; ``throttled``, ``transient`` and ``reset`` never reach the upstream.
- Nothing is printed or logged, and records keep the method and the path only: never the query
  string (a SAS token lives there) or a header (Authorization).
- Bodies are streamed in pieces both ways, never held whole.
- Only the standard library: the proxy runs wherever the tests run.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPResponse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal, NamedTuple, cast, get_args
from urllib.parse import urlsplit

from taskkit.exceptions import ConfigError, MisuseError

__all__ = [
    "PROXY_KINDS",
    "FaultProxy",
    "Injection",
    "ProxyFaultKind",
    "ProxyRule",
    "blob_endpoint",
]

#: How the proxy fails a request (see the module docstring). ``throttled``, ``transient`` and
#: ``lost_reply`` mean what they mean to :class:`~taskkit.testing.faults.FaultyStore`.
ProxyFaultKind = Literal["throttled", "transient", "reset", "lost_reply", "latency"]
PROXY_KINDS: tuple[ProxyFaultKind, ...] = get_args(ProxyFaultKind)

_PIECE = 256 * 1024
_LAST = b"0\r\n\r\n"  # the chunk that ends a chunked body
#: Seconds the proxy waits on the upstream (the SDK's own read timeout is 60 s).
UPSTREAM_TIMEOUT = 120.0
#: Headers of one connection, not of the message (RFC 9110 7.6.1), and those the proxy sets.
_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
     "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "host"}
)  # fmt: skip
_ERRORS: dict[str, tuple[int, str, str]] = {
    "throttled": (
        503,
        "ServerBusy",
        "The server is currently unable to receive requests. Please retry your request.",
    ),
    "transient": (
        500,
        "InternalError",
        "Server encountered an internal error. Please try again after some time.",
    ),
}


@dataclass(frozen=True)
class ProxyRule:
    """The ``nth`` request (counting from 1, retries too) of ``method`` (``"*"``: any) whose
    path contains ``path`` fails as ``kind``, once."""

    kind: ProxyFaultKind
    method: str = "*"
    path: str = ""
    nth: int = 1

    def __post_init__(self) -> None:
        if self.kind not in PROXY_KINDS:
            raise MisuseError(
                f"a proxy fault is one of {', '.join(PROXY_KINDS)}, not {self.kind!r}"
            )
        if isinstance(self.nth, bool) or not isinstance(self.nth, int) or self.nth < 1:
            raise MisuseError(f"nth counts from 1, not {self.nth!r}")

    def covers(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and self.path in path


class Injection(NamedTuple):
    """A fault the proxy injected: its kind, the request's method and path (no query string),
    and when (``time.time()``)."""

    kind: ProxyFaultKind
    method: str
    path: str
    time: float


def blob_endpoint(conn: str) -> str | None:
    """The ``http://`` ``BlobEndpoint`` of the connection string ``conn`` as written in it (what
    a proxy can stand in front of); None when it has none."""
    fields = conn.split(";")
    n = _blob_field(fields)
    return None if n is None else fields[n].partition("=")[2]


def _blob_field(fields: Sequence[str]) -> int | None:
    """Where among a connection string's ``fields`` its ``http://`` ``BlobEndpoint`` is."""
    for n, field in enumerate(fields):
        name, sep, value = field.partition("=")
        if sep and name.strip().lower() == "blobendpoint" and value.startswith("http://"):
            return n
    return None


class FaultProxy:
    """A proxy on ``127.0.0.1`` in front of the ``http://`` endpoint ``upstream`` (its path
    is ignored: requests keep theirs), failing requests on purpose; a context manager.

    Each request first meets ``rules`` (each counts the requests it covers; the first to fire
    decides); otherwise it fails with ``probability``, as a kind drawn from ``kinds``, both
    drawn from a random source seeded with ``seed``, so the same order of requests meets the
    same faults. ``latency``: the seconds a ``latency`` fault waits before forwarding.
    :attr:`requests` counts the requests received, :attr:`injected` records each fault.

    Example::

        with FaultProxy(azurite.blob_endpoint, probability=0.2, seed=7) as proxy:
            conn = proxy.connection_string(azurite.connection_string)
            ...  # run the code under test with AZURE_STORAGE_CONNECTION_STRING=conn
        print(len(proxy.injected), "faults in", proxy.requests, "requests")
    """

    def __init__(
        self,
        upstream: str,
        *,
        probability: float = 0.0,
        kinds: Sequence[str] = PROXY_KINDS,
        latency: float = 0.5,
        seed: int | None = None,
        rules: Sequence[ProxyRule] = (),
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(
                "the fault proxy stands in front of an http:// storage endpoint (an emulator "
                "such as Azurite), and this one is not"
            )
        if not 0.0 <= probability <= 1.0:
            raise MisuseError(f"a probability is from 0 to 1, not {probability!r}")
        unknown = [kind for kind in kinds if kind not in PROXY_KINDS]
        if unknown or not kinds:
            raise MisuseError(f"kinds are some of {', '.join(PROXY_KINDS)}, not {list(kinds)!r}")
        if latency < 0:
            raise MisuseError(f"latency must not be negative, not {latency!r}")
        self._upstream = (parts.hostname, parts.port or 80)
        self.probability = probability
        self.kinds = cast("tuple[ProxyFaultKind, ...]", tuple(kinds))
        self.latency = latency
        self.rules = tuple(rules)
        self.injected: list[Injection] = []
        self.requests = 0
        self._random = random.Random(seed)
        self._counts = [0] * len(self.rules)
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._handlers: set[_Handler] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __repr__(self) -> str:
        return f"FaultProxy({self.url or 'stopped'}, {len(self.injected)} injected)"

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Listen on a free loopback port (:attr:`url`) and serve from a daemon thread."""
        if self._server is not None:
            raise MisuseError(f"{self!r} is already started")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close every connection, both sides, at once. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # ends a latency fault's wait
        server.shutdown()
        server.server_close()
        with self._lock:
            handlers = list(self._handlers)
        for handler in handlers:
            handler.hang_up()
        with self._ended:  # each handler closes its own sockets as it ends
            self._ended.wait_for(lambda: not self._handlers, timeout=5.0)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.url = ""

    def endpoint(self, blob_endpoint: str) -> str:
        """``blob_endpoint`` reached through the proxy: its scheme, host and port swapped for
        the proxy's, its path kept (``http://127.0.0.1:PORT/devstoreaccount1``)."""
        if not self.url:
            raise MisuseError(f"{self!r} is not started")
        parts = urlsplit(blob_endpoint)
        rest = blob_endpoint[len(f"{parts.scheme}://{parts.netloc}") :]
        return self.url + rest

    def connection_string(self, conn: str) -> str:
        """``conn`` with its ``BlobEndpoint`` reached through the proxy; :class:`ConfigError`
        if it names no ``http://`` blob endpoint."""
        fields = conn.split(";")
        n = _blob_field(fields)
        if n is not None:
            name, _, value = fields[n].partition("=")
            fields[n] = f"{name}={self.endpoint(value)}"
            return ";".join(fields)
        raise ConfigError(
            "the storage connection string has no http:// BlobEndpoint (an emulator such as "
            "Azurite) for the fault proxy to stand in front of"
        )

    def _decide(self, method: str, path: str) -> ProxyFaultKind | None:
        """Count a request; the kind of fault it meets, if any (recorded)."""
        with self._lock:
            self.requests += 1
            chosen: ProxyFaultKind | None = None
            for n, rule in enumerate(self.rules):
                if rule.covers(method, path):
                    self._counts[n] += 1
                    if chosen is None and self._counts[n] == rule.nth:
                        chosen = rule.kind
            # Drawn for every request, so a rule firing does not shift later draws.
            if self._random.random() < self.probability:
                drawn = self._random.choice(self.kinds)
                chosen = chosen or drawn
            if chosen is not None:
                self.injected.append(Injection(chosen, method, path, time.time()))
            return chosen


class _Server(ThreadingHTTPServer):
    proxy: FaultProxy
    daemon_threads = True
    request_queue_size = 128  # the tasks of a node open many connections at once

    def handle_error(self, request: object, client_address: object) -> None:
        """Silent: the library never prints, and a dropped client is part of the game."""


class _Handler(BaseHTTPRequestHandler):
    """One client connection and its own keep-alive connection to the upstream."""

    protocol_version = "HTTP/1.1"
    server: _Server
    _conn: HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._handlers.add(self)
        if self.server.proxy._stopping.is_set():  # accepted as stop() took its census
            self.hang_up()

    def finish(self) -> None:
        self.close_upstream()
        with contextlib.suppress(OSError, ValueError):
            super().finish()
        with self.server.proxy._ended:
            self.server.proxy._handlers.discard(self)
            self.server.proxy._ended.notify_all()

    def log_message(self, format: str, *args: object) -> None:
        """Silent: a request line carries the query string, where SAS tokens live."""

    def close_upstream(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def drop(self, *, reset: bool) -> None:
        """Close the client connection without a reply; ``reset``: with a TCP reset (an
        abortive close) rather than an orderly one. Only from the handler's own thread."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
            # The socket's fd closes with the last of its files: close them all now, so that
            # a reset is not preceded by the orderly close that finishing the request does.
            self.wfile.close()
            self.rfile.close()
            self.connection.close()

    def hang_up(self) -> None:
        """From another thread: wake the handler wherever it waits, so that it ends."""
        conn = self._conn
        for sock in (self.connection, conn.sock if conn is not None else None):
            with contextlib.suppress(OSError, AttributeError):
                sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]

    def _any(self) -> None:
        proxy = self.server.proxy
        path = urlsplit(self.path).path
        kind = proxy._decide(self.command, path)
        if kind == "reset":
            self.drop(reset=True)
            return
        if kind in _ERRORS:
            for _ in self._body():  # read, so the connection stays in step
                pass
            self._refuse(*_ERRORS[kind])
            return
        if kind == "latency" and proxy._stopping.wait(proxy.latency):
            self.drop(reset=False)
            return
        try:
            response = self._forward()
        except (OSError, ValueError):  # the upstream failed: the client sees its connection end
            self.close_upstream()
            self.drop(reset=False)
            return
        if kind == "lost_reply":
            with contextlib.suppress(OSError, ValueError):
                while response.read(_PIECE):
                    pass
            self.drop(reset=False)
            return
        self._reply(response)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _any

    def _body(self) -> Iterator[bytes]:
        """The request's body, piece by piece, framed by Transfer-Encoding or Content-Length."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped
                    return
                yield from self._exactly(size)
                self.rfile.readline(8)  # the CRLF closing the chunk
        else:
            yield from self._exactly(int(self.headers.get("Content-Length") or 0))

    def _exactly(self, length: int) -> Iterator[bytes]:
        while length > 0:
            piece = self.rfile.read(min(_PIECE, length))
            if not piece:
                raise ConnectionError("the client closed the connection mid-body")
            length -= len(piece)
            yield piece

    def _upstream(self) -> HTTPConnection:
        """The connection to the upstream, a new one if the old one was closed while idle
        (readable while idle means the upstream sent its FIN)."""
        if self._conn is not None and self._conn.sock is not None:
            readable, _, _ = select.select([self._conn.sock], [], [], 0)
            if readable:
                self.close_upstream()
        if self._conn is None:
            self._conn = HTTPConnection(*self.server.proxy._upstream, timeout=UPSTREAM_TIMEOUT)
        return self._conn

    def _forward(self) -> HTTPResponse:
        conn = self._upstream()
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        conn.putrequest(self.command, self.path, skip_accept_encoding=True)
        named = {token.strip().lower() for token in self.headers.get("Connection", "").split(",")}
        for name, value in self.headers.items():
            lowered = name.lower()
            # A chunked body is sent on chunked: a Content-Length beside it would contradict it.
            dropped = (
                lowered in _HOP or lowered in named or (chunked and lowered == "content-length")
            )
            if not dropped:
                conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for piece in self._body():
            conn.send(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            conn.send(_LAST)
        return conn.getresponse()

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Azure Storage's error answer: the code in a header and in an XML body."""
        request_id = str(uuid.uuid4())
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Error>'
            f"<Code>{code}</Code><Message>{message}\nRequestId:{request_id}\n"
            f"Time:{time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime())}</Message></Error>"
        ).encode()
        self.send_response_only(status, message)  # Azure's reason phrase is the message
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
        self.send_header("x-ms-error-code", code)
        self.send_header("x-ms-request-id", request_id)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reply(self, response: HTTPResponse) -> None:
        """The upstream's answer, streamed: as it came when its length is known, chunked
        otherwise."""
        bodiless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        sized = response.getheader("Content-Length") is not None and not response.chunked
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP:
                self.send_header(name, value)
        chunked = not bodiless and not sized
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            if bodiless:
                response.read()  # nothing to read, but it frees the connection for the next
            while not bodiless:
                piece = response.read(_PIECE)
                if chunked:
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece) if piece else _LAST)
                elif piece:
                    self.wfile.write(piece)
                if not piece:
                    break
        except (OSError, ValueError):  # the upstream broke mid-body: so does the client's reply
            self.close_upstream()
            self.drop(reset=False)
        if response.will_close:
            self.close_upstream()
