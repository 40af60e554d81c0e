"""taskkit.storage.fsstore for stores that key a file by its whole URL (http, https): the URL is
shown
once and without its token, and a file's identity (the stat-cache's provenance, the node
cache's key) does not change when the token does. Local writes: a key only ever holds a whole
file, even when the writer is killed. Local listings: an odd entry fails alone, a directory
that cannot be read fails the listing."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_fakes import BODY, http_server

from taskkit.content.statcache import StatCache
from taskkit.storage.stores import Stores

TOKEN = "sv=2026-10-06&se={}&sr=b&sp=r&sig={}"


@pytest.fixture
def served() -> Iterator[tuple[str, list[str]]]:
    with http_server() as found:
        yield found


def test_an_http_file_is_shown_once_and_without_its_token(
    stores: Stores, served: tuple[str, list[str]]
) -> None:
    """The listing's URL is the URL as given, without 'http://http://' and without the SAS;
    the request itself carried the token."""
    base, seen = served
    url = f"{base}/ok/dir/a.bin?{TOKEN.format('2030-01-01', 'U0lHTkFUVVJF')}"
    store, key = stores.open(url)
    file = store.stat(key)
    assert file.url == f"{base}/ok/dir/a.bin"
    assert store.url(key) == file.url
    assert file.size == len(BODY)
    assert store.read(file, 2, 4) == BODY[2:6]
    assert all("sig=U0lHTkFUVVJF" in line for line in seen)  # the server got the token


def test_an_http_file_has_one_identity_whatever_its_token(
    stores: Stores, served: tuple[str, list[str]]
) -> None:
    """Two tokens for one file: one identity, free of either."""
    base, _ = served
    one = f"{base}/ok/a.bin?{TOKEN.format('2030-01-01', 'T05F')}"
    two = f"{base}/ok/a.bin?{TOKEN.format('2031-01-01', 'VFdP')}"
    (s1, k1), (s2, k2) = stores.open(one), stores.open(two)
    assert s1.identity(k1) == s2.identity(k2) == f"{base}/ok/a.bin"


def test_query_parameters_that_are_no_credential_stay_in_the_identity(
    stores: Stores, served: tuple[str, list[str]]
) -> None:
    """A snapshot or version selects content: two of them are two sources."""
    base, _ = served
    store, key = stores.open(f"{base}/ok/a.bin?snapshot=1&sig=T05F")
    other, key2 = stores.open(f"{base}/ok/a.bin?snapshot=2&sig=T05F")
    assert store.identity(key) == f"{base}/ok/a.bin?snapshot=1"
    assert store.identity(key) != other.identity(key2)


def test_local_and_memory_urls_are_shown_as_before(stores: Stores) -> None:
    """Stores whose keys are paths keep their form: a path, and protocol://key."""
    store, key = stores.open("memory://bucket/x.txt")
    assert store.url(key) == "memory://bucket/x.txt"
    local, path = stores.open("/tmp/some?file")
    assert local.url(path) == "/tmp/some?file"


def test_an_http_files_password_is_shown_masked_and_left_out_of_its_identity(
    stores: Stores,
) -> None:
    """http://user:PASSWORD@...: the request carries the password; the URL shown masks it,
    the identity drops it (the user stays), so a rotated password names the same source."""
    sent: list[str] = []
    with http_server(authorizations=sent) as (base, _):
        one = base.replace("http://", "http://reader:Rmlyc3Q@") + "/ok/a.bin?sig=T05F"
        two = base.replace("http://", "http://reader:U2Vjb25k@") + "/ok/a.bin"
        (s1, k1), (s2, k2) = stores.open(one), stores.open(two)
        file = s1.stat(k1)
        assert s1.read(file, 0, 2) == BODY[:2]
    public = base.replace("http://", "http://reader@") + "/ok/a.bin"
    assert s1.identity(k1) == s2.identity(k2) == public
    assert file.url == s1.url(k1) == base.replace("http://", "http://reader:***@") + "/ok/a.bin"
    assert set(sent) == {"Basic " + base64.b64encode(b"reader:Rmlyc3Q").decode()}


# -- local writes (the write side, without fsspec's local layer) ------------------------------

_WRITER = """
import sys
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
with Stores(RetryBudget()) as stores:
    store, prefix = stores.open(sys.argv[1])
    size = int(sys.argv[2])
    for i in range(1_000_000):
        key = f"{prefix.rstrip('/')}/d{i % 3}/f{i % 5}.bin"
        data = bytes([i % 251]) * size
        print(i, flush=True)  # said before the write: a kill that follows lands inside it
        if i % 2:
            store.put(key, data, {})
        else:
            writer = store.writer(key)
            for block in range(4):
                writer.write(f"{block}", data[: size // 4])
            writer.commit([str(b) for b in range(4)], {})
"""


