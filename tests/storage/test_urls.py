"""A URL that cannot be parsed, wherever a user gives it (``stage -i``, ``upload -o``, ``run -i``,
``-o`` and ``--state``, ``step -o``, ``status --state``), is one line naming it and what is
wrong with it: 64 (200 in ``run`` and ``step``), never an internal error (70, or 206, which
Batch retries), never a traceback, and nothing is written. A valid URL with an IPv6 host
(``http://[::1]:8080/x``) is kept whole: its ``::`` is no fsspec chain, its ``:`` no
``SRC=DEST`` split.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import yarl
from http_fakes import BODY, http_server
from runner_helpers import TASKKIT, Task, clean_environment, invoke, no_traceback, snapshot

from taskkit.exceptions import UsageError
from taskkit.redaction import public_url, redact
from taskkit.storage.memory import MemoryStore
from taskkit.storage.stores import Stores
from taskkit.storage.urls import bad_url, url_problem
from taskkit.transfer.stage_plan import Input, parse_input

#: URLs no parser takes, one of each way to get one wrong.
UNPARSEABLE = [
    "http://[::1",  # an unclosed bracket
    "http://[bad/x/a.txt",
    "http://[::1]x/a.txt",  # text after the bracket
    "http://[1.2.3]/x/a.txt",  # not an IPv6 address
    "http://127.0.0.1:99999/x/a.txt",  # a port out of range
    "http://127.0.0.1:abc/x/a.txt",  # a port that is no number
    "http://",  # no host
    "http:///x/a.txt",
    "https://a b/x/a.txt",  # a space in the host
    "az:///x/a.txt",  # no container
    "abfs://",
]
SIGNED_V6 = "https://[2001:db8::7]/c/f.bin?sv=1&sig=a%3D"
#: Inputs naming a container and no blob in it (as outputs or state, the container's root).
CONTAINER_ONLY = ["az://data", "abfs://data"]


def _one_line(code: int, out: str, err: str, expected: int, *fragments: str) -> str:
    assert code == expected, err
    (line,) = err.splitlines()
    assert line.startswith("taskkit: error: "), line
    assert "internal error" not in line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert out == ""
    return line


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A stat-cache under the test's directory, so that a write to it would show."""
    return {"TASKKIT_CACHE_DIR": str(tmp_path / "cache")}


