"""taskkit upload against a real Azurite server: what lands in the container, in which order,
and what it cost in requests.

taskkit runs as a real process; what it wrote is read back with the plain Azure SDK. Requests
are taken from Azurite's own debug log, with the blob each one was for, so "nothing was sent"
and "the manifest is written last" are what the server saw, not what taskkit says.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from taskkit.content.digest import hash_bytes
from taskkit.content.statcache import RACY_WINDOW_NS
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.testing import Azurite
from taskkit.transfer.upload import block_size

pytestmark = pytest.mark.azurite

TASKKIT = [sys.executable, "-m", "taskkit"]
MiB = 1024 * 1024
CHUNK = 8 * MiB
MANIFEST = "_taskkit_manifest.json"
SUMMARY_KEYS = {
    "files",
    "transferred",
    "resumed",
    "skipped",
    "linked",
    "failed",
    "bytes_transferred",
    "bytes_reused",
    "seconds",
    "dry_run",
}
#: Requests that change the container.
WRITES = frozenset(
    {"BlockBlob_Upload", "BlockBlob_StageBlock", "BlockBlob_CommitBlockList", "Blob_Delete"}
)
#: A task that is still writing its log: a line every half millisecond, for as long as it runs.
#: The logs it writes to start at 15 MiB, so that each attempt at reading one (through the
#: staging of its 7 MiB tail block) lasts many lines.
APPENDER = """
import sys, time
with open(sys.argv[1], "ab", buffering=0) as log:
    while True:
        log.write(b"one more line from a task that is still writing\\n")
        time.sleep(0.0005)
"""


# -- helpers -------------------------------------------------------------------------------------


def data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def blocks_of(size: int) -> int:
    return -(-size // block_size(size))


def account_key(connection_string: str) -> str:
    match = re.search(r"AccountKey=([^;]+)", connection_string)
    assert match is not None
    return match.group(1)


def secrets_of(connection_string: str) -> list[str]:
    """What must never be shown of a connection string: itself, its key, its SAS signature."""
    found = [connection_string]
    key = re.search(r"AccountKey=([^;]+)", connection_string)
    if key:
        found.append(key.group(1))
    sas = re.search(r"SharedAccessSignature=([^;]+)", connection_string)
    if sas:
        signature = urllib.parse.parse_qs(sas.group(1))["sig"][0]
        found += [sas.group(1), signature, urllib.parse.quote(signature, safe="")]
    return found


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def wait_until_settled(paths: list[Path]) -> None:
    """Wait until every file's last change (mtime or ctime, which os.utime cannot set back) is
    older than the stat-cache's racy window, so what taskkit records now is trusted later."""
    newest = max(max(p.stat().st_mtime_ns, p.stat().st_ctime_ns) for p in paths)
    settled = newest + RACY_WINDOW_NS
    while (now := time.time_ns()) < settled:
        time.sleep((settled - now) / 1e9)  # a known instant, not a guess


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.001)  # bounded poll: a file gives no change notification


@contextlib.contextmanager
def appending(path: Path) -> Iterator[None]:
    """A process appending to ``path`` from the moment the block starts until it ends."""
    size = path.stat().st_size
    writer = subprocess.Popen([sys.executable, "-c", APPENDER, str(path)])
    try:
        wait_for(lambda: path.stat().st_size > size, f"the first append to {path.name}")
        yield
    finally:
        writer.kill()
        writer.wait(10)


# Azurite's --debug log: every request has a line with its URL, then one naming its operation.
_LOGGED_URL = re.compile(
    r"^\S+ (?P<request>\S+) \w+: BlobStorageContextMiddleware: "
    r"RequestMethod=\S+ RequestURL=(?P<url>\S+)"
)
_LOGGED_OP = re.compile(r"^\S+ (?P<request>\S+) \w+: DispatchMiddleware: Operation=(?P<op>\w+)")


class Request(NamedTuple):
    """One request Azurite served: its operation, and the blob it was for ('' for none)."""

    op: str
    name: str


