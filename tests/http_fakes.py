"""A tiny local HTTP server for the tests of http(s) sources: it answers each path with the
status the path names (``/status/403/x``), or, for ``/ok/...``, with a file's headers and bytes
(an ETag, ``Range`` honoured). It records every request line it served, and on request the
``Authorization`` header of each, so a test can see that a token or a URL's password reached the
server while taskkit never showed it. With a :class:`Gate`, a GET of ``/gate/...`` is held
until the test releases it: a real download that stays under way, for "killed while staging".
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BODY = b"0123456789abcdef"
#: The longest a gated request is held when the test never releases it.
GATE_SECONDS = 60.0


class Gate:
    """Holds the GETs of ``/gate/...``: ``reading`` is set when one arrives, ``release`` lets
    them all go (the server sets it itself when it stops)."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.release = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        self.server.seen.append(self.requestline)

    def _answer(self, with_body: bool) -> None:
        if self.server.authorizations is not None:
            self.server.authorizations.append(self.headers.get("Authorization", ""))
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        gate = self.server.gate
        if parts[0] == "gate" and with_body and gate is not None:
            gate.reading.set()
            gate.release.wait(GATE_SECONDS)
        if parts[0] == "status":
            self.send_response(int(parts[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = BODY
        ranged = self.headers.get("Range")
        if ranged:  # bytes=START-END, as fsspec asks
            start, _, end = ranged.removeprefix("bytes=").partition("-")
            body = BODY[int(start) : int(end) + 1 if end else None]
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)


class _Server(http.server.ThreadingHTTPServer):
    seen: list[str]
    authorizations: list[str] | None
    gate: Gate | None


class _Server6(_Server):
    address_family = socket.AF_INET6


@contextmanager
def http_server(
    host: str = "127.0.0.1",
    authorizations: list[str] | None = None,
    gate: Gate | None = None,
) -> Iterator[tuple[str, list[str]]]:
    """``(base URL, request lines served)`` of a server running for the block, listening on
    ``host`` (an IPv6 address such as ``::1`` too, shown in brackets in the URL); the
    ``Authorization`` header of each request (``""`` when none) goes to ``authorizations``;
    ``gate`` holds the GETs of ``/gate/...``."""
    server = (_Server6 if ":" in host else _Server)((host, 0), _Handler)
    server.seen = []
    server.authorizations = authorizations
    server.gate = gate
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{server.server_address[1]}", server.seen
    finally:
        if gate is not None:
            gate.release.set()
        server.shutdown()
        server.server_close()
        thread.join()
