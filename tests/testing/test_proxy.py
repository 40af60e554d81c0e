"""taskkit.testing.proxy: FaultProxy in front of a real Azurite, met by taskkit's own stores
(the real Azure SDK) and by the plain SDK with its retries off, to see the raw failure.

Each fault kind is injected deterministically by a rule; what reached Azurite is read from its
own request log (``Azurite.operations``), so "not forwarded" and "forwarded once" are facts of
the server, not of the proxy's say-so.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from taskkit.exceptions import ConfigError, MisuseError
from taskkit.storage.base import Store
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.testing import PROXY_KINDS, Azurite, FaultProxy, ProxyFaultKind, ProxyRule

MIB = 1024 * 1024


class Opened:
    """A taskkit store on a container, reached through a proxy; its retries sleep nowhere."""

    def __init__(self, stores: Stores, container: str) -> None:
        self.stores = stores
        self.container = container
        self.store: Store = stores.open(f"az://{container}/x")[0]

    def key(self, name: str) -> str:
        return f"{self.container}/{name}"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def warnings() -> list[str]:
    return []


def opened(
    proxy: FaultProxy,
    azurite: Azurite,
    container: str,
    sleeps: list[float],
    warnings: list[str],
    attempts: int = 4,
) -> Stores:
    """Stores reaching Azurite through ``proxy``, their retries' sleeps and warnings kept."""
    budget = RetryBudget(attempts=attempts, sleep=sleeps.append, uniform=lambda _, high: high)
    options = {"connection_string": proxy.connection_string(azurite.connection_string)}
    return Stores(budget, options, warn=warnings.append)


def direct_blob(azurite: Azurite, container: str, name: str) -> Any:
    """A plain SDK client on the blob, straight to Azurite (not through the proxy)."""
    service = azurite.blob_service_client()
    return service.get_blob_client(container, name)


def proxied_blob(proxy: FaultProxy, azurite: Azurite, container: str, name: str) -> Any:
    """A plain SDK client on the blob through the proxy, its own retries off."""
    from azure.storage.blob import BlobServiceClient

    conn = proxy.connection_string(azurite.connection_string)
    service = BlobServiceClient.from_connection_string(conn, retry_total=0)
    return service.get_blob_client(container, name)


# -- passing through ---------------------------------------------------------------------------


@pytest.mark.azurite
def test_without_faults_every_byte_passes_both_ways(
    azurite: Azurite, azurite_container: str, sleeps: list[float], warnings: list[str]
) -> None:
    """Probability 0: a 3 MiB put, a block upload of 3 MiB and some bytes, ranged reads, a
    load and a listing through the proxy are byte-exact, as Azurite itself holds them."""
    rng = random.Random(3)
    whole, blocks = rng.randbytes(3 * MIB), [rng.randbytes(MIB) for _ in range(3)] + [b"tail"]
    with (
        FaultProxy(azurite.blob_endpoint) as proxy,
        opened(proxy, azurite, azurite_container, sleeps, warnings) as stores,
    ):
        at = Opened(stores, azurite_container)
        version = at.store.put(at.key("whole.bin"), whole, {"k": "v"})
        writer = at.store.writer(at.key("blocks.bin"))
        ids = [f"{n:08d}" for n in range(len(blocks))]
        for block_id, data in zip(ids, blocks, strict=False):
            writer.write(block_id, data)
        writer.commit(ids, {})
        listed = {f.key: f for f in at.store.list(at.key(""))}
        assert listed[at.key("whole.bin")].version == version
        file = listed[at.key("blocks.bin")]
        ranges = [(0, 5), (MIB - 3, 10), (3 * MIB, 4), (0, file.size)]
        assert [at.store.read(file, o, n) for o, n in ranges] == [
            b"".join(blocks)[o : o + n] for o, n in ranges
        ]
        assert at.store.load(at.key("whole.bin")) == (whole, version)
        assert at.store.stat(at.key("whole.bin")).size == len(whole)
    assert direct_blob(azurite, azurite_container, "whole.bin").download_blob().readall() == whole
    stored = direct_blob(azurite, azurite_container, "blocks.bin").download_blob().readall()
    assert stored == b"".join(blocks)
    assert proxy.injected == []
    assert proxy.requests >= 9
    assert sleeps == []
    assert warnings == []


