"""taskkit.storage.base: every upstream error is a decision; stores list, stat and read as
promised."""

from __future__ import annotations

import errno
import importlib
import inspect
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import azure.core.exceptions as azure_errors
import azure.identity  # defines exception classes that must be in RULES
import azure.storage.blob  # likewise
import fsspec
import fsspec.core
import fsspec.exceptions
import pytest
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from taskkit.content.digest import hash_bytes
from taskkit.exceptions import (
    ConfigError,
    Conflict,
    DataError,
    InputNotFound,
    IOFailure,
    MisuseError,
    PermissionDenied,
    SourceChanged,
    TaskkitError,
    TransientError,
    UsageError,
)
from taskkit.redaction import shown_url
from taskkit.storage.base import (
    DIGEST_METADATA,
    SIZE_METADATA,
    RemoteFile,
    Store,
    metadata_digest,
)
from taskkit.storage.errors import RULES, translate
from taskkit.storage.memory import MemoryStore
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import FALLBACK, REGISTRY, Stores, backend
from taskkit.storage.urls import AZURE_PROTOCOLS, query_holds, source_name

SECRET = "c2VjcmV0LWtleS1tYXRlcmlhbA"


# -- (a) the table of upstream errors is complete and current -----------------------------------


def _subclasses(cls: type) -> Iterator[type]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _upstream_error_classes() -> set[type]:
    found: set[type] = set()
    for root in (azure_errors.AzureError, aiohttp.ClientError):
        found.add(root)
        found.update(_subclasses(root))
    for _, obj in inspect.getmembers(fsspec.exceptions, inspect.isclass):
        if issubclass(obj, BaseException) and obj.__module__ == fsspec.exceptions.__name__:
            found.add(obj)
    return found


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_every_upstream_error_class_has_a_rule() -> None:
    """Each AzureError / aiohttp.ClientError subclass and fsspec exception is named in RULES,
    so a new upstream error type fails here until someone decides how to translate it."""
    classes = _upstream_error_classes()
    assert len(classes) > 40  # the walk found the SDK trees, not nothing
    missing = sorted(_name(cls) for cls in classes if _name(cls) not in RULES)
    assert missing == []


#: RULES keys that name a class only on some Python versions: on 3.11+ both are aliases of the
#: built-in TimeoutError (whose own name is builtins.TimeoutError).
_TIMEOUT_ALIASES = {"asyncio.exceptions.TimeoutError", "concurrent.futures._base.TimeoutError"}