def test_a_local_write_killed_anywhere_leaves_only_whole_files_at_final_names(
    tmp_path: Path,
) -> None:
    """A real process putting and block-writing files (new names and replacements, into
    directories it makes) is killed with SIGKILL at several points: every file at a final name
    holds one whole version; only taskkit's own partial names may hold less, one per name."""
    import signal
    import subprocess
    import sys

    from taskkit.storage.base import is_temporary

    dest = tmp_path / "dest"
    size = 4 * 1024 * 1024  # most of the writer's time is inside a write
    for rounds in range(1, 17):
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, dest.as_uri() + "/", str(size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(rounds):  # the child is starting its write number ``rounds``
            assert child.stdout.readline(), "the writer ended early"
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        finals = [p for p in dest.rglob("*") if p.is_file() and not is_temporary(str(p))]
        for path in finals:
            data = path.read_bytes()
            assert len(data) == size, path
            assert data == data[:1] * size, path
        partial = [p for p in dest.rglob("*") if p.is_file() and is_temporary(str(p))]
        assert len(partial) <= 15  # one per name at most (3 directories x 5 names)
    assert len(finals) == 15  # the later rounds replaced files, not only wrote new ones


def test_a_local_put_makes_its_directory_and_reports_the_listed_version(
    tmp_path: Path, stores: Stores
) -> None:
    """put() into directories that do not exist yet makes them, leaves no partial file, and
    returns the version the listing then shows; a parent that is a file is a clear failure."""
    from taskkit.exceptions import TaskkitError

    store, prefix = stores.open((tmp_path / "new").as_uri() + "/")
    key = prefix.rstrip("/") + "/a/b/c.bin"
    version = store.put(key, b"abc", {})
    assert [(f.key, f.version) for f in store.list(prefix)] == [(key, version)]
    assert sorted(p.name for p in (tmp_path / "new" / "a" / "b").iterdir()) == ["c.bin"]
    with pytest.raises(TaskkitError):
        store.put(key + "/under-a-file.bin", b"x", {})


@pytest.mark.parametrize("nameless", [True, False])
def test_a_local_put_names_a_whole_file_new_or_replaced_with_or_without_nameless_files(
    tmp_path: Path, stores: Stores, monkeypatch: pytest.MonkeyPatch, nameless: bool
) -> None:
    """put() of a new name and over an existing one (and over a partial a killed writer left):
    the name holds the new bytes, nothing else is left beside it, and the version returned is
    the one the listing shows; the same where the filesystem makes no nameless file
    (``O_TMPFILE`` refused: the temporary name is used)."""
    import errno

    if not nameless:
        real_open = os.open

        def no_tmpfile(path: str, flags: int, *args: int, **kwargs: object) -> int:
            if flags & getattr(os, "O_TMPFILE", 0) == getattr(os, "O_TMPFILE", -1):
                raise OSError(errno.EOPNOTSUPP, "not supported", path)
            return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", no_tmpfile)
    from taskkit.storage.base import temporary_key

    renames: list[str] = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renames.append(b), real_rename(a, b)))
    store, prefix = stores.open((tmp_path / "d").as_uri() + "/")
    key = prefix.rstrip("/") + "/sub/a.bin"
    for data in (b"first", b"second, longer", b"3"):
        version = store.put(key, data, {})
        # A new name is given to the nameless file at once: no temporary name, no rename.
        assert len(renames) == (0 if nameless and data == b"first" else 1)
        renames.clear()
        assert Path(key).read_bytes() == data
        assert [(f.key, f.version) for f in store.list(prefix)] == [(key, version)]
        assert os.listdir(Path(key).parent) == ["a.bin"]
    Path(temporary_key(key)).write_bytes(b"a killed writer's part")
    version = store.put(key, b"after the crash", {})
    assert Path(key).read_bytes() == b"after the crash"
    assert os.listdir(Path(key).parent) == ["a.bin"]
    assert [f.version for f in store.list(prefix)] == [version]


# -- local listings: odd entries fail alone, an unreadable directory fails the listing -------


def test_a_loop_of_links_and_a_dangling_link_fail_alone(tmp_path: Path) -> None:
    """A loop of symbolic links and a dangling one are listed, so that staging fails them one
    by one, naming each (exit 66), and stages every other file of the prefix."""
    from taskkit.transfer.stage import stage

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    (src / "sub" / "loop1").symlink_to("loop2")
    (src / "sub" / "loop2").symlink_to("loop1")
    (src / "dangling").symlink_to("nowhere")
    with StatCache.open(tmp_path / "cache") as cache:
        summary = stage([f"file://{src}/=in/"], workdir=tmp_path / "w", cache=cache)
    assert (tmp_path / "w" / "in" / "a.txt").read_text() == "a"
    assert (tmp_path / "w" / "in" / "sub" / "b.txt").read_text() == "b"
    failed = sorted(os.path.basename(p.what) for p in summary.problems)
    assert failed == ["dangling", "loop1", "loop2"]
    error = summary.exit_error()
    assert error is not None
    assert error.exit_code == 66


_UNREADABLE = """
import sys
from taskkit.exceptions import PermissionDenied
from taskkit.storage.stores import Stores
store, key = Stores().open(sys.argv[1])
try:
    store.list(key)
except PermissionDenied as exc:
    print(exc.exit_code, exc)
    raise SystemExit(0)
raise SystemExit("listed without the unreadable directory")
"""


def test_an_unreadable_directory_fails_the_listing_naming_it(tmp_path: Path) -> None:
    """A directory below a local prefix that cannot be read fails the whole listing (77,
    naming it), rather than listing the prefix without its files (which staging would then
    remove as gone). Run without the capabilities that let root read anything."""
    src = tmp_path / "src"
    (src / "closed").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "closed" / "x").write_text("x")
    (src / "closed").chmod(0)
    tmp_path.chmod(0o755)
    command = [sys.executable, "-c", _UNREADABLE, f"file://{src}/"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root reads any directory, and setpriv is not here to drop that")
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    finally:
        (src / "closed").chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("77 ")
    assert f"'{src / 'closed'}' may not be read" in done.stdout