class RawUpstream:
    """A one-request HTTP server on a loopback socket that keeps the raw bytes it was sent and
    answers with ``reply`` (raw bytes too): to see the proxy's framing on the wire."""

    def __init__(self, reply: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received = b""
        self.reply = reply
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while not self.received.endswith(b"0\r\n\r\n"):
                piece = conn.recv(65536)
                if not piece:
                    return
                self.received += piece
            conn.sendall(self.reply)

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def dechunked(data: bytes) -> bytes:
    """The body of a chunked message body (no trailers)."""
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]


def test_chunked_bodies_are_sent_on_chunked_both_ways() -> None:
    """A chunked request body goes upstream as chunked, whole, without a Content-Length; an
    answer whose length only its end tells reaches the client whole."""
    pieces = [random.Random(n).randbytes(n * 1000 + 7) for n in range(1, 40)]
    answer = random.Random(0).randbytes(300_000)
    upstream = RawUpstream(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + answer)
    try:
        with FaultProxy(upstream.url) as proxy:
            conn = http.client.HTTPConnection(proxy.url.removeprefix("http://"), timeout=30)
            conn.request("PUT", "/acct/c/b?sig=x", body=iter(pieces), encode_chunked=True)
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, answer)
            assert reply.getheader("Transfer-Encoding") == "chunked"
            conn.close()
    finally:
        upstream.close()
    head, _, body = upstream.received.partition(b"\r\n\r\n")
    assert head.startswith(b"PUT /acct/c/b?sig=x HTTP/1.1\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"content-length" not in head.lower()
    assert dechunked(body) == b"".join(pieces)


# -- each kind -----------------------------------------------------------------------------------


@pytest.mark.azurite
@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("throttled", 503, "ServerBusy"), ("transient", 500, "InternalError")],
)
def test_an_error_answer_is_not_forwarded_and_taskkit_retries_it(
    azurite: Azurite,
    azurite_container: str,
    sleeps: list[float],
    warnings: list[str],
    kind: ProxyFaultKind,
    status: int,
    code: str,
) -> None:
    """The SDK sees Azure's status and error code; taskkit retries once and reads the blob,
    and Azurite served one download: the faulted try never reached it. A faulted PUT's body
    is read, so the connection serves the next request."""
    from azure.core.exceptions import HttpResponseError

    direct_blob(azurite, azurite_container, "rec.json").upload_blob(b"{}")
    rules = [ProxyRule(kind, method="GET", path="rec.json", nth=n) for n in (1, 2)]
    rules.append(ProxyRule(kind, method="PUT", path="other"))
    with FaultProxy(azurite.blob_endpoint, rules=rules) as proxy:
        with pytest.raises(HttpResponseError) as raised:
            proxied_blob(proxy, azurite, azurite_container, "rec.json").download_blob()
        assert (raised.value.status_code, raised.value.error_code) == (status, code)
        with opened(proxy, azurite, azurite_container, sleeps, warnings) as stores:
            at = Opened(stores, azurite_container)
            since = azurite.log_offset()
            assert at.store.load(at.key("rec.json"))[0] == b"{}"  # type: ignore[index]
            assert azurite.operations(since) == ["Blob_Download"]
            at.store.put(at.key("other.bin"), b"x" * 100_000, {})
        assert [(i.kind, i.method) for i in proxy.injected] == [(kind, "GET")] * 2 + [(kind, "PUT")]
    assert len(sleeps) == 2
    assert f"HTTP {status} {code}" in warnings[0]
    stored = direct_blob(azurite, azurite_container, "other.bin").download_blob().readall()
    assert stored == b"x" * 100_000


@pytest.mark.azurite
def test_a_reset_is_not_forwarded_and_taskkit_retries_it(
    azurite: Azurite, azurite_container: str, sleeps: list[float], warnings: list[str]
) -> None:
    """A put whose connection is reset before forwarding is retried: Azurite served exactly
    one upload, and it holds the bytes."""
    rules = [ProxyRule("reset", method="PUT", path="out.bin")]
    with (
        FaultProxy(azurite.blob_endpoint, rules=rules) as proxy,
        opened(proxy, azurite, azurite_container, sleeps, warnings) as stores,
    ):
        at = Opened(stores, azurite_container)
        since = azurite.log_offset()
        version = at.store.put(at.key("out.bin"), b"payload", {})
        assert azurite.operations(since) == ["BlockBlob_Upload"]
        assert at.store.load(at.key("out.bin")) == (b"payload", version)
    assert [i.kind for i in proxy.injected] == ["reset"]
    assert len(sleeps) == 1
    assert warnings