def _resolve(key: str) -> object | None:
    """The object ``key`` (module.qualname) names, or None when no prefix of it imports."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def test_every_rule_names_an_importable_exception_class() -> None:
    """No stale RULES entry: each key imports as an exception class of exactly that name (the
    version-dependent TimeoutError aliases excepted)."""
    stale = []
    for key in RULES:
        obj = _resolve(key)
        if key in _TIMEOUT_ALIASES and sys.version_info >= (3, 11):
            if obj is not TimeoutError:
                stale.append(key)
            continue
        if not (inspect.isclass(obj) and issubclass(obj, BaseException) and _name(obj) == key):
            stale.append(key)
    assert stale == []


# -- (b) translate ------------------------------------------------------------------------------


def http_error(status: int, cls: type[azure_errors.HttpResponseError] | None = None) -> Exception:
    exc = (cls or azure_errors.HttpResponseError)(message=f"the service said {status}")
    exc.status_code = status
    return exc


def aiohttp_response_error(status: int) -> aiohttp.ClientResponseError:
    url = yarl.URL(f"https://acct.blob.core.windows.net/c/x?sv=1&sig={SECRET}")
    info = aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
    return aiohttp.ClientResponseError(info, (), status=status, message="status")


@pytest.mark.parametrize(
    ("exc", "cls", "code"),
    [
        (azure_errors.ResourceNotFoundError(message="BlobNotFound"), InputNotFound, 66),
        (azure_errors.ClientAuthenticationError(message="denied"), ConfigError, 78),
        (http_error(429), TransientError, 75),
        (http_error(500), TransientError, 75),
        (http_error(503), TransientError, 75),
        (http_error(403), ConfigError, 78),
        (http_error(401), ConfigError, 78),
        (http_error(404), InputNotFound, 66),
        (http_error(400), ConfigError, 78),
        (http_error(412, azure_errors.ResourceModifiedError), SourceChanged, 75),
        (http_error(412), SourceChanged, 75),
        (azure_errors.ResourceModifiedError(message="ConditionNotMet"), SourceChanged, 75),
        (azure_errors.ServiceRequestError("connection refused"), TransientError, 75),
        (azure_errors.ServiceResponseTimeoutError("read timed out"), TransientError, 75),
        (azure_errors.StreamConsumedError(SimpleNamespace(request="GET /c/x")), MisuseError, 70),
        (azure.identity.CredentialUnavailableError("no managed identity"), ConfigError, 78),
        (aiohttp_response_error(503), TransientError, 75),
        (aiohttp_response_error(404), InputNotFound, 66),
        (aiohttp.ServerDisconnectedError(), TransientError, 75),
        (fsspec.exceptions.FSTimeoutError(), TransientError, 75),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), InputNotFound, 66),
        (PermissionError(errno.EACCES, "Permission denied"), PermissionDenied, 77),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), TransientError, 75),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), TransientError, 75),
        (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), TransientError, 75),
        (OSError(errno.EIO, "Input/output error"), IOFailure, 74),
        (OSError(errno.ENOSPC, "No space left on device"), IOFailure, 74),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_translate_maps_upstream_errors_to_taskkit_errors(
    exc: BaseException, cls: type[TaskkitError], code: int
) -> None:
    """The taskkit class, exit code and retryable flag of each kind of upstream failure."""
    failure = translate(exc, "cannot read az://c/x")
    assert type(failure) is cls
    assert failure.exit_code == code
    assert failure.retryable == issubclass(cls, TransientError)
    assert str(failure).startswith("cannot read az://c/x")


def storage_error(
    status: int, code: str, cls: type[azure_errors.HttpResponseError] | None = None
) -> Exception:
    exc = http_error(status, cls)
    exc.error_code = code
    return exc


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (storage_error(412, "ConditionNotMet", azure_errors.ResourceModifiedError), Conflict),
        (storage_error(409, "BlobAlreadyExists", azure_errors.ResourceExistsError), Conflict),
        (storage_error(412, "BlobAlreadyExists", azure_errors.ResourceExistsError), Conflict),
        (storage_error(404, "BlobNotFound", azure_errors.ResourceNotFoundError), Conflict),
        (
            storage_error(404, "ContainerNotFound", azure_errors.ResourceNotFoundError),
            InputNotFound,
        ),
        (storage_error(409, "LeaseIdMissing", azure_errors.ResourceExistsError), TransientError),
        (storage_error(503, "ServerBusy"), TransientError),
        (storage_error(403, "AuthorizationFailure"), ConfigError),
        (azure_errors.ServiceResponseTimeoutError("read timed out"), TransientError),
    ],
    ids=lambda v: (
        v.__name__
        if isinstance(v, type)
        else f"{getattr(v, 'status_code', '')}{getattr(v, 'error_code', None) or type(v).__name__}"
    ),
)
def test_a_failed_condition_of_a_conditional_request_is_a_conflict(
    exc: Exception, cls: type[TaskkitError]
) -> None:
    """With conditional=True, 412, 409 BlobAlreadyExists and 404 BlobNotFound mean another
    writer won (Conflict, 75); a missing container and every other failure keep their rule."""
    failure = translate(exc, "cannot write az://c/x", conditional=True)
    assert type(failure) is cls
    assert str(failure).startswith("cannot write az://c/x")
    if cls is Conflict:
        assert str(failure).endswith(f"changed it first (HTTP {exc.status_code} {exc.error_code})")  # type: ignore[attr-defined]


def test_without_a_condition_the_same_errors_keep_their_rules() -> None:
    """Unconditional requests are unchanged: 412 is SourceChanged, 409 is transient, 404 is
    InputNotFound, never Conflict."""
    assert type(translate(storage_error(412, "ConditionNotMet"), "x")) is SourceChanged
    exists = storage_error(409, "BlobAlreadyExists", azure_errors.ResourceExistsError)
    assert type(translate(exists, "x")) is TransientError
    missing = storage_error(404, "BlobNotFound", azure_errors.ResourceNotFoundError)
    assert type(translate(missing, "x")) is InputNotFound


def test_status_codes_are_named_in_the_message() -> None:
    """A throttled request says which HTTP status came back."""
    failure = translate(http_error(429), "cannot list az://c/")
    assert str(failure) == "cannot list az://c/: the service answered HTTP 429"


def test_authentication_failures_carry_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the upstream message nor the action's URL leaks a key or a signature."""
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", SECRET)
    exc = azure_errors.ClientAuthenticationError(
        message=f"Server failed to authenticate: AccountKey={SECRET};sig={SECRET}"
    )
    failure = translate(exc, f"cannot read https://acct.blob.core.windows.net/c/x?sig={SECRET}")
    assert isinstance(failure, ConfigError)
    assert failure.exit_code == 78
    assert SECRET not in str(failure)
    assert "access denied" in str(failure)