def requests_since(azurite: Azurite, since: int, container: str) -> list[Request]:
    """The requests for ``container`` after byte offset ``since`` of the debug log, in order."""
    end = azurite.log_offset()  # every request answered so far is in the log now
    with azurite.debug_log.open("rb") as log:
        log.seek(since)
        text = log.read(end - since).decode("utf-8", errors="replace")
    urls: dict[str, str] = {}
    found = []
    for line in text.splitlines():
        if logged := _LOGGED_URL.match(line):
            urls[logged["request"]] = logged["url"]
        elif logged := _LOGGED_OP.match(line):
            path = urllib.parse.urlsplit(urls.get(logged["request"], "")).path
            parts = path.split("/", 3)  # '', account, container, blob name
            if len(parts) >= 3 and parts[2] == container:
                name = urllib.parse.unquote(parts[3]) if len(parts) == 4 else ""
                found.append(Request(logged["op"], name))
    return found


def ops(requests: list[Request], name: str | None = None) -> list[str]:
    return [r.op for r in requests if name is None or r.name == name]


def writes(requests: list[Request]) -> list[Request]:
    return [r for r in requests if r.op in WRITES]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def summary(self) -> dict[str, Any]:
        lines = self.stdout.strip().splitlines()
        assert lines, f"no output; stderr: {self.stderr}"
        summary: dict[str, Any] = json.loads(lines[-1])
        assert set(summary) == SUMMARY_KEYS, summary
        return summary

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("taskkit: error: ")]

    def assert_clean_stderr(self) -> None:
        assert "Traceback" not in self.stderr, self.stderr
        for line in self.stderr.splitlines():
            assert line.startswith("taskkit: "), self.stderr

    def assert_one_error_line(self) -> None:
        self.assert_clean_stderr()
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("taskkit: error: "), lines


@dataclass
class Running:
    proc: subprocess.Popen[str]
    started: float
    secrets: list[str] = field(repr=False)