@pytest.mark.azurite
@pytest.mark.parametrize("condition", ["if_absent", "if_match"])
def test_a_lost_reply_lands_the_write_and_taskkit_takes_its_own_write_for_success(
    azurite: Azurite,
    azurite_container: str,
    sleeps: list[float],
    warnings: list[str],
    condition: str,
) -> None:
    """A conditional put whose reply is lost has landed (the plain SDK gets no answer, yet
    the blob is there); taskkit's retry meets 409/412 from its own write, loads the blob,
    finds its own bytes and returns that version, as for a lost reply in FaultyStore. (Were
    the SDK's transport to re-send the put unseen, as aiohttp does, the 409/412 would come on
    what taskkit counts as a first try: a Conflict.)"""
    from azure.core.exceptions import AzureError

    rules = [ProxyRule("lost_reply", method="PUT", path="raw.json")]
    rules.append(ProxyRule("lost_reply", method="PUT", path="rec.json"))
    if condition == "if_match":
        direct_blob(azurite, azurite_container, "rec.json").upload_blob(b"old")
    with FaultProxy(azurite.blob_endpoint, rules=rules) as proxy:
        with pytest.raises(AzureError) as raised:
            proxied_blob(proxy, azurite, azurite_container, "raw.json").upload_blob(b"raw")
        assert getattr(raised.value, "status_code", None) is None  # no answer came
        landed = direct_blob(azurite, azurite_container, "raw.json").download_blob().readall()
        assert landed == b"raw"
        with opened(proxy, azurite, azurite_container, sleeps, warnings) as stores:
            at = Opened(stores, azurite_container)
            condition_args: dict[str, Any] = (
                {"if_absent": True}
                if condition == "if_absent"
                else {"if_match": at.store.stat(at.key("rec.json")).version}
            )
            since = azurite.log_offset()
            version = at.store.put(at.key("rec.json"), b"mine", {}, **condition_args)
            assert azurite.operations(since) == ["BlockBlob_Upload"] * 2 + ["Blob_Download"]
            assert at.store.load(at.key("rec.json")) == (b"mine", version)
    assert [i.kind for i in proxy.injected] == ["lost_reply"] * 2
    assert len(sleeps) == 1


@pytest.mark.azurite
def test_a_lost_reply_on_a_conditional_delete_is_taken_for_its_own_work(
    azurite: Azurite, azurite_container: str, sleeps: list[float], warnings: list[str]
) -> None:
    """A delete on a version whose reply is lost has removed the blob; the retry meets 404,
    which is the first try's work: no Conflict."""
    direct_blob(azurite, azurite_container, "gone.json").upload_blob(b"x")
    rules = [ProxyRule("lost_reply", method="DELETE", path="gone.json")]
    with (
        FaultProxy(azurite.blob_endpoint, rules=rules) as proxy,
        opened(proxy, azurite, azurite_container, sleeps, warnings) as stores,
    ):
        at = Opened(stores, azurite_container)
        version = at.store.stat(at.key("gone.json")).version
        since = azurite.log_offset()
        at.store.delete(at.key("gone.json"), if_match=version)
        assert azurite.operations(since) == ["Blob_Delete"] * 2 + ["Blob_Download"]
        assert at.store.load(at.key("gone.json")) is None
    assert [i.kind for i in proxy.injected] == ["lost_reply"]
    assert len(sleeps) == 1


@pytest.mark.azurite
def test_concurrent_reads_through_faults_are_byte_exact(
    azurite: Azurite, azurite_container: str, sleeps: list[float], warnings: list[str]
) -> None:
    """Eight threads reading ranges of one blob through a proxy failing a fifth of the
    requests, every kind: each range comes back exact, and faults did strike."""
    from concurrent.futures import ThreadPoolExecutor

    data = random.Random(8).randbytes(4 * MIB)
    direct_blob(azurite, azurite_container, "big.bin").upload_blob(data)
    proxy = FaultProxy(azurite.blob_endpoint, probability=0.2, latency=0.01, seed=5)
    with proxy, opened(proxy, azurite, azurite_container, sleeps, warnings, 12) as stores:
        at = Opened(stores, azurite_container)
        file = at.store.stat(at.key("big.bin"))
        ranges = [(n * 128 * 1024, 128 * 1024) for n in range(32)]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda r: at.store.read(file, *r), ranges))
    assert got == [data[o : o + n] for o, n in ranges]
    assert len(proxy.injected) >= 3
    assert proxy.requests >= 33