def test_transient_messages_carry_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upstream reason quoted in a transient failure is redacted."""
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", f"sv=1&sp=r&sig={SECRET}")
    exc = azure_errors.ServiceRequestError(
        f"cannot connect to https://acct/c/x?sv=1&sp=r&sig={SECRET}\nsecond line AccountKey=k"
    )
    failure = translate(exc, "cannot read az://c/x")
    assert isinstance(failure, TransientError)
    assert SECRET not in str(failure)
    assert "second line" not in str(failure)  # one line only


def test_a_subclass_gets_the_rule_of_its_nearest_listed_ancestor() -> None:
    """RULES is looked up along the MRO: an unknown subclass of ResourceNotFoundError is still
    an InputNotFound, not the AzureError catch-all."""

    class VeryMissing(azure_errors.ResourceNotFoundError):
        pass

    assert type(translate(VeryMissing(message="gone"), "x")) is InputNotFound


@pytest.mark.parametrize(
    "exc", [KeyError("k"), ValueError("v"), AttributeError("a"), RuntimeError("r")], ids=repr
)
def test_bugs_are_not_translated(exc: Exception) -> None:
    """An error that is not a storage error is no business of translate()."""
    assert translate(exc, "cannot read az://c/x") is None


def test_taskkit_errors_pass_as_they_are() -> None:
    """An error taskkit raised itself is returned unchanged."""
    mine = DataError("bad bytes")
    assert translate(mine, "x") is mine


def test_a_timeout_without_a_message_still_says_why() -> None:
    """A bare TimeoutError() (as asyncio raises it) does not leave an empty reason."""
    failure = translate(TimeoutError(), "cannot read az://c/x")
    assert isinstance(failure, TransientError)
    assert str(failure).removeprefix("cannot read az://c/x:").strip() != ""


# -- (c) stores -------------------------------------------------------------------------------


@pytest.fixture
def memory() -> Iterator[fsspec.AbstractFileSystem]:
    """fsspec's process-wide memory filesystem, empty before and after the test."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")


@pytest.fixture
def stores() -> Iterator[Stores]:
    with Stores(RetryBudget(attempts=1)) as opened:
        yield opened


FILES = {"b.txt": b"bbb", "a.txt": b"aaaa", "sub/c.bin": b"c" * 10}


@pytest.fixture(params=["memory", "local"])
def filled(
    request: pytest.FixtureRequest, memory: fsspec.AbstractFileSystem, tmp_path: Path
) -> tuple[str, Callable[[str, bytes], None]]:
    """A store root URL holding FILES, and a function writing a file below it."""
    if request.param == "memory":
        root = "memory://src"

        def write(name: str, data: bytes) -> None:
            memory.pipe(f"/src/{name}", data)

    else:
        base = tmp_path / "src"
        root = str(base)

        def write(name: str, data: bytes) -> None:
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            (base / name).write_bytes(data)

    for name, data in FILES.items():
        write(name, data)
    return root, write