@pytest.mark.parametrize("url", UNPARSEABLE + CONTAINER_ONLY)
def test_stage_refuses_a_bad_input_url_in_one_line(
    url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """``stage -i BAD`` and ``-i BAD=DEST``: 64, one line naming the URL, nothing written."""
    work = tmp_path / "work"
    for given in (url, f"{url}=dest.txt"):
        code, out, err = invoke(["stage", "--workdir", str(work), "-i", given], env)
        line = _one_line(code, out, err, 64, f"input {url!r}")
        if url in CONTAINER_ONLY:
            assert f"names a container, not a blob: {url}/ stages every blob" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", UNPARSEABLE)
def test_upload_refuses_a_bad_destination_url_in_one_line(
    url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """``upload -o GLOB=BAD``: 64, one line naming the URL, nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.txt").write_bytes(b"a")
    before = snapshot(tmp_path)
    code, out, err = invoke(["upload", "--workdir", str(work), "-o", f"a.txt={url}"], env)
    _one_line(code, out, err, 64, f"output 'a.txt={url}'")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("url", "where"),
    [(url, where) for url in UNPARSEABLE for where in ("-i", "-o", "--state")]
    + [(url, "-i") for url in CONTAINER_ONLY],  # a container's root is a valid output or state
)
def test_run_refuses_a_bad_url_as_a_permanent_failure_before_writing(
    url: str, where: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """``run`` with a bad input, output or state URL: 200 (permanent, not the retryable 206
    of an internal error), one line naming it; no journal, nothing in the working
    directory."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.txt").write_bytes(b"a")
    state = tmp_path / "state"
    given = {"-i": ["-i", url], "-o": ["-o", f"a.txt={url}"], "--state": []}[where]
    before = snapshot(tmp_path)
    code, out, err = invoke(
        [
            *("run", "--state", url if where == "--state" else f"file://{state}"),
            *("--job-id", "j", "--task-id", "t", "--workdir", str(work), *given),
            *("--", "true"),
        ],
        env,
    )
    _one_line(code, out, err, 200, url)
    assert snapshot(tmp_path) == before
    assert not state.exists()


@pytest.mark.parametrize("url", UNPARSEABLE)
def test_step_refuses_a_bad_destination_url_as_a_permanent_failure(
    url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """``step NAME -o GLOB=BAD``: 200, one line naming the URL, before the journal is read."""
    state = tmp_path / "state"
    env = {**env, "TASKKIT_STATE": f"file://{state}"}
    env |= {"TASKKIT_JOB_ID": "j", "TASKKIT_TASK_ID": "t"}
    code, out, err = invoke(["step", "s", "-o", f"a.txt={url}", "--", "true"], env)
    _one_line(code, out, err, 200, f"output 'a.txt={url}'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("task", [[], ["--task-id", "t"]], ids=["job", "task"])
@pytest.mark.parametrize("url", UNPARSEABLE)
def test_status_refuses_a_bad_state_url_in_one_line(
    url: str, task: list[str], tmp_path: Path, env: dict[str, str]
) -> None:
    """``status --state BAD``, of a job or of one task: 64, one line naming the URL as given
    (not a journal below it)."""
    code, out, err = invoke(["status", "--state", url, "--job-id", "j", *task], env)
    line = _one_line(code, out, err, 64, url)
    assert f"{url}/j/" not in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", UNPARSEABLE)
def test_a_store_is_never_opened_for_a_bad_url(url: str) -> None:
    """:meth:`Stores.open`, the boundary every other caller passes: UsageError (64) naming the
    URL, before any store sees it, even one mounted at its protocol."""
    protocol = url.split("://", 1)[0]
    with (
        Stores(mounts={protocol: MemoryStore(protocol)}) as stores,
        pytest.raises(UsageError) as info,
    ):
        stores.open(url)
    assert info.value.exit_code == 64
    assert str(info.value).startswith(repr(url))


def _mangled(url: str) -> list[str]:
    """``url`` with each character of its authority dropped, doubled, or followed by one of
    the characters URL parsers trip on."""
    start = url.index("://") + 3
    end = url.index("/", start)
    found = []
    for at in range(start, end + 1):
        found += [url[:at] + url[at + 1 :], url[:at] + url[at] + url[at:]]
        found += [url[:at] + c + url[at:] for c in "[]:@% "]
    return found


def _opened(stores: Stores, url: str) -> str | UsageError:
    """The key ``url`` opens at, or the UsageError refusing it."""
    try:
        return stores.open(url)[1]
    except UsageError as exc:
        return exc


@pytest.mark.parametrize("url", ["http://[::1]:8080/x/a.txt", "https://h.example:443/c/a.txt"])
def test_no_mangled_http_url_escapes_as_a_value_error(url: str) -> None:
    """The class, not the examples: every mangling of a URL's host and port is either refused
    as a UsageError naming it, or opened, and then one fsspec's HTTP filesystem (yarl) can
    request."""
    with Stores() as stores:
        for mangled in _mangled(url):
            found = _opened(stores, mangled)
            if isinstance(found, UsageError):
                # named as shown: a mangling with 'x:y@' holds a password, which is left out
                assert str(found).startswith(repr(redact(public_url(mangled)))), (mangled, found)
                continue
            assert found == mangled
            yarl.URL(found)  # raises ValueError for what fsspec could not request


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://[::1]:8080/x/a.txt", Input("http://[::1]:8080/x/a.txt", "a.txt")),
        ("http://[::1]:8080/x/a.txt=in/b.txt", Input("http://[::1]:8080/x/a.txt", "in/b.txt")),
        ("http://[::1]/x/=d/", Input("http://[::1]/x/", "d/")),
        (f"{SIGNED_V6}=f", Input(SIGNED_V6, "f")),
        (SIGNED_V6, Input(SIGNED_V6, "f.bin")),
        ("http://[fe80::1%25eth0]:80/f.bin=g", Input("http://[fe80::1%25eth0]:80/f.bin", "g")),
    ],
)  # fmt: skip
def test_an_ipv6_source_is_split_whole(text: str, expected: Input) -> None:
    """SRC=DEST with a bracketed IPv6 host: SRC keeps its host and port, DEST is the name."""
    assert parse_input(text) == expected
    with Stores() as stores:
        _, key = stores.open(expected.source)
    assert key == expected.source  # the whole URL, not cut at the '::' of an fsspec chain


def test_the_parse_problems_are_words_naming_the_url() -> None:
    """Each problem says what is wrong, not what a parser raised."""
    assert bad_url("http://[bad/x") == (
        "'http://[bad/x' has an invalid host: an IPv6 address goes between '[' and ']', "
        "as in http://[::1]:8080/PATH"
    )
    assert (
        url_problem("http://h:99999/x") == "has a port '99999' that is not a number from 0 to 65535"
    )
    assert url_problem("http:///x") == "names no host (http://HOST/PATH)"
    assert url_problem("abfs:///x") == "names no container (abfs://CONTAINER/PATH)"
    assert url_problem("az://data") is None  # a container's root: a valid output or state
    assert url_problem("/local/path") is url_problem("memory://x") is None  # fmt: skip


def test_a_signed_bad_url_is_shown_without_its_token() -> None:
    """The line naming a bad http(s) URL never holds its SAS signature."""
    line = bad_url("https://h:99999/c/x?sv=2026-10-06&sr=b&sig=U0lHTkFUVVJFU0lHTkFUVVJF")
    assert line is not None
    assert "U0lHTkFUVVJF" not in line
    assert line.startswith("'https://h:99999/c/x")


def test_an_azure_store_refuses_a_key_naming_only_a_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key without a blob name (``data``) reaching the Azure store: UsageError by name, no
    request (the SDK's own refusal is a bare ValueError, an internal error)."""
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={key};BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
    )
    with Stores() as stores:
        store, _ = stores.open("az://data/")
        with pytest.raises(UsageError, match="'az://data' names a container, not a blob"):
            store.stat("data")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")


@needs_ipv6
def test_stage_downloads_from_an_ipv6_host(tmp_path: Path) -> None:
    """``stage -i http://[::1]:PORT/x/a.txt`` (with and without a DEST) is a download: exit 0,
    the server's bytes at the file's own name, and at the DEST."""
    work = tmp_path / "work"
    with http_server("::1") as (base, seen):
        assert base.startswith("http://[::1]:")
        proc = no_traceback(
            subprocess.run(
                [
                    *(*TASKKIT, "stage", "--workdir", str(work)),
                    *("-i", f"{base}/ok/x/a.txt", "-i", f"{base}/ok/x/a.txt=in/b.txt"),
                ],
                capture_output=True,
                text=True,
                env=clean_environment(tmp_path),
                check=False,
            )
        )
    assert proc.returncode == 0, proc.stderr
    assert (work / "a.txt").read_bytes() == (work / "in" / "b.txt").read_bytes() == BODY
    assert any("/ok/x/a.txt" in line for line in seen)


@needs_ipv6
def test_run_stages_an_input_from_an_ipv6_host(tmp_path: Path) -> None:
    """``run -i http://[::1]:PORT/...``: the input is staged, the command runs, exit 0."""
    task = Task(tmp_path)
    try:
        with http_server("::1") as (base, _):
            proc = task.run(["cat", "in/a.txt"], "-i", f"{base}/ok/x/a.txt=in/a.txt")
    finally:
        task.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == BODY.decode()


@pytest.mark.parametrize("url", ["http://h.example", "http://h.example/", "https://h.example?sv=1"])
def test_an_input_url_ending_in_no_name_needs_a_dest(url: str, tmp_path: Path) -> None:
    """An http(s) SRC without a path has no name to stage it under: without a DEST, 64 asking
    for one (not a destination '/' outside the working directory); with one, it parses."""
    code, out, err = invoke(["stage", "--workdir", str(tmp_path / "work"), "-i", url])
    _one_line(code, out, err, 64, "ends in no name: give a DEST (SRC=DEST)")
    assert list(tmp_path.iterdir()) == []
    assert parse_input(f"{url}=d/") == Input(url, "d/")


def test_a_password_where_the_container_goes_is_not_shown() -> None:
    """``az://user:PASSWORD@account/...`` is no container name: refused (64), the password
    never printed."""
    code, out, err = invoke(["stage", "-i", "az://user:hunter2secret@x/y"])
    assert code == 64, err
    assert "hunter2secret" not in out + err
    assert "user:***" in err