@pytest.mark.azurite
def test_latency_delays_the_request_and_forwards_it(
    azurite: Azurite, azurite_container: str, sleeps: list[float], warnings: list[str]
) -> None:
    """A latency fault holds the request ``latency`` seconds, then it succeeds, unretried."""
    direct_blob(azurite, azurite_container, "slow.bin").upload_blob(b"slow")
    rules = [ProxyRule("latency", method="GET", path="slow.bin")]
    with (
        FaultProxy(azurite.blob_endpoint, latency=0.4, rules=rules) as proxy,
        opened(proxy, azurite, azurite_container, sleeps, warnings) as stores,
    ):
        at = Opened(stores, azurite_container)
        started = time.monotonic()
        assert at.store.load(at.key("slow.bin"))[0] == b"slow"  # type: ignore[index]
        took = time.monotonic() - started
    assert took >= 0.4
    assert [i.kind for i in proxy.injected] == ["latency"]
    assert sleeps == []
    assert warnings == []


# -- decisions -----------------------------------------------------------------------------------


def seeded_run(azurite: Azurite, container: str, seed: int) -> list[tuple[str, str, str]]:
    """Twelve puts and loads through a proxy failing 40% of requests; the faults it met."""
    sleeps: list[float] = []
    with (
        FaultProxy(azurite.blob_endpoint, probability=0.4, latency=0.01, seed=seed) as proxy,
        opened(proxy, azurite, container, sleeps, [], attempts=12) as stores,
    ):
        at = Opened(stores, container)
        for n in range(6):
            at.store.put(at.key(f"s{seed}/{n}"), b"%d" % n, {})
            assert at.store.load(at.key(f"s{seed}/{n}"))[0] == b"%d" % n  # type: ignore[index]
    return [(i.kind, i.method, i.path.replace(f"/s{seed}/", "/")) for i in proxy.injected]


@pytest.mark.azurite
def test_a_seed_makes_the_same_requests_meet_the_same_faults(
    azurite: Azurite, azurite_container: str
) -> None:
    """Two runs with one seed meet the same faults on the same requests; another seed other
    faults; the work is done either way."""
    first = seeded_run(azurite, azurite_container, 11)
    assert first == seeded_run(azurite, azurite_container, 11)
    assert first != seeded_run(azurite, azurite_container, 12)
    assert len(first) >= 3


def test_rules_count_their_own_requests_and_the_first_to_fire_decides() -> None:
    """Each rule counts the requests it covers; a request two rules fire on meets the first;
    the decisions are recorded with the path only; probability 1 draws only the given kinds."""
    proxy = FaultProxy(
        "http://127.0.0.1:1",
        rules=[ProxyRule("reset", method="PUT", nth=2), ProxyRule("latency", path="/c/b", nth=1)],
    )
    decided = [proxy._decide(m, p) for m, p in [("PUT", "/c/a"), ("PUT", "/c/b"), ("GET", "/c/b")]]
    assert decided == [None, "reset", None]
    assert proxy._decide("GET", "/c/b") is None
    assert proxy.requests == 4
    assert [(i.kind, i.path) for i in proxy.injected] == [("reset", "/c/b")]
    always = FaultProxy("http://127.0.0.1:1", probability=1.0, kinds=["transient", "reset"])
    assert {always._decide("GET", "/x") for _ in range(50)} == {"transient", "reset"}


def test_bad_settings_are_refused_in_one_line() -> None:
    """An unknown kind, nth below 1, a probability out of range, an https upstream or a
    connection string without an http:// BlobEndpoint are refused, quoting no credential."""
    with pytest.raises(MisuseError):
        ProxyRule("slow")  # type: ignore[arg-type]
    with pytest.raises(MisuseError):
        ProxyRule("reset", nth=0)
    with pytest.raises(MisuseError):
        FaultProxy("http://127.0.0.1:1", probability=1.5)
    with pytest.raises(MisuseError):
        FaultProxy("http://127.0.0.1:1", kinds=["reset", "timeout"])
    with pytest.raises(ConfigError):
        FaultProxy("https://acct.blob.core.windows.net")
    secret = "AccountKey=c2VjcmV0c2VjcmV0"
    with FaultProxy("http://127.0.0.1:1") as proxy:
        for conn in [
            f"DefaultEndpointsProtocol=https;AccountName=a;{secret};EndpointSuffix=core.windows.net",
            f"AccountName=a;{secret};BlobEndpoint=https://a.blob.core.windows.net/",
        ]:
            with pytest.raises(ConfigError) as raised:
                proxy.connection_string(conn)
            assert "\n" not in str(raised.value)
            assert "c2Vj" not in str(raised.value)