def test_list_returns_every_file_sorted_with_url_key_size_and_version(
    filled: tuple[str, Callable[[str, bytes], None]], stores: Stores
) -> None:
    """One RemoteFile per file below the prefix, in key order, directories left out."""
    root, _ = filled
    store, key = stores.open(f"{root}/")
    files = store.list(key)
    assert all(isinstance(f, RemoteFile) for f in files)
    names = ["a.txt", "b.txt", "sub/c.bin"]
    assert [f.url for f in files] == [f"{root}/{n}" for n in names]
    assert [f.key for f in files] == sorted(f.key for f in files)
    assert [f.key.rsplit("/src/", 1)[1] for f in files] == names
    assert [f.size for f in files] == [len(FILES[n]) for n in names]
    assert all(isinstance(f.version, str) and f.version for f in files)
    assert all(f.digest is None for f in files)


def test_stat_of_a_missing_file_is_input_not_found(
    filled: tuple[str, Callable[[str, bytes], None]], stores: Stores
) -> None:
    """A name that lists nothing is an InputNotFound (exit 66) naming the URL."""
    root, _ = filled
    store, key = stores.open(f"{root}/nope.txt")
    with pytest.raises(InputNotFound, match=r"nope\.txt") as info:
        store.stat(key)
    assert info.value.exit_code == 66


def test_stat_of_a_directory_says_to_end_it_with_a_slash(
    filled: tuple[str, Callable[[str, bytes], None]], stores: Stores
) -> None:
    """A directory named without the trailing '/' is not a file; the hint says what to do."""
    root, _ = filled
    store, key = stores.open(f"{root}/sub")
    with pytest.raises(InputNotFound, match="end it with /"):
        store.stat(key)


def test_read_returns_the_bytes_of_a_range(
    filled: tuple[str, Callable[[str, bytes], None]], stores: Stores
) -> None:
    """read(file, offset, length) is exactly those bytes."""
    root, _ = filled
    store, key = stores.open(f"{root}/a.txt")
    file = store.stat(key)
    assert file.size == 4
    assert store.read(file, 1, 2) == b"aa"
    assert store.read(file, 0, 4) == b"aaaa"


def test_a_short_read_is_a_source_change(
    filled: tuple[str, Callable[[str, bytes], None]], stores: Stores
) -> None:
    """Fewer bytes than asked for (the file shrank) is SourceChanged (75), not short data."""
    root, write = filled
    store, key = stores.open(f"{root}/a.txt")
    file = store.stat(key)
    write("a.txt", b"a")
    with pytest.raises(SourceChanged, match="changed while being read") as info:
        store.read(file, 0, 4)
    assert info.value.exit_code == 75


def test_confirm_passes_for_the_listed_version(
    filled: tuple[str, Callable[[str, bytes], None]], stores: Stores
) -> None:
    """confirm() of a file that has not changed since it was listed does not raise."""
    root, _ = filled
    store, key = stores.open(f"{root}/")
    for file in store.list(key):
        store.confirm(file)


def test_confirm_raises_transient_after_the_file_changed(
    filled: tuple[str, Callable[[str, bytes], None]], stores: Stores
) -> None:
    """A file rewritten since stat() is another version: SourceChanged (exit 75)."""
    root, write = filled
    store, key = stores.open(f"{root}/b.txt")
    file = store.stat(key)
    store.confirm(file)
    write("b.txt", b"a longer content")
    with pytest.raises(SourceChanged, match="changed") as info:
        store.confirm(file)
    assert info.value.exit_code == 75


def test_the_same_store_serves_one_protocol(
    memory: fsspec.AbstractFileSystem, stores: Stores
) -> None:
    """Opening two URLs of one protocol gives one store, and the key of each URL."""
    first, key_a = stores.open("memory://src/a")
    second, key_b = stores.open("memory://other/b")
    assert first is second
    assert (key_a, key_b) == ("/src/a", "/other/b")


