"""taskkit stage against a real Azurite server: what lands on disk, and what it cost in requests.

Data is seeded with the plain Azure SDK; taskkit runs as a real process. Downloads are counted
from Azurite's own log (``Blob_Download`` is one ranged GET), so "nothing was downloaded" is
what the server saw, not what taskkit says.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xxhash
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from taskkit.testing import Azurite
from taskkit.transfer import download as transfer

pytestmark = pytest.mark.azurite

TASKKIT_STAGE = [sys.executable, "-m", "taskkit", "stage"]
MiB = 1024 * 1024
CHUNK = 8 * MiB
SUMMARY_KEYS = {
    "files",
    "transferred",
    "resumed",
    "skipped",
    "linked",
    "removed",
    "failed",
    "bytes_transferred",
    "bytes_reused",
    "seconds",
    "dry_run",
}


# -- helpers -------------------------------------------------------------------------------------


def data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def chunks_of(size: int) -> int:
    return max(1, -(-size // CHUNK))


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def gets_for(size: int) -> int:
    """Ranged GETs (``Blob_Download``) in one whole download of ``size`` bytes: one for a file
    of at most one chunk, else one per request-sized piece of each 8 MiB chunk."""
    if size <= CHUNK:
        return 1 if size else 0
    per = getattr(transfer, "RANGE_SIZE", CHUNK)
    return sum(_ceil(min(CHUNK, size - offset), per) for offset in range(0, size, CHUNK))


def taskkit_digest(content: bytes) -> str:
    """The taskkit digest, computed here from its published definition (not by taskkit)."""
    if len(content) <= CHUNK:
        return "xxh3-128:" + xxhash.xxh3_128_hexdigest(content)
    tree = b"taskkit-tree-v1" + struct.pack("<QQ", CHUNK, len(content))
    for offset in range(0, len(content), CHUNK):
        tree += xxhash.xxh3_128_digest(content[offset : offset + CHUNK])
    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(tree)


def account_key(connection_string: str) -> str:
    match = re.search(r"AccountKey=([^;]+)", connection_string)
    assert match is not None
    return match.group(1)


def tree(root: Path, *, exclude: tuple[Path, ...] = ()) -> dict[str, tuple[str, int, int, int]]:
    """Every entry below ``root``: kind, size, mtime, mode (what "nothing changed" compares)."""
    found: dict[str, tuple[str, int, int, int]] = {}
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in exclude]
        for name in [*dirnames, *filenames]:
            path = here / name
            if path in exclude:
                continue
            st = path.lstat()
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
            size = 0 if kind == "dir" else st.st_size
            found[str(path.relative_to(root))] = (kind, size, st.st_mtime_ns, st.st_mode)
    return found


def leftovers(root: Path) -> list[Path]:
    """Partial downloads and their journals anywhere below ``root``."""
    return sorted(p for p in root.rglob("*") if ".taskkit-" in p.name or p.suffix == ".chunks")


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

    def assert_no_secret(self, *secrets: str) -> None:
        for secret in secrets:
            leaked = secret in self.stdout or secret in self.stderr
            assert not leaked, "a credential appears in the output"  # not shown here either


@dataclass
class Stage:
    """Runs ``taskkit stage`` as a real process against the session's Azurite."""

    azurite: Azurite
    container: str
    tmp: Path

    @property
    def statcache(self) -> Path:
        return self.tmp / "statcache"

    def workdir(self, name: str = "wd") -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def url(self, name: str) -> str:
        return f"az://{self.container}/{name}"

    def seed(self, blobs: dict[str, bytes], metadata: dict[str, str] | None = None) -> None:
        with self.azurite.blob_service_client() as service:
            container = service.get_container_client(self.container)
            for name, content in blobs.items():
                container.upload_blob(
                    name, content, overwrite=True, metadata=metadata, max_concurrency=4
                )

    def env(self, connection_string: str | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AZ_BATCH_", "AZURE_", "TASKKIT_"))
        }
        env["AZURE_STORAGE_CONNECTION_STRING"] = connection_string or self.azurite.connection_string
        env["TASKKIT_CACHE_DIR"] = str(self.statcache)
        return env

    def command(self, *args: str, workdir: Path) -> list[str]:
        return [*TASKKIT_STAGE, "--workdir", str(workdir), *args]

    def start(
        self, *args: str, workdir: Path, connection_string: str | None = None
    ) -> tuple[subprocess.Popen[str], float]:
        proc = subprocess.Popen(
            self.command(*args, workdir=workdir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=self.env(connection_string),
            cwd=self.tmp,
        )
        return proc, time.monotonic()

    def finish(self, started: tuple[subprocess.Popen[str], float], timeout: float = 60) -> Result:
        proc, at = started
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        result = Result(proc.returncode, out, err, time.monotonic() - at)
        # No run, whatever it does, shows the account key.
        result.assert_no_secret(account_key(self.azurite.connection_string))
        return result

    def run(self, *args: str, workdir: Path, connection_string: str | None = None) -> Result:
        return self.finish(self.start(*args, workdir=workdir, connection_string=connection_string))

    def finish_all(
        self, started: list[tuple[subprocess.Popen[str], float]], timeout: float = 60
    ) -> list[Result]:
        try:
            return [self.finish(s, timeout) for s in started]
        finally:
            for proc, _ in started:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()

    def run_many(self, runs: list[tuple[tuple[str, ...], Path]]) -> list[Result]:
        """Independent runs at the same time (each process spends a second importing)."""
        return self.finish_all([self.start(*args, workdir=workdir) for args, workdir in runs])

    def counted(self, *args: str, workdir: Path, **kw: Any) -> tuple[Result, list[str]]:
        """A run and the Azurite operations it caused."""
        since = self.azurite.log_offset()
        result = self.run(*args, workdir=workdir, **kw)
        return result, self.azurite.operations(since)


@pytest.fixture
def st(azurite: Azurite, azurite_container: str, tmp_path: Path) -> Stage:
    return Stage(azurite, azurite_container, tmp_path)


def _prefix_blobs() -> dict[str, bytes]:
    return {
        "in/top.txt": b"top level\n",
        "in/a/one.bin": data(1000, 1),
        "in/a/b/two.bin": data(70_000, 2),
        "in/a/b/c/empty": b"",
        "in/big.bin": data(20 * MiB + 123, 3),
    }


def _assert_staged(root: Path, blobs: dict[str, bytes], prefix: str = "in/") -> None:
    for name, content in blobs.items():
        local = root / name[len(prefix) :]
        assert local.read_bytes() == content, name


# -- 1-4: cold, warm, changed, tampered ----------------------------------------------------------


def test_cold_stage_of_a_prefix_is_byte_identical_with_one_listing(st: Stage) -> None:
    """A cold prefix stage writes every file byte for byte, counts them, and lists once."""
    blobs = _prefix_blobs()
    st.seed(blobs)
    wd = st.workdir()
    result, ops = st.counted("-i", st.url("in/") + "=out/", "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    result.assert_clean_stderr()
    _assert_staged(wd / "out", blobs)
    assert sorted(str(p.relative_to(wd)) for p in wd.rglob("*") if p.is_file()) == sorted(
        "out/" + name[3:] for name in blobs
    )
    summary = result.summary
    total = sum(len(c) for c in blobs.values())
    assert summary["files"] == len(blobs)
    assert summary["transferred"] == len(blobs)
    assert summary["bytes_transferred"] == total
    idle = ("skipped", "linked", "failed", "resumed", "bytes_reused")
    assert {k: summary[k] for k in idle} == dict.fromkeys(idle, 0)
    assert summary["dry_run"] is False
    assert ops.count("Container_ListBlobFlatSegment") == 1, ops
    # One GET per small file (none for the empty one); the large one in ranges, once.
    assert ops.count("Blob_Download") == sum(gets_for(len(c)) for c in blobs.values()), ops
    assert leftovers(wd) == []


def test_warm_restage_downloads_nothing(st: Stage) -> None:
    """Right after a stage, the same stage skips every file with zero downloads."""
    blobs = _prefix_blobs()
    st.seed(blobs)
    wd = st.workdir()
    first = st.run("-i", st.url("in/") + "=out/", "--json", workdir=wd)
    assert first.returncode == 0, first.stderr
    before = tree(wd)
    result, ops = st.counted("-i", st.url("in/") + "=out/", "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    assert "Blob_Download" not in ops, ops
    summary = result.summary
    assert summary["skipped"] == summary["files"] == len(blobs)
    assert summary["transferred"] == summary["bytes_transferred"] == 0
    assert tree(wd) == before  # not even rewritten
    _assert_staged(wd / "out", blobs)


def test_a_file_staged_through_the_node_cache_is_known_without_it(st: Stage) -> None:
    """Files linked from the node cache are recorded too: restaging without it downloads nothing."""
    blobs = _prefix_blobs()
    st.seed(blobs)
    wd = st.workdir()
    node = st.tmp / "node"
    first = st.run("-i", st.url("in/") + "=out/", "--cache-dir", str(node), workdir=wd)
    assert first.returncode == 0, first.stderr
    result, ops = st.counted("-i", st.url("in/") + "=out/", "--no-node-cache", "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    assert "Blob_Download" not in ops, ops
    assert result.summary["skipped"] == len(blobs)
    _assert_staged(wd / "out", blobs)


def test_a_changed_blob_is_the_only_one_fetched_again(st: Stage) -> None:
    """A blob re-uploaded with new bytes (same size) is re-fetched; the others are not."""
    blobs = _prefix_blobs()
    st.seed(blobs)
    wd = st.workdir()
    assert st.run("-i", st.url("in/") + "=out/", workdir=wd).returncode == 0
    changed = data(70_000, 99)
    st.seed({"in/a/b/two.bin": changed})
    result, ops = st.counted("-i", st.url("in/") + "=out/", "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    assert ops.count("Blob_Download") == 1, ops
    assert (wd / "out/a/b/two.bin").read_bytes() == changed
    summary = result.summary
    assert summary["transferred"] == 1
    assert summary["skipped"] == len(blobs) - 1
    assert summary["bytes_transferred"] == len(changed)
    _assert_staged(wd / "out", {**blobs, "in/a/b/two.bin": changed})


def test_a_tampered_local_file_with_its_old_mtime_is_restored(st: Stage) -> None:
    """Same size, other bytes, mtime put back: still seen, fetched again and made right."""
    blobs = _prefix_blobs()
    st.seed(blobs)
    wd = st.workdir()
    assert st.run("-i", st.url("in/") + "=out/", workdir=wd).returncode == 0
    target = wd / "out/a/one.bin"
    old = target.stat()
    target.write_bytes(bytes(b ^ 0xFF for b in blobs["in/a/one.bin"]))
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert target.stat().st_size == old.st_size
    assert target.stat().st_mtime_ns == old.st_mtime_ns
    result, ops = st.counted("-i", st.url("in/") + "=out/", "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == blobs["in/a/one.bin"]
    assert ops.count("Blob_Download") == 1, ops
    assert result.summary["transferred"] == 1
    _assert_staged(wd / "out", blobs)


# -- 5: kill -9 and resume -----------------------------------------------------------------------


def _journal_chunks(journal: Path) -> int:
    """Whole chunk lines in a download journal (the first line is its header)."""
    try:
        text = journal.read_text()
    except FileNotFoundError:
        return 0
    return max(0, text.count("\n") - 1)


def test_kill_9_mid_download_then_resume(st: Stage) -> None:
    """kill -9 leaves nothing at the final path; the next run resumes the verified chunks."""
    size = 200 * MiB + 5
    content = data(size, 5)
    st.seed({"huge.bin": content})
    wd = st.workdir()
    dest = wd / "huge.bin"
    proc = subprocess.Popen(
        st.command("-i", st.url("huge.bin") + "=huge.bin", "-j", "2", workdir=wd),
        env=st.env(),
        cwd=st.tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        partial: Path | None = None
        while proc.poll() is None and time.monotonic() < deadline:
            found = sorted(wd.glob(".taskkit-*.partial"))
            if found and _journal_chunks(Path(f"{found[0]}.chunks")) >= 2:
                partial = found[0]
                break
            time.sleep(0.002)  # bounded poll: a file gives no change notification
        assert proc.poll() is None, "the download ended before it could be interrupted"
        assert partial is not None, "no journal with 2 chunks within 60 s"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    journal = Path(f"{partial}.chunks")
    assert not dest.exists()
    assert partial.exists()
    assert journal.exists()
    noted = _journal_chunks(journal)
    assert 2 <= noted < chunks_of(size)

    result, ops = st.counted("-i", st.url("huge.bin") + "=huge.bin", "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == content
    summary = result.summary
    assert summary["resumed"] == 1
    assert summary["bytes_reused"] >= 2 * CHUNK
    assert 0 < summary["bytes_transferred"] < size
    assert summary["bytes_transferred"] + summary["bytes_reused"] == size
    # Only the chunks not reused were fetched (the 5-byte tail is a chunk of its own).
    full, tail = divmod(summary["bytes_transferred"], CHUNK)
    per = getattr(transfer, "RANGE_SIZE", CHUNK)
    assert ops.count("Blob_Download") == full * _ceil(CHUNK, per) + _ceil(tail, per), ops
    assert not partial.exists()
    assert not journal.exists()
    assert leftovers(wd) == []


# -- 6-7: the node cache -------------------------------------------------------------------------


def _objects(node: Path) -> list[Path]:
    return sorted(p for p in (node / "objects").rglob("*") if p.is_file())


def test_eight_concurrent_stages_download_once_through_the_node_cache(st: Stage) -> None:
    """8 processes staging one blob through one node cache: one download, one shared inode."""
    size = 64 * MiB
    content = data(size, 6)
    st.seed({"shared.bin": content})
    node = st.tmp / "node"
    workdirs = [st.workdir(f"wd{i}") for i in range(8)]
    since = st.azurite.log_offset()
    started = [
        st.start(
            "-i", st.url("shared.bin") + "=in/shared.bin", "--cache-dir", str(node), workdir=wd
        )
        for wd in workdirs
    ]
    results = st.finish_all(started, timeout=120)
    ops = st.azurite.operations(since)
    for result in results:
        assert result.returncode == 0, result.stderr
        result.assert_clean_stderr()
    for wd in workdirs:
        assert (wd / "in/shared.bin").read_bytes() == content
    assert ops.count("Blob_Download") == gets_for(size), ops  # the content, once
    (obj,) = _objects(node)
    assert stat.S_IMODE(obj.stat().st_mode) == 0o444
    assert obj.stat().st_nlink >= 9
    inodes = {(wd / "in/shared.bin").stat().st_ino for wd in workdirs}
    assert inodes == {obj.stat().st_ino}
    assert leftovers(node) == []
    assert list((node / "partial").iterdir()) == []


def test_a_task_writing_into_its_linked_input_does_not_corrupt_the_next(st: Stage) -> None:
    """An object altered through a task's hard link is found, discarded and fetched again."""
    content = data(3 * MiB + 7, 7)
    st.seed({"model.bin": content})
    node = st.tmp / "node"
    first = st.workdir("task1")
    args = ("-i", st.url("model.bin") + "=model.bin", "--cache-dir", str(node), "--json")
    assert st.run(*args, workdir=first).returncode == 0
    (obj,) = _objects(node)
    linked = first / "model.bin"
    assert linked.stat().st_ino == obj.stat().st_ino

    # The task makes its input writable and rewrites it in place, then hides its tracks.
    old = linked.stat()
    linked.chmod(0o644)
    with open(linked, "r+b") as f:
        f.write(bytes(b ^ 0x5A for b in content))
    linked.chmod(0o444)
    os.utime(linked, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert obj.read_bytes() != content  # the cache object itself is altered

    second = st.workdir("task2")
    result, ops = st.counted(*args, workdir=second)
    assert result.returncode == 0, result.stderr
    assert (second / "model.bin").read_bytes() == content
    assert ops.count("Blob_Download") == 1, ops
    (fresh,) = _objects(node)
    assert fresh.read_bytes() == content
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o444
    assert (second / "model.bin").stat().st_ino == fresh.stat().st_ino
    assert result.summary["linked"] == 0
    assert result.summary["transferred"] == 1


def test_a_partial_left_in_the_node_cache_by_kill_9_goes_once_its_blob_changed(
    st: Stage,
) -> None:
    """kill -9 while a blob is fetched into the node cache leaves a full-size partial; the
    blob then changes, so no one will resume it: the next stage evicts it within
    --cache-max-bytes (it counts in the bound) and the cache ends within the bound."""
    size = 64 * MiB
    st.seed({"big.bin": data(size, 11)})
    node = st.tmp / "node"
    args = ["-i", st.url("big.bin") + "=big.bin", "--cache-dir", str(node)]
    wd = st.workdir()
    proc = subprocess.Popen(
        st.command(*args, "-j", "1", workdir=wd),
        env=st.env(),
        cwd=st.tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        journals: list[Path] = []
        while proc.poll() is None and time.monotonic() < deadline:
            journals = sorted((node / "partial").glob("*.chunks"))
            if journals and _journal_chunks(journals[0]) >= 1:
                break
            time.sleep(0.002)  # bounded poll: a file gives no change notification
        assert proc.poll() is None, "the download ended before it could be interrupted"
        assert journals, "no chunk journal in the node cache within 60 s"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    orphan = journals[0].with_suffix("")
    assert orphan.stat().st_size == size
    content = data(size, 12)
    st.seed({"big.bin": content})  # a new version: the partial is no one's any more

    bound = 100 * MiB  # the object fits; the object and the orphan do not
    result = st.run(*args, "--cache-max-bytes", str(bound), "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    assert (wd / "big.bin").read_bytes() == content
    assert list((node / "partial").iterdir()) == []
    (obj,) = _objects(node)
    assert obj.read_bytes() == content
    assert sum(p.stat().st_size for p in node.rglob("*") if p.is_file()) <= bound


# -- 8: dry run ----------------------------------------------------------------------------------


_PLAN_LINE = re.compile(r"^(?P<action>\w+) +(?P<url>\S+) -> (?P<dest>.+?)  \((?P<why>.*)\)$")


def test_dry_run_changes_nothing_and_prints_the_plan(st: Stage) -> None:
    """--dry-run: no download, no file touched (workdir, stat-cache, node cache), a full plan."""
    blobs = {
        "d/keep.txt": b"keep\n",
        "d/keep-big.bin": data(9 * MiB, 81),
        "d/changed.bin": data(5000, 82),
        "d/gone.bin": data(6000, 83),
    }
    st.seed(blobs)
    node = st.tmp / "node"
    wd = st.workdir()
    args = ("-i", st.url("d/") + "=d/", "--cache-dir", str(node))
    assert st.run(*args, workdir=wd).returncode == 0
    st.seed({"d/changed.bin": data(5000, 84), "d/new.bin": b"new\n"})
    (wd / "d/gone.bin").unlink()

    before = (tree(wd), tree(st.statcache), tree(node))
    result, ops = st.counted(*args, "--dry-run", "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    result.assert_clean_stderr()
    assert "Blob_Download" not in ops, ops

    expected = {
        "d/keep.txt": "skip",
        "d/keep-big.bin": "skip",
        "d/changed.bin": "download",
        "d/new.bin": "download",
        "d/gone.bin": "link",
    }
    plan_lines = result.stdout.strip().splitlines()[:-1]
    planned = {}
    for line in plan_lines:
        match = _PLAN_LINE.match(line)
        assert match, line
        assert match["url"] == st.url(match["dest"])
        planned[match["dest"]] = match["action"]
    assert planned == expected
    summary = result.summary
    assert summary["dry_run"] is True
    assert summary["files"] == 5
    assert summary["skipped"] == 2
    assert summary["linked"] == 1
    assert summary["transferred"] == 2
    assert summary["resumed"] == 0
    assert summary["failed"] == 0
    assert summary["bytes_transferred"] == 5000 + 4
    # Last, so that a failure here says everything above held.
    assert tree(wd) == before[0]
    assert tree(node) == before[2]
    assert tree(st.statcache) == before[1]


def test_dry_run_on_a_node_without_a_stat_cache_creates_none(st: Stage) -> None:
    """A dry run that compares a local file creates no stat-cache database to do it."""
    content = data(3000, 85)
    st.seed({"f.bin": content})
    wd = st.workdir()
    (wd / "f.bin").write_bytes(content)
    (wd / "g.bin").write_bytes(b"stale")
    before = tree(wd)
    result = st.run(
        "-i",
        st.url("f.bin") + "=f.bin",
        "-i",
        st.url("f.bin") + "=g.bin",
        "--dry-run",
        workdir=wd,
    )
    assert result.returncode == 0, result.stderr
    assert not st.statcache.exists()
    assert tree(wd) == before


# -- 9: bad inputs -------------------------------------------------------------------------------


def _snapshot(st: Stage) -> dict[str, Any]:
    """Everything below the test's folder but the stat-cache (which any run may write)."""
    return tree(st.tmp, exclude=(st.statcache,))


def _outside(snapshot: dict[str, Any], *workdirs: str) -> dict[str, Any]:
    return {k: v for k, v in snapshot.items() if k.split("/", 1)[0] not in workdirs}


def test_missing_inputs_are_exit_66_with_one_line(st: Stage) -> None:
    """A missing blob, a prefix listing nothing, a missing container: 66, one line, no file."""
    st.seed({"other/x": b"x"})
    missing = f"tk-missing-{uuid.uuid4().hex[:12]}"
    cases = {
        "blob": (st.url("nope/missing.bin") + "=missing.bin", "nope/missing.bin"),
        "empty-prefix": (st.url("empty/") + "=e/", "--allow-empty"),
        "no-container-blob": (f"az://{missing}/x.bin=x.bin", missing),
        "no-container-prefix": (f"az://{missing}/dir/=dir/", missing),
    }
    for name in cases:
        st.workdir(name)
    before = _snapshot(st)
    results = st.run_many([(("-i", src), st.tmp / name) for name, (src, _) in cases.items()])
    for (name, (_, mention)), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 66, (name, result.stderr)
        result.assert_one_error_line()
        assert mention in result.stderr, (name, result.stderr)
    assert _snapshot(st) == before

    allowed = st.run(
        "-i", st.url("empty/") + "=e/", "--allow-empty", "--json", workdir=st.tmp / "empty-prefix"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stderr == ""
    assert allowed.summary["files"] == allowed.summary["failed"] == 0


def test_invalid_container_name_is_exit_64_without_a_request(st: Stage) -> None:
    """az://Bad_Name/x is refused before any request reaches the service."""
    wd = st.workdir()
    before = _snapshot(st)
    result, ops = st.counted("-i", "az://Bad_Name/x=x", workdir=wd)
    assert result.returncode == 64
    result.assert_one_error_line()
    assert "Bad_Name" in result.stderr
    assert ops == []
    assert _snapshot(st) == before


def test_destination_outside_the_workdir_is_exit_64(st: Stage) -> None:
    """DEST may not leave the working directory, relatively or absolutely."""
    st.seed({"f.bin": b"payload"})
    (st.tmp / "outside").mkdir()
    dests = ["../x", str(st.tmp / "outside" / "abs.bin"), "sub/../../x", "../wd1/x"]
    for i in range(len(dests)):
        st.workdir(f"wd{i}")
    before = _snapshot(st)
    since = st.azurite.log_offset()
    results = st.run_many(
        [(("-i", st.url("f.bin") + "=" + dest), st.tmp / f"wd{i}") for i, dest in enumerate(dests)]
    )
    for dest, result in zip(dests, results, strict=True):
        assert result.returncode == 64, (dest, result.stderr)
        result.assert_one_error_line()
        assert "outside the working directory" in result.stderr
    assert "Blob_Download" not in st.azurite.operations(since)
    assert _snapshot(st) == before


def test_unreachable_account_is_exit_75_quickly_and_keeps_its_key(st: Stage) -> None:
    """A storage endpoint that refuses connections: exit 75 within seconds, key never shown."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now, and nothing listens on it.
    key = base64.b64encode(os.urandom(64)).decode()
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=acct;"
        f"AccountKey={key};BlobEndpoint=http://127.0.0.1:{port}/acct;"
    )
    wd = st.workdir()
    before = _snapshot(st)
    retry = ("--retries", "2", "--retry-budget", "1")
    started = [
        st.start("-i", source, *retry, workdir=wd, connection_string=connection)
        for source in ("az://data/f.bin=f.bin", "az://data/prefix/=p/")
    ]
    for result in st.finish_all(started, timeout=30):
        assert result.returncode == 75, result.stderr
        assert result.seconds < 10
        result.assert_clean_stderr()  # the one retry may be announced by a warning line
        assert len(result.error_lines) == 1, result.stderr
        assert "127.0.0.1" in result.error_lines[0] or "acct" in result.error_lines[0]
        result.assert_no_secret(key, connection)
    assert _snapshot(st) == before


def test_wrong_account_key_is_exit_78_and_the_key_is_not_shown(st: Stage) -> None:
    """Credentials the service refuses: exit 78, one line, no key in the output."""
    st.seed({"f.bin": b"payload"})
    wrong = base64.b64encode(os.urandom(64)).decode()
    good = account_key(st.azurite.connection_string)
    connection = st.azurite.connection_string.replace(good, wrong)
    wd = st.workdir()
    result = st.run("-i", st.url("f.bin") + "=f.bin", workdir=wd, connection_string=connection)
    assert result.returncode == 78, result.stderr
    result.assert_one_error_line()
    result.assert_no_secret(wrong, connection)
    assert not (wd / "f.bin").exists()


def test_wrong_metadata_digest_is_exit_65_and_leaves_nothing(st: Stage) -> None:
    """Bytes that do not match the blob's taskkit digest: exit 65, no file, no partial."""
    sizes = {"small": 1000, "large": 9 * MiB + 1}
    for label, size in sizes.items():
        st.seed(
            {f"{label}.bin": data(size, 9)},
            metadata={"taskkit_digest": "xxh3-128:" + "0" * 32, "taskkit_size": str(size)},
        )
    cases = [(label, cached) for label in sizes for cached in (False, True)]
    for label, cached in cases:
        st.workdir(f"wd-{label}-{cached}")
    before = _snapshot(st)
    results = st.run_many(
        [
            (
                (
                    "-i",
                    st.url(f"{label}.bin") + "=sub/bad.bin",
                    *(("--cache-dir", str(st.tmp / f"node-{label}")) if cached else ()),
                ),
                st.tmp / f"wd-{label}-{cached}",
            )
            for label, cached in cases
        ]
    )
    for (label, cached), result in zip(cases, results, strict=True):
        wd = st.tmp / f"wd-{label}-{cached}"
        assert result.returncode == 65, (label, cached, result.stderr)
        result.assert_one_error_line()
        assert f"{label}.bin" in result.stderr
        assert "digest" in result.stderr
        assert not (wd / "sub/bad.bin").exists()
        assert leftovers(wd) == []
        if cached:
            node = st.tmp / f"node-{label}"
            # Only locks may remain: empty files, one per source version, never deleted.
            assert [
                p
                for p in node.rglob("*")
                if p.is_file() and p.name != ".evict.lock" and p.parent.parent.name != "locks"
            ] == []
    workdirs = [f"wd-{label}-{cached}" for label, cached in cases]
    nodes = [f"node-{label}" for label in sizes]
    assert _outside(_snapshot(st), *workdirs, *nodes) == _outside(before, *workdirs, *nodes)


# -- 10: hostile names ---------------------------------------------------------------------------

# Names Azurite stores and lists as they are. Left out: a backslash (Azurite turns it into '/'),
# \x01 (Azurite stores it, then fails every listing of the container with HTTP 500), and '.' or
# '..' segments (the HTTP client normalises the URL, so the request's signature fails).
HOSTILE = {
    "del\x7fchar": "control character",
    "tab\there": "control character",
    "new\nline": "control character",
    "L" * 300: "longer than 255 bytes",
    "a//b": "empty",
    "/lead": "starts with '/'",
}


def test_hostile_blob_names_are_refused_alone(st: Stage) -> None:
    """Each unsafe name gets one error line naming it (exit 65); the safe blob is staged."""
    st.seed({"p/" + name: b"hostile" for name in HOSTILE})
    st.seed({"p/ok.txt": b"fine\n"})
    with st.azurite.blob_service_client() as service:
        listed = {b.name for b in service.get_container_client(st.container).list_blobs()}
    assert listed == {"p/" + name for name in HOSTILE} | {"p/ok.txt"}, listed
    wd = st.workdir()
    before = _snapshot(st)
    result = st.run("-i", st.url("p/") + "=p/", "--json", workdir=wd)
    assert result.returncode == 65, result.stderr
    result.assert_clean_stderr()
    errors = result.error_lines
    assert len(errors) == len(HOSTILE), errors
    for name, why in HOSTILE.items():
        shown = repr(st.url("p/" + name))
        (line,) = [e for e in errors if shown in e]
        assert why in line, line
    assert (wd / "p/ok.txt").read_bytes() == b"fine\n"
    assert [str(p.relative_to(wd)) for p in sorted(wd.rglob("*"))] == ["p", "p/ok.txt"]
    summary = result.summary
    assert summary["files"] == 1
    assert summary["transferred"] == 1
    assert summary["failed"] == len(HOSTILE)
    assert _outside(_snapshot(st), "wd") == _outside(before, "wd")


def test_a_listing_the_service_fails_is_exit_75_with_only_taskkit_lines(st: Stage) -> None:
    """A listing answered with HTTP 500: exit 75, and only taskkit's own line on stderr."""
    # Azurite stores a name holding \x01, then fails every listing of its prefix with a 500.
    st.seed({"p/ctl\x01x": b"x", "p/ok.txt": b"ok"})
    with BlobServiceClient.from_connection_string(
        st.azurite.connection_string, retry_total=0
    ) as service:
        status = None
        try:
            list(service.get_container_client(st.container).list_blobs())
        except HttpResponseError as exc:
            status = exc.status_code
    if status != 500:
        pytest.skip(f"this Azurite lists a name holding \\x01 (status {status}), no HTTP 500")
    wd = st.workdir()
    before = _snapshot(st)
    result = st.run("-i", st.url("p/") + "=p/", "--retries", "1", workdir=wd)
    assert result.returncode == 75, result.stderr
    result.assert_one_error_line()
    assert "500" in result.stderr
    assert _snapshot(st) == before


# -- 11: metadata digests ------------------------------------------------------------------------


def test_a_file_copied_by_hand_with_the_declared_digest_is_not_downloaded(st: Stage) -> None:
    """Local bytes matching the blob's taskkit digest are kept; other bytes are replaced."""
    blobs = {
        "m/small.bin": data(4096, 11),
        "m/large.bin": data(17 * MiB + 3, 12),
        "m/other.bin": data(2048, 13),
    }
    for name, content in blobs.items():
        st.seed(
            {name: content},
            metadata={"taskkit_digest": taskkit_digest(content), "taskkit_size": str(len(content))},
        )
    wd = st.workdir()
    (wd / "m").mkdir()
    (wd / "m/small.bin").write_bytes(blobs["m/small.bin"])
    (wd / "m/large.bin").write_bytes(blobs["m/large.bin"])
    (wd / "m/other.bin").write_bytes(data(2048, 14))  # same size, other bytes
    kept = {name: (wd / name).stat().st_ino for name in ("m/small.bin", "m/large.bin")}
    result, ops = st.counted("-i", st.url("m/") + "=m/", "--json", workdir=wd)
    assert result.returncode == 0, result.stderr
    assert ops.count("Blob_Download") == 1, ops
    summary = result.summary
    assert summary["skipped"] == 2
    assert summary["transferred"] == 1
    assert summary["bytes_transferred"] == 2048
    for name, ino in kept.items():
        assert (wd / name).stat().st_ino == ino  # left in place, not rewritten
    for name, content in blobs.items():
        assert (wd / name).read_bytes() == content