def test_the_endpoint_and_the_connection_string_keep_all_but_host_and_port() -> None:
    """Only scheme://host:port changes: the account's path and every other field stay."""
    with FaultProxy("http://127.0.0.1:10000") as proxy:
        assert proxy.endpoint("http://127.0.0.1:10000/devstoreaccount1") == (
            f"{proxy.url}/devstoreaccount1"
        )
        conn = (
            "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k==;blobendpoint=http://h:1/a;"
        )
        assert proxy.connection_string(conn) == (
            f"DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k==;blobendpoint={proxy.url}/a;"
        )


# -- secrets and lifetime ------------------------------------------------------------------------


@pytest.mark.azurite
def test_no_query_string_or_credential_is_recorded_or_printed(
    azurite: Azurite, azurite_container: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Requests signed by a SAS token (in the query) and by the account key (a header) meet
    every kind of fault: the records hold paths only, and nothing is printed."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobClient, BlobSasPermissions, generate_blob_sas

    key = azurite.connection_string.split("AccountKey=")[1].split(";")[0]
    sas = generate_blob_sas(
        azurite.account_name,
        azurite_container,
        "secret.bin",
        account_key=key,
        permission=BlobSasPermissions(read=True, write=True, create=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    with FaultProxy(azurite.blob_endpoint, probability=1.0, latency=0.0, seed=1) as proxy:
        url = f"{proxy.endpoint(azurite.blob_endpoint)}/{azurite_container}/secret.bin?{sas}"
        by_sas = BlobClient.from_blob_url(url, retry_total=0)
        by_key = proxied_blob(proxy, azurite, azurite_container, "secret.bin")
        for client in [by_sas, by_key] * 10:
            with contextlib.suppress(AzureError):
                client.upload_blob(b"data", overwrite=True)
    assert {i.kind for i in proxy.injected} == set(PROXY_KINDS)
    recorded = repr(proxy.injected)
    signature = sas.split("sig=")[1].split("&")[0]
    assert "?" not in recorded
    assert "sig" not in recorded
    assert signature not in recorded
    assert key not in recorded
    assert {i.path for i in proxy.injected} == {
        f"/{azurite.account_name}/{azurite_container}/secret.bin"
    }
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    """Raw client sockets, closed after the test."""
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


@pytest.mark.azurite
def test_stop_frees_the_port_and_ends_every_connection_at_once(
    azurite: Azurite, clients: list[socket.socket]
) -> None:
    """stop() during a 30 s latency fault and with an idle keep-alive client returns within a
    few seconds; both clients see their connection end, the port refuses connections and can
    be bound again; a second stop() is harmless."""
    proxy = FaultProxy(azurite.blob_endpoint, latency=30.0, rules=[ProxyRule("latency")])
    proxy.start()
    port = int(proxy.url.rsplit(":", 1)[1])
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    waiting = socket.create_connection(("127.0.0.1", port), timeout=10)
    clients.extend([idle, waiting])
    waiting.sendall(f"GET /{azurite.account_name}/x?comp=list HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    deadline = time.monotonic() + 10
    while not proxy.injected and time.monotonic() < deadline:
        time.sleep(0.01)  # bounded poll: the fault is decided in the proxy's thread
    assert proxy.injected
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 5
    assert waiting.recv(1024) == b""
    assert idle.recv(1024) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
    proxy.stop()


@pytest.mark.azurite
def test_an_upstream_that_closed_an_idle_connection_is_reached_again(
    azurite: Azurite, azurite_container: str, sleeps: list[float], warnings: list[str]
) -> None:
    """A request on a client connection whose upstream connection the server closed while
    idle goes on a new upstream connection, unfaulted and unretried."""
    with (
        FaultProxy(azurite.blob_endpoint) as proxy,
        opened(proxy, azurite, azurite_container, sleeps, warnings) as stores,
    ):
        at = Opened(stores, azurite_container)
        at.store.put(at.key("a"), b"1", {})
        with proxy._lock:
            handlers = list(proxy._handlers)
        for handler in handlers:  # as the server closing them would
            conn = handler._conn
            if conn is not None and conn.sock is not None:
                conn.sock.shutdown(socket.SHUT_RDWR)
        assert at.store.load(at.key("a"))[0] == b"1"  # type: ignore[index]
    assert sleeps == []
    assert warnings == []