def test_a_mounted_store_serves_every_url_under_its_prefix(stores: Stores) -> None:
    """A store mounted at a protocol (bare or with ://) serves its URLs, the key being what
    follows protocol://; of two mounted prefixes the longer wins; other URLs open as before."""
    everywhere, inputs, local = MemoryStore("az"), MemoryStore("az"), MemoryStore("file")
    mounts = {"az": everywhere, "az://box/in/": inputs, "file://": local}
    with Stores(RetryBudget(attempts=1), mounts=mounts) as mounted:
        assert mounted.open("az://box/out/x.txt") == (everywhere, "box/out/x.txt")
        assert mounted.open("az://box/in/x.txt") == (inputs, "box/in/x.txt")
        assert mounted.open("az://box/in") == (everywhere, "box/in")
        assert mounted.open("/tmp/x") == (local, "/tmp/x")
        store, key = mounted.open("memory://src/a")
        assert (type(store), key) == (type(stores.open("memory://src/a")[0]), "/src/a")


def test_a_mounted_store_is_not_closed_by_the_stores(stores: Stores) -> None:
    """close() releases the stores the Stores opened, never one it was handed."""

    class Closing(MemoryStore):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    given = Closing("fake")
    with Stores(mounts={"fake://": given}) as mounted:
        mounted.open("fake://c/x")
    assert given.closed == 0


@pytest.mark.parametrize("mount", ["", None, 7])
def test_a_mount_that_is_no_prefix_is_misuse(mount: object) -> None:
    """A mount key must be a protocol or a URL prefix: MisuseError (70) otherwise."""
    with pytest.raises(MisuseError) as caught:
        Stores(mounts={mount: MemoryStore()})  # type: ignore[dict-item]
    assert caught.value.exit_code == 70


def test_a_signed_url_is_refused_before_a_mounted_store_sees_it() -> None:
    """A SAS token in a non-http URL is refused (64) whatever serves the protocol."""
    with Stores(mounts={"az": MemoryStore("az")}) as mounted, pytest.raises(UsageError):
        mounted.open(f"az://box/x?sv=2024&sig={SECRET}")


def test_the_registry_names_a_backend_for_each_azure_protocol() -> None:
    """Every Azure protocol is served by the Azure store, every other by fsspec's; a class
    path that names no Store is misuse."""
    assert set(REGISTRY) == AZURE_PROTOCOLS
    assert {backend(path).__name__ for path in REGISTRY.values()} == {"AzureStore"}
    assert backend(FALLBACK).__name__ == "FsspecStore"
    with pytest.raises(MisuseError):
        backend("taskkit.exceptions:Conflict")