@dataclass
class Uploads:
    """Runs taskkit as a real process against the session's Azurite, in a folder of its own."""

    azurite: Azurite
    container: str
    tmp: Path

    @property
    def statcache(self) -> Path:
        return self.tmp / "statcache"

    def workdir(self, name: str = "wd", files: dict[str, bytes] | None = None) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        write_tree(path, files or {})
        return path

    def url(self, name: str) -> str:
        return f"az://{self.container}/{name}"

    def env(self, connection_string: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AZ_BATCH_", "AZURE_", "TASKKIT_"))
        }
        env["AZURE_STORAGE_CONNECTION_STRING"] = connection_string or self.azurite.connection_string
        env["TASKKIT_CACHE_DIR"] = str(self.statcache)
        env.update(extra or {})
        return env

    def start(
        self,
        *args: str,
        workdir: Path,
        verb: str = "upload",
        connection_string: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Running:
        proc = subprocess.Popen(
            [*TASKKIT, verb, "--workdir", str(workdir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=self.env(connection_string, extra_env),
            cwd=self.tmp,
        )
        secrets = secrets_of(self.azurite.connection_string)
        if connection_string is not None:
            secrets += secrets_of(connection_string)
        return Running(proc, time.monotonic(), secrets)

    def finish(self, running: Running, timeout: float = 60) -> Result:
        proc = running.proc
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        result = Result(proc.returncode, out, err, time.monotonic() - running.started)
        # No run, whatever it does, shows a credential (and the assertion does not show it).
        for secret in running.secrets:
            leaked = secret in result.stdout or secret in result.stderr
            assert not leaked, "a credential appears in taskkit's output"
        return result

    def run(self, *args: str, workdir: Path, **kw: Any) -> Result:
        return self.finish(self.start(*args, workdir=workdir, **kw))

    def finish_all(self, started: list[Running], timeout: float = 60) -> list[Result]:
        try:
            return [self.finish(s, timeout) for s in started]
        finally:
            for running in started:
                if running.proc.poll() is None:
                    running.proc.kill()
                    running.proc.communicate()

    def counted(self, *args: str, workdir: Path, **kw: Any) -> tuple[Result, list[Request]]:
        """A run and the requests it made of this test's container."""
        since = self.azurite.log_offset()
        result = self.run(*args, workdir=workdir, **kw)
        return result, requests_since(self.azurite, since, self.container)

    # -- what the container holds ------------------------------------------------------------

    def names(self, prefix: str = "") -> set[str]:
        with self.azurite.blob_service_client() as service:
            container = service.get_container_client(self.container)
            return {b.name for b in container.list_blobs(name_starts_with=prefix or None)}

    def read(self, name: str) -> bytes:
        with self.azurite.blob_service_client() as service:
            blob = service.get_blob_client(self.container, name)
            content: bytes = blob.download_blob(max_concurrency=4).readall()
            return content

    def metadata(self, name: str) -> dict[str, str]:
        with self.azurite.blob_service_client() as service:
            props = service.get_blob_client(self.container, name).get_blob_properties()
            return dict(props.metadata)

    def manifest(self, prefix: str) -> dict[str, Any]:
        """The manifest published under ``prefix``, checked to carry its own digest."""
        raw = self.read(prefix + MANIFEST)
        assert account_key(self.azurite.connection_string).encode() not in raw
        meta = self.metadata(prefix + MANIFEST)
        assert meta == {"taskkit_digest": str(hash_bytes(raw)), "taskkit_size": str(len(raw))}
        manifest: dict[str, Any] = json.loads(raw)
        assert manifest["format"] == "taskkit-manifest-1", manifest
        return manifest

    def assert_consistent(self, name: str) -> None:
        """The blob at ``name`` is absent, or its taskkit metadata describes its bytes."""
        with contextlib.suppress(ResourceNotFoundError):
            content = self.read(name)
            meta = self.metadata(name)
            assert meta["taskkit_digest"] == str(hash_bytes(content)), name
            assert meta["taskkit_size"] == str(len(content)), name

    def read_only_sas(self) -> str:
        """A connection string whose SAS may read and list this container, nothing more.

        adlfs takes AZURE_STORAGE_ACCOUNT_NAME + AZURE_STORAGE_SAS_TOKEN too, but then always
        talks to https://ACCOUNT.blob.core.windows.net; a connection string with a
        SharedAccessSignature is how a SAS reaches Azurite (adlfs hands it to the SDK).
        """
        sas = generate_container_sas(
            self.azurite.account_name,
            self.container,
            account_key=account_key(self.azurite.connection_string),
            permission=ContainerSasPermissions(read=True, list=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
        )
        return f"BlobEndpoint={self.azurite.blob_endpoint};SharedAccessSignature={sas}"


@contextlib.contextmanager
def hashing(paths: list[Path]) -> Iterator[dict[Path, tuple[str, int]]]:
    """``taskkit hash`` of each file, read afresh, run alongside the block: digest and size by
    path, filled in when the block ends."""
    proc = subprocess.Popen(
        [*TASKKIT, "hash", "--json", "--no-cache", *map(str, paths)],
        stdout=subprocess.PIPE,
        text=True,
    )
    found: dict[Path, tuple[str, int]] = {}
    try:
        yield found
    finally:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    for line in map(json.loads, out.splitlines()):
        found[Path(line["path"])] = (line["digest"], line["size"])


@pytest.fixture
def up(azurite: Azurite, azurite_container: str, tmp_path: Path) -> Uploads:
    return Uploads(azurite, azurite_container, tmp_path)


def _outputs() -> dict[str, bytes]:
    return {
        "out/a/b.txt": b"b\n",
        "out/top.txt": data(5000, 1),
        "out/empty.dat": b"",
        "out/big.bin": data(20 * MiB + 3, 2),
        "notes.txt": b"not an output\n",
    }


# -- 1: blobs, metadata, manifest ----------------------------------------------------------------


def test_upload_writes_each_file_with_its_digest_and_the_manifest_last(up: Uploads) -> None:
    """out/** lands under DEST with digest metadata; the manifest, written last, lists it all."""
    files = _outputs()
    wd = up.workdir(files=files)
    outputs = {name: content for name, content in files.items() if name.startswith("out/")}
    task = {"AZ_BATCH_JOB_ID": "job-7", "AZ_BATCH_TASK_ID": "task-3", "TASKKIT_ATTEMPT": "2"}
    with hashing([wd / name for name in outputs]) as digests:
        result, requests = up.counted(
            "-o", "out/**=" + up.url("run/"), "--json", workdir=wd, extra_env=task
        )
    assert result.returncode == 0, result.stderr
    result.assert_clean_stderr()
    blob_names = {"run/" + name.removeprefix("out/") for name in outputs}
    assert up.names() == blob_names | {"run/" + MANIFEST}
    for name, content in outputs.items():
        blob = "run/" + name.removeprefix("out/")
        assert up.read(blob) == content, blob
        digest, size = digests[wd / name]
        assert up.metadata(blob) == {"taskkit_digest": digest, "taskkit_size": str(size)}, blob

    # The large file was committed from blocks, the others were one request each.
    assert ops(requests, "run/big.bin") == [
        "BlockBlob_GetBlockList",
        *["BlockBlob_StageBlock"] * blocks_of(len(files["out/big.bin"])),
        "BlockBlob_CommitBlockList",
    ]
    for blob in blob_names - {"run/big.bin"}:
        assert ops(requests, blob) == ["BlockBlob_Upload"], blob
    assert ops(requests).count("Container_ListBlobFlatSegment") == 1
    # Published last: no write of any kind comes after the manifest's one.
    assert writes(requests)[-1] == Request("BlockBlob_Upload", "run/" + MANIFEST)
    assert ops(requests, "run/" + MANIFEST) == ["BlockBlob_Upload"]

    manifest = up.manifest("run/")
    assert manifest["files"] == [
        {"name": name.removeprefix("out/"), "digest": digests[wd / name][0], "size": len(content)}
        for name, content in sorted(outputs.items())
    ]
    assert manifest["task"] == {"job_id": "job-7", "task_id": "task-3", "attempt": 2}
    summary = result.summary
    assert summary["files"] == summary["transferred"] == len(outputs)
    assert summary["bytes_transferred"] == sum(map(len, outputs.values()))
    idle = ("skipped", "linked", "failed", "resumed", "bytes_reused")
    assert {k: summary[k] for k in idle} == dict.fromkeys(idle, 0)
    assert summary["dry_run"] is False


# -- 2-4: unchanged, changed, appended -----------------------------------------------------------


def _assert_sent_nothing(result: Result, requests: list[Request], files: int) -> None:
    assert result.returncode == 0, result.stderr
    result.assert_clean_stderr()
    assert writes(requests) == [], requests
    assert "BlockBlob_GetBlockList" not in ops(requests)
    assert ops(requests).count("Container_ListBlobFlatSegment") == 1, requests
    # At most the manifest is read, to see that it already says the same.
    assert ops(requests).count("Blob_Download") <= 1, requests
    summary = result.summary
    assert summary["transferred"] == summary["bytes_transferred"] == 0
    assert summary["skipped"] == summary["files"] == files


def test_an_unchanged_upload_sends_nothing_and_settled_files_are_not_read(up: Uploads) -> None:
    """A repeated upload sends no data; once files are settled it does not even read them."""
    files = {"out/a.txt": b"a\n", "out/sub/b.bin": data(70_000, 3), "out/big.bin": data(9 * MiB, 4)}
    wd = up.workdir(files=files)
    paths = [wd / name for name in files]
    hour_ago = time.time_ns() - 3600 * 10**9
    for path in paths:
        os.utime(path, ns=(hour_ago, hour_ago))
    args = ("-o", "out/**=" + up.url("run/"), "--json")
    assert up.run(*args, workdir=wd).returncode == 0
    _assert_sent_nothing(*up.counted(*args, workdir=wd), files=len(files))

    # Setting the mtime back leaves the ctime new, so uploads until now could not be trusted
    # to the stat-cache. From here on they can: the files need not be read to be skipped.
    wait_until_settled(paths)
    settled = ("-o", "out/**=" + up.url("settled/"))
    assert up.run(*settled, workdir=wd).returncode == 0
    since = up.azurite.log_offset()
    again, plan = up.finish_all(
        [
            up.start(*settled, "--json", workdir=wd),
            up.start(*settled, "--dry-run", workdir=wd),
        ]
    )
    requests = requests_since(up.azurite, since, up.container)
    assert again.returncode == 0, again.stderr
    assert plan.returncode == 0, plan.stderr
    assert writes(requests) == [], requests
    assert again.summary["transferred"] == 0
    assert again.summary["skipped"] == len(files)
    lines = plan.stdout.splitlines()
    skips = [line for line in lines if line.startswith("skip ")]
    assert len(skips) == len(files), lines
    for line in skips:
        # From the stat-cache's provenance: "(hashed)" would mean the file was read.
        assert line.endswith("; unchanged since it was uploaded there)"), line


def test_a_changed_file_is_the_only_one_sent(up: Uploads) -> None:
    """One file changed (same size, mtime put back): unpublish, send it alone, publish anew."""
    files = {"out/a.txt": b"alpha\n", "out/b.txt": b"bravo\n", "out/big.bin": data(9 * MiB, 5)}
    wd = up.workdir(files=files)
    args = ("-o", "out/**=" + up.url("run/"), "--json")
    assert up.run(*args, workdir=wd).returncode == 0
    old = up.manifest("run/")
    target = wd / "out/b.txt"
    before = target.stat()
    target.write_bytes(b"BRAVO\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))

    result, requests = up.counted(*args, workdir=wd)
    assert result.returncode == 0, result.stderr
    result.assert_clean_stderr()
    assert writes(requests) == [
        Request("Blob_Delete", "run/" + MANIFEST),
        Request("BlockBlob_Upload", "run/b.txt"),
        Request("BlockBlob_Upload", "run/" + MANIFEST),
    ]
    assert "BlockBlob_GetBlockList" not in ops(requests)
    assert up.read("run/b.txt") == b"BRAVO\n"
    summary = result.summary
    assert summary["transferred"] == 1
    assert summary["skipped"] == 2
    assert summary["bytes_transferred"] == len(b"BRAVO\n")
    new = {f["name"]: f for f in up.manifest("run/")["files"]}
    assert new["b.txt"]["digest"] == str(hash_bytes(b"BRAVO\n"))
    assert new["b.txt"]["digest"] == up.metadata("run/b.txt")["taskkit_digest"]
    assert [f for f in old["files"] if f["name"] != "b.txt"] == [
        f for name, f in sorted(new.items()) if name != "b.txt"
    ]


def test_a_large_file_appended_to_sends_only_its_new_and_changed_blocks(up: Uploads) -> None:
    """24 MiB, then one byte changed in block 1 and 1 MiB appended: two blocks are sent."""
    content = bytearray(data(24 * MiB, 6))
    wd = up.workdir(files={"out/big.bin": bytes(content)})
    args = ("-o", "out/**=" + up.url("run/"), "--json")
    assert up.run(*args, workdir=wd).returncode == 0
    content[CHUNK + 12345] ^= 0xFF
    content += data(MiB, 7)
    (wd / "out/big.bin").write_bytes(content)

    result, requests = up.counted(*args, workdir=wd)
    assert result.returncode == 0, result.stderr
    result.assert_clean_stderr()
    assert ops(requests, "run/big.bin") == [
        "BlockBlob_GetBlockList",
        "BlockBlob_StageBlock",
        "BlockBlob_StageBlock",
        "BlockBlob_CommitBlockList",
    ]
    assert up.read("run/big.bin") == content
    with up.azurite.blob_service_client() as service:
        committed, _ = service.get_blob_client(up.container, "run/big.bin").get_block_list()
    ids = [str(b.id) for b in committed]
    assert [i.split("-")[0] for i in ids] == ["00000", "00001", "00002", "00003"], ids
    assert all(re.fullmatch(r"\d{5}-[0-9a-f]{32}", i) for i in ids), ids
    summary = result.summary
    assert summary["resumed"] == 1
    assert summary["bytes_reused"] == 2 * CHUNK
    assert summary["bytes_transferred"] == CHUNK + MiB
    assert up.manifest("run/")["files"] == [
        {
            "name": "big.bin",
            "digest": up.metadata("run/big.bin")["taskkit_digest"],
            "size": 25 * MiB,
        }
    ]


# -- 5: kill -9 ----------------------------------------------------------------------------------


def test_kill_9_mid_upload_publishes_nothing_and_the_rerun_reuses_staged_blocks(
    up: Uploads,
) -> None:
    """kill -9 while blocks are staged: no manifest, no blob; the re-run sends only the rest."""
    size = 64 * MiB + 5
    content = os.urandom(size)
    small = {f"out/s{i}.txt": f"small {i}\n".encode() for i in range(3)}
    wd = up.workdir(files={"out/huge.bin": content, **small})
    args = ("-o", "out/**=" + up.url("run/"))
    since = up.azurite.log_offset()
    running = up.start(*args, "-j", "2", workdir=wd)
    proc = running.proc
    try:
        deadline = time.monotonic() + 60
        staged = 0
        while proc.poll() is None and time.monotonic() < deadline:
            staged = up.azurite.operations(since).count("BlockBlob_StageBlock")
            if staged >= 3:
                break
        assert proc.poll() is None, "the upload ended before it could be interrupted"
        assert staged >= 3, "no 3 blocks staged within 60 s"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        killed = up.finish(running, timeout=10)  # kills it too, should an assertion fail
    assert killed.returncode == -signal.SIGKILL

    names = up.names()
    assert "run/" + MANIFEST not in names
    assert "run/huge.bin" not in names  # staged blocks are not a blob
    with up.azurite.blob_service_client() as service:
        blob = service.get_blob_client(up.container, "run/huge.bin")
        with pytest.raises(ResourceNotFoundError):
            blob.get_blob_properties()
        committed, uncommitted = blob.get_block_list("all")
    # With 2 blocks in flight at most, a third one started only after one was stored.
    assert committed == []
    assert len(uncommitted) >= 1

    result, requests = up.counted(*args, "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    result.assert_clean_stderr()
    assert up.read("run/huge.bin") == content
    assert {f["name"] for f in up.manifest("run/")["files"]} == {
        "huge.bin",
        *(n.removeprefix("out/") for n in small),
    }
    summary = result.summary
    assert summary["resumed"] >= 1
    assert summary["bytes_reused"] >= CHUNK
    reused_blocks = -(-summary["bytes_reused"] // CHUNK)
    blocks = blocks_of(size)
    assert ops(requests, "run/huge.bin").count("BlockBlob_StageBlock") == blocks - reused_blocks
    assert summary["transferred"] + summary["skipped"] == 1 + len(small)


# -- 6: re-publishing ----------------------------------------------------------------------------


def test_republishing_unpublishes_first_and_a_failed_run_leaves_no_manifest(
    up: Uploads,
) -> None:
    """The manifest is deleted before any file changes; a run that fails publishes nothing."""
    files = {"out/a.txt": b"first\n", "out/keep.txt": b"keep\n", "out/task.log": data(15 * MiB, 8)}
    wd = up.workdir(files=files)
    args = ("-o", "out/**=" + up.url("run/"))
    assert up.run(*args, workdir=wd).returncode == 0
    assert "run/" + MANIFEST in up.names()

    (wd / "out/a.txt").write_bytes(b"second\n")
    with appending(wd / "out/task.log"):
        result, requests = up.counted(*args, workdir=wd)
    assert result.returncode == 75, result.stderr
    result.assert_one_error_line()
    assert "task.log" in result.stderr
    assert "kept changing" in result.stderr
    changes = writes(requests)
    assert changes[0] == Request("Blob_Delete", "run/" + MANIFEST), changes
    assert [r for r in changes if r.name == "run/" + MANIFEST] == changes[:1]
    assert "run/" + MANIFEST not in up.names()
    assert up.read("run/a.txt") == b"second\n"  # sent; only the set is not published
    up.assert_consistent("run/task.log")

    # Once the log is closed, the next attempt publishes the set again.
    again = up.run(*args, workdir=wd)
    assert again.returncode == 0, again.stderr
    listed = {f["name"]: f for f in up.manifest("run/")["files"]}
    assert listed["task.log"]["size"] == (wd / "out/task.log").stat().st_size
    assert listed["task.log"]["digest"] == up.metadata("run/task.log")["taskkit_digest"]
    assert up.read("run/task.log") == (wd / "out/task.log").read_bytes()


# -- 7: bad inputs -------------------------------------------------------------------------------


def test_a_glob_matching_nothing_is_exit_66_unless_allowed(up: Uploads) -> None:
    """No match: exit 66 with one line and nothing written; --allow-empty publishes no files."""
    wd = up.workdir(files={"out/x.txt": b"x"})
    since = up.azurite.log_offset()
    refused, allowed = up.finish_all(
        [
            up.start("-o", "nothing/**=" + up.url("run/"), workdir=wd),
            up.start("-o", "nothing/**=" + up.url("empty/"), "--allow-empty", "--json", workdir=wd),
        ]
    )
    requests = requests_since(up.azurite, since, up.container)
    assert refused.returncode == 66, refused.stderr
    refused.assert_one_error_line()
    assert "'nothing/**'" in refused.stderr
    assert "--allow-empty" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stderr == ""
    assert allowed.summary["files"] == allowed.summary["failed"] == 0
    assert writes(requests) == [Request("BlockBlob_Upload", "empty/" + MANIFEST)]
    assert up.names() == {"empty/" + MANIFEST}
    assert up.manifest("empty/")["files"] == []


def test_malformed_outputs_are_exit_64_before_any_request(up: Uploads) -> None:
    """GLOB without '=DEST', or a DEST naming an invalid container: exit 64, no request."""
    wd = up.workdir(files={"out/x.txt": b"x"})
    cases = {"out/**": "no destination", "out/**=az://Bad_Name/x/": "'Bad_Name'"}
    since = up.azurite.log_offset()
    results = up.finish_all([up.start("-o", output, workdir=wd) for output in cases])
    assert up.azurite.operations(since) == []
    for (output, mention), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 64, (output, result.stderr)
        result.assert_one_error_line()
        assert mention in result.stderr, result.stderr


def test_a_missing_container_is_exit_78_and_is_not_created(up: Uploads) -> None:
    """A DEST whose container does not exist: exit 78 naming it; taskkit creates none."""
    wd = up.workdir(files={"out/x.txt": b"x"})
    missing = f"tk-missing-{os.urandom(6).hex()}"
    result = up.run("-o", f"out/**=az://{missing}/run/", workdir=wd)
    assert result.returncode == 78, result.stderr
    result.assert_one_error_line()
    assert missing in result.stderr
    with up.azurite.blob_service_client() as service:
        assert not service.get_container_client(missing).exists()


def test_a_read_only_sas_is_exit_78_and_writes_nothing(up: Uploads) -> None:
    """A read+list SAS (Azurite enforces it), one request or blocks: exit 78, no blob at all."""
    small = up.workdir("small", {"out/s.txt": b"small\n"})
    large = up.workdir("large", {"out/l.bin": data(9 * MiB, 9)})
    sas = up.read_only_sas()
    results = up.finish_all(
        [
            up.start("-o", "out/**=" + up.url("small/"), workdir=small, connection_string=sas),
            up.start("-o", "out/**=" + up.url("large/"), workdir=large, connection_string=sas),
        ]
    )
    for result in results:
        assert result.returncode == 78, result.stderr
        result.assert_one_error_line()
        assert "access denied" in result.stderr, result.stderr
    assert up.names() == set()


def test_unreachable_storage_is_exit_75_within_seconds(up: Uploads) -> None:
    """A storage endpoint where nothing listens: exit 75 within seconds, one error line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now, and nothing listens on it.
    key = account_key(up.azurite.connection_string)
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=acct;"
        f"AccountKey={key};BlobEndpoint=http://127.0.0.1:{port}/acct;"
    )
    wd = up.workdir(files={"out/x.txt": b"x"})
    result = up.run(
        "-o",
        "out/**=az://data/run/",
        "--retries",
        "2",
        "--retry-budget",
        "1",
        workdir=wd,
        connection_string=connection,
    )
    assert result.returncode == 75, result.stderr
    assert result.seconds < 10
    result.assert_clean_stderr()  # the one retry may be announced by a warning line
    assert len(result.error_lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.error_lines[0]


# An output vanishing between the listing and its upload is not tested here: from outside the
# process that moment cannot be hit without sleeping for luck.


def test_an_output_growing_during_upload_is_exit_75_and_never_published(up: Uploads) -> None:
    """A log still being written: exit 75 saying so, no manifest, no blob that lies."""
    wd = up.workdir(files={"out/a.txt": b"a\n", "out/task.log": data(15 * MiB, 10)})
    with appending(wd / "out/task.log"):
        result = up.run("-o", "out/**=" + up.url("run/"), "--json", workdir=wd)
    assert result.returncode == 75, result.stderr
    result.assert_one_error_line()
    assert "'out/task.log'" in result.stderr
    assert "kept changing" in result.stderr
    assert "run/" + MANIFEST not in up.names()
    up.assert_consistent("run/task.log")
    assert up.read("run/a.txt") == b"a\n"
    summary = result.summary
    assert summary["failed"] == 1
    assert summary["transferred"] == 1


# -- 8: round trip through staging ---------------------------------------------------------------

HOSTILE = {
    "ünï cødé.txt": b"unicode\n",
    "#hash": b"hash\n",
    "100%.txt": b"percent\n",
    "a+b=c.txt": b"plus equals\n",
    "with space.txt": b"space\n",
    "semi;colon,comma & amp.txt": b"punctuation\n",
    "nested/deeper dir/ñ/x y.txt": b"nested\n",
    "nested/big ünï.bin": data(9 * MiB + 1, 11),
}
_STAGE_LINE = re.compile(r"^(?P<action>\w+) +az://.+? -> back/(?P<name>.+?)  \((?P<why>.*)\)$")


def test_hostile_names_round_trip_through_stage(up: Uploads) -> None:
    """Odd names come back byte for byte; identical local copies are skipped by blob digest."""
    wd = up.workdir(files={"out/" + name: content for name, content in HOSTILE.items()})
    uploaded = up.run("-o", "out/**=" + up.url("run/"), workdir=wd)
    assert uploaded.returncode == 0, uploaded.stderr
    assert up.names() == {"run/" + name for name in HOSTILE} | {"run/" + MANIFEST}

    first = up.workdir("first")
    staged = up.run("-i", up.url("run/") + "=back/", workdir=first, verb="stage")
    assert staged.returncode == 0, staged.stderr
    staged.assert_clean_stderr()
    back = first / "back"
    # The manifest is a blob under the prefix like any other, so it is staged too.
    expected = {**HOSTILE, MANIFEST: up.read("run/" + MANIFEST)}
    assert {str(p.relative_to(back)) for p in back.rglob("*") if p.is_file()} == set(expected)
    for name, content in expected.items():
        assert (back / name).read_bytes() == content, name

    second = up.workdir("second")
    shutil.copytree(back, second / "back")
    # The dry run is the plan a real run carries out.
    plan = up.run("-i", up.url("run/") + "=back/", "--dry-run", workdir=second, verb="stage")
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()[:-1]
    planned = {}
    for line in lines:
        match = _STAGE_LINE.match(line)
        assert match, line
        planned[match["name"]] = (match["action"], match["why"].split("; ", 1)[1])
    assert planned == dict.fromkeys(expected, ("skip", "same digest as the source (hashed)"))


# -- manifests that cannot change, stored bytes, versions --------------------------------------


def test_a_manifest_that_cannot_be_removed_is_reported(up: Uploads) -> None:
    """A published DEST that may not be changed: exit 78 with one line; nothing changes."""
    wd = up.workdir(files={"out/a.txt": b"first\n"})
    args = ("-o", "out/**=" + up.url("run/"))
    assert up.run(*args, workdir=wd).returncode == 0
    (wd / "out/a.txt").write_bytes(b"second\n")
    result = up.run(*args, workdir=wd, connection_string=up.read_only_sas())
    assert result.returncode == 78, result.stderr
    assert up.read("run/a.txt") == b"first\n"
    assert "run/" + MANIFEST in up.names()
    result.assert_one_error_line()
    assert "access denied" in result.stderr


def test_a_manifest_that_cannot_be_written_is_reported(up: Uploads) -> None:
    """Files all there but the manifest may not be written: exit 78 with one line."""
    wd = up.workdir(files={"out/a.txt": b"a\n"})
    args = ("-o", "out/**=" + up.url("run/"))
    assert up.run(*args, workdir=wd).returncode == 0
    with up.azurite.blob_service_client() as service:
        service.get_blob_client(up.container, "run/" + MANIFEST).delete_blob()
    result = up.run(*args, workdir=wd, connection_string=up.read_only_sas())
    assert result.returncode == 78, result.stderr
    assert "run/" + MANIFEST not in up.names()
    result.assert_one_error_line()
    assert MANIFEST in result.stderr


def test_a_gzip_output_comes_back_byte_for_byte(up: Uploads) -> None:
    """results.tar.gz is stored as it is: staged back (and read by the SDK) unchanged."""
    content = gzip.compress(b"a tar archive, say\n" * 1000)
    wd = up.workdir(files={"out/results.tar.gz": content})
    uploaded = up.run("-o", "out/**=" + up.url("run/"), workdir=wd)
    assert uploaded.returncode == 0, uploaded.stderr
    back = up.workdir("back")
    staged = up.run("-i", up.url("run/") + "=back/", "--retries", "1", workdir=back, verb="stage")
    assert staged.returncode == 0, staged.stderr
    assert (back / "back/results.tar.gz").read_bytes() == content
    assert up.read("run/results.tar.gz") == content


def test_a_blob_has_one_version_however_it_is_seen(up: Uploads) -> None:
    """The version a write returns is the one the next listing and stat show."""
    # In-process, at the storage boundary: what lets a settled file be "unchanged since it
    # was uploaded there" without being read.
    with Stores(RetryBudget(attempts=1), up.azurite.storage_options()) as stores:
        store, prefix = stores.open(up.url("v/"))
        put = store.put(prefix + "small.txt", b"small\n", {})
        writer = store.writer(prefix + "blocks.bin")
        writer.write("00000-block", b"x" * 1000)
        committed = writer.commit(["00000-block"], {})
        listed = {f.key: f.version for f in store.list(prefix)}
        statted = store.stat(prefix + "small.txt").version
    assert listed == {prefix + "small.txt": put, prefix + "blocks.bin": committed}
    assert statted == put