def test_a_backend_is_imported_only_when_a_url_of_it_is_opened(tmp_path: Path) -> None:
    """Opening local and memory:// URLs imports neither the Azure store nor the Azure SDK."""
    code = (
        "import sys\n"
        "from taskkit.storage.stores import Stores\n"
        "with Stores() as stores:\n"
        f"    stores.open({str(tmp_path)!r}); stores.open('memory://x/y')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('taskkit.storage.azure', "
        "'azure.storage', 'adlfs'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


_WITHOUT_FSSPEC = [
    "/a/b", "/a/b/", "/a/b//", "file:///a/b/", "file:///a//b", "/a/./b", "/a/../b", "/",
    "file:///", "/a/b c", "/a/b%20c", "/é/ü", "/a/b?x=1#y", "/a/~b",
]  # fmt: skip
_WITH_FSSPEC = [
    "~/x", "file://~/x", "rel/x/", "./x", "//a/b", "file:////a", "file:/a/b", "local:///a/b",
    "file://", "file://localhost/a", "/a::b",
]  # fmt: skip


@pytest.mark.parametrize("url", _WITHOUT_FSSPEC + _WITH_FSSPEC)
def test_a_local_path_has_the_key_fsspec_gives_it(url: str) -> None:
    """Plain absolute paths are opened without fsspec, each with the key fsspec's own parsing
    gives it; anything else (relative, '~', a chain, another spelling) is left to fsspec."""
    from taskkit.storage.stores import _plain_local_key

    key = _plain_local_key(url)
    assert (key is not None) == (url in _WITHOUT_FSSPEC)
    if key is not None:
        assert key == fsspec.core.url_to_fs(url)[1]


def test_the_local_disk_is_one_store_and_opening_a_path_imports_no_fsspec(tmp_path: Path) -> None:
    """An absolute path, its file:// URL and a relative path are served by one store, and a
    process that opens, lists and reads local paths alone never imports fsspec."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"data")
    code = (
        "import os, sys\n"
        "from taskkit.storage.stores import Stores\n"
        "with Stores() as stores:\n"
        f"    one, key = stores.open({str(tmp_path / 'd')!r} + '/')\n"
        "    (file,) = one.list(key + '/')\n"
        "    assert one.read(file, 0, 4) == b'data'\n"
        f"    assert stores.open('file://{tmp_path}/d/f')[0] is one\n"
        "    print(sorted(m for m in sys.modules if m.split('.')[0] == 'fsspec'))\n"
        f"    os.chdir({str(tmp_path)!r})\n"
        "    assert stores.open('d/f') == (one, " + repr(str(tmp_path / "d" / "f")) + ")\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_the_contract_imports_no_backend() -> None:
    """storage/base.py, the contract, imports neither fsspec, adlfs nor Azure, nor any store
    module, at module level: backends depend on it, never it on them."""
    import ast

    import taskkit.storage.base

    tree = ast.parse(Path(inspect.getfile(taskkit.storage.base)).read_text())
    imported = {
        alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)}
    forbidden = ("fsspec", "adlfs", "azure", "taskkit.storage.azure", "taskkit.storage.fsstore",
                 "taskkit.storage.memory", "taskkit.storage.stores")  # fmt: skip
    assert imported
    assert not {name for name in imported if name.startswith(forbidden)}


@pytest.mark.parametrize("url", ["az://Bad_Name/x", "abfs://a/x", "az://-ab/x", "az:///x"])
def test_a_bad_container_name_is_a_usage_error_before_any_request(url: str) -> None:
    """Azure would refuse the container name: UsageError (64) before any store sees the URL,
    even one mounted at its protocol."""
    protocol = url.split("://", 1)[0]
    with (
        Stores(RetryBudget(attempts=1), mounts={protocol: MemoryStore(protocol)}) as stores,
        pytest.raises(UsageError) as info,
    ):
        stores.open(url)
    assert info.value.exit_code == 64


def test_an_unknown_protocol_is_a_config_error(stores: Stores) -> None:
    """No fsspec implementation for the protocol: ConfigError (78) naming it."""
    with pytest.raises(ConfigError, match="nosuchproto") as info:
        stores.open("nosuchproto://x")
    assert info.value.exit_code == 78


def test_metadata_digest_is_read_case_insensitively() -> None:
    """Azure may return metadata names in another case; the digest and size are still found."""
    digest = hash_bytes(b"hello")
    assert metadata_digest({"Taskkit_Digest": str(digest), "TASKKIT_SIZE": "5"}, 5) == digest
    assert metadata_digest({DIGEST_METADATA: str(digest), SIZE_METADATA: "5"}, 5) == digest
    assert metadata_digest({DIGEST_METADATA: str(digest)}, 5) == digest  # size is optional


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        {},
        {"other": "x"},
        {DIGEST_METADATA: "xxh3-128:nothex"},
        {DIGEST_METADATA: "md5:" + "0" * 32},
        {DIGEST_METADATA: str(hash_bytes(b"hello")), SIZE_METADATA: "6"},
        {DIGEST_METADATA: str(hash_bytes(b"hello")), SIZE_METADATA: "five"},
    ],
    ids=["none", "empty", "no-digest", "malformed", "other-algorithm", "size-differs", "bad-size"],
)
def test_metadata_digest_ignores_what_it_cannot_trust(metadata: dict[str, str] | None) -> None:
    """No digest, a malformed one, or one recorded for another size: None."""
    assert metadata_digest(metadata, 5) is None


# -- (d) retries of a store's requests ---------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def budget(recorder: Recorder, attempts: int = 4) -> RetryBudget:
    return RetryBudget(
        attempts=attempts,
        first_delay=0.5,
        budget=100,
        sleep=recorder.sleep,
        clock=recorder.clock,
        uniform=lambda low, high: high,
    )


def test_transient_store_errors_are_retried_with_the_budget(
    memory: fsspec.AbstractFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two dropped connections while reading, then the bytes: two recorded waits."""
    memory.pipe("/src/f", b"0123456789")
    recorder = Recorder()
    calls: list[int] = []
    real = memory.cat_file

    def flaky(path: str, start: int | None = None, end: int | None = None) -> bytes:
        calls.append(1)
        if len(calls) <= 2:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        return bytes(real(path, start=start, end=end))

    with Stores(budget(recorder)) as opened:
        store, key = opened.open("memory://src/f")
        file = store.stat(key)
        monkeypatch.setattr(memory, "cat_file", flaky)
        assert store.read(file, 2, 3) == b"234"
    assert len(calls) == 3
    assert recorder.sleeps == [0.5, 1.0]


def test_a_permanent_store_error_is_raised_at_once(
    memory: fsspec.AbstractFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused permission is translated (PermissionDenied, 77) and not retried."""
    memory.pipe("/src/f", b"0123456789")
    recorder = Recorder()
    calls: list[int] = []

    def denied(path: str, start: int | None = None, end: int | None = None) -> bytes:
        calls.append(1)
        raise PermissionError(errno.EACCES, "Permission denied")

    with Stores(budget(recorder)) as opened:
        store, key = opened.open("memory://src/f")
        file = store.stat(key)
        monkeypatch.setattr(memory, "cat_file", denied)
        with pytest.raises(PermissionDenied) as info:
            store.read(file, 0, 10)
    assert info.value.exit_code == 77
    assert isinstance(info.value.__cause__, PermissionError)
    assert calls == [1]
    assert recorder.sleeps == []


def test_a_source_change_is_not_retried_in_run(
    memory: fsspec.AbstractFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read conditional on the listed version cannot succeed by retrying: SourceChanged is
    raised after one try, though it is retryable (75) for the next attempt of the task."""
    memory.pipe("/src/f", b"0123456789")
    recorder = Recorder()
    calls: list[int] = []

    def shrunk(path: str, start: int | None = None, end: int | None = None) -> bytes:
        calls.append(1)
        return b"012"

    with Stores(budget(recorder)) as opened:
        store, key = opened.open("memory://src/f")
        file = store.stat(key)
        monkeypatch.setattr(memory, "cat_file", shrunk)
        with pytest.raises(SourceChanged) as info:
            store.read(file, 0, 10)
    assert info.value.retryable
    assert calls == [1]
    assert recorder.sleeps == []


def test_a_precondition_failure_from_upstream_is_not_retried() -> None:
    """An upstream 412 (the etag no longer matches) is translated to SourceChanged once."""
    recorder = Recorder()
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise http_error(412, azure_errors.ResourceModifiedError)

    with pytest.raises(SourceChanged):
        Store(budget(recorder)).call(action, "cannot read az://c/x")
    assert calls == [1]
    assert recorder.sleeps == []


def test_when_the_budget_is_spent_the_translated_error_is_raised() -> None:
    """Every try fails transiently: after `attempts` tries the TransientError is raised,
    caused by the upstream error of the last try."""
    recorder = Recorder()
    upstream: list[Exception] = []

    def action() -> None:
        upstream.append(azure_errors.ServiceRequestError(f"unreachable {len(upstream)}"))
        raise upstream[-1]

    store = Store(budget(recorder, attempts=3))
    with pytest.raises(TransientError, match="unreachable 2") as info:
        store.call(action, "cannot list az://c/")
    assert info.value.exit_code == 75
    assert info.value.__cause__ is upstream[-1]
    assert len(upstream) == 3
    assert recorder.sleeps == [0.5, 1.0]


def test_bugs_inside_a_store_call_are_not_retried_or_wrapped() -> None:
    """A KeyError from the action escapes as itself after one try."""
    recorder = Recorder()
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        Store(budget(recorder)).call(action, "x")
    assert calls == [1]
    assert recorder.sleeps == []


def test_local_store_urls_are_plain_paths(tmp_path: Path, stores: Stores) -> None:
    """A local file's url is its path (no file:// prefix) and its key is the absolute path."""
    (tmp_path / "f").write_bytes(b"x")
    for url in (str(tmp_path / "f"), f"file://{tmp_path}/f"):
        store, key = stores.open(url)
        file = store.stat(key)
        assert file.url == os.fspath(tmp_path / "f")
        assert file.key == os.fspath(tmp_path / "f")
        assert file.size == 1


# -- writes --------------------------------------------------------------------------------------


def test_an_append_repeated_after_it_landed_is_not_doubled(stores: Stores) -> None:
    """A retried append whose first try landed leaves the bytes once (the offset says so)."""
    store, key = stores.open("memory://appends/log.txt")
    store.append(key, 0, b"one\n")
    store.append(key, 4, b"two\n")
    store.append(key, 4, b"two\n")
    assert store.fs.cat_file(key) == b"one\ntwo\n"  # type: ignore[attr-defined]


def test_an_append_at_the_wrong_offset_changes_nothing(stores: Stores) -> None:
    """An append that does not continue the file is refused as a changed source (75)."""
    store, key = stores.open("memory://appends/other.txt")
    store.append(key, 0, b"one\n")
    with pytest.raises(SourceChanged, match="holds 4 bytes, not 9"):
        store.append(key, 9, b"late\n")
    assert store.fs.cat_file(key) == b"one\n"  # type: ignore[attr-defined]


def test_a_bad_container_name_message_hides_a_signature(stores: Stores) -> None:
    """The usage error for a bad container quotes the URL with its SAS signature hidden."""
    with pytest.raises(UsageError) as caught:
        stores.open("az://Bad_Container/x?sv=2024&sig=SECRETSECRETSECRET")
    assert "SECRETSECRETSECRET" not in str(caught.value)
    assert "Bad_Container" in str(caught.value)


# -- URL helpers: names and '=' of http(s) URLs with a query string ---------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://acct.blob.core.windows.net/c/dir/a.txt?sv=1&sig=AbC/dEf%3D", "a.txt"),
        ("http://127.0.0.1:1/acct/c/a.txt#frag", "a.txt"),
        ("az://c/dir/a?b.txt", "a?b.txt"),  # a blob name may hold '?'
        ("/local/dir/x?y", "x?y"),
        ("az://c/dir/", "dir"),
    ],
)
def test_source_name_is_the_last_path_segment(url: str, name: str) -> None:
    """An http(s) URL's query and fragment are no part of a file's name (a signature with '/'
    in it would be a path); other URLs and paths keep every character."""
    assert source_name(url) == name


@pytest.mark.parametrize(
    ("source", "holds"),
    [
        ("https://a/c/x?sv=1&sig", True),
        ("https://a/c/x?sig", True),
        ("https://a/c/x?sv=1&sig=AbC", False),
        ("az://c/t/year", False),
        ("https://a/c/x", False),
    ],
)
def test_query_holds_tells_the_urls_own_equals_sign(source: str, holds: bool) -> None:
    """Ending at a query parameter's name means the '=' that followed was the URL's own."""
    assert query_holds(source) is holds


def test_shown_url_drops_the_token_and_hides_other_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The form every message shows a user's URL in."""
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "a-configured-key-value")
    assert shown_url("https://a/c/x?sv=1&sig=AbC%3D") == "https://a/c/x"
    assert shown_url("file:///tmp/a-configured-key-value") == "file:///tmp/***"
