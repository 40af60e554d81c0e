"""taskkit.content.reader: a forked process hashes small files for the caller, answers only for
files it read whole, never blocks the caller, and never outlives its run.

The reader forks only from a process with one thread, so each test runs its scenario in a
fresh interpreter (whatever threads other tests left in this one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from taskkit.content.digest import READ_SIZE, hash_bytes

PRELUDE = """
import json, os, sys, signal, time
from taskkit.content.reader import Reader
from taskkit.content.statcache import CacheEntry, path_key
from taskkit.content.hashing import hash_paths, FileDigest
"""


def fresh(code: str, timeout: float = 120) -> object:
    """Run ``code`` (after PRELUDE) in a new interpreter; what it printed last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_answers_only_for_files_read_whole_and_their_entries_are_exact(tmp_path: Path) -> None:
    """A small file gets the entry its stat and bytes make; an empty, a large, a missing file,
    a directory and a FIFO (never opened for long, never blocking) get "not me"."""
    small = tmp_path / "small"
    small.write_bytes(b"abc" * 100)
    edge = tmp_path / "edge"
    edge.write_bytes(b"x" * READ_SIZE)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "large").write_bytes(b"y" * (READ_SIZE + 1))
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    names = ["small", "empty", "large", "missing", "dir", "fifo", "edge"]
    code = f"""
names = {names!r}
root = {str(tmp_path)!r}
reader = Reader.start()
assert reader is not None
keys = [path_key(os.path.join(root, n)) for n in names]
seq = reader.send(keys, 123)
deadline = time.monotonic() + 60
while (answers := reader.answers(seq, keys)) is None:
    assert time.monotonic() < deadline
    time.sleep(0.01)
reader.close()
out = []
for key, entry in zip(keys, answers):
    if entry is None:
        out.append(None)
        continue
    st = os.stat(key)
    assert entry.path == key and entry.valid()
    out.append([entry.digest.hex, entry.stat.size, entry.recorded_ns,
                tuple(entry.stat) == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                      st.st_ctime_ns), len(entry.chunks)])
print(json.dumps(out))
"""
    got = fresh(code)
    assert isinstance(got, list)
    by_name = dict(zip(names, got, strict=True))
    assert by_name["small"] == [hash_bytes(small.read_bytes()).hex, 300, 123, True, 1]
    assert by_name["edge"] == [hash_bytes(edge.read_bytes()).hex, READ_SIZE, 123, True, 1]
    for name in ("empty", "large", "missing", "dir", "fifo"):
        assert by_name[name] is None, name


def test_a_request_taken_back_is_dropped_and_the_next_one_still_lines_up(tmp_path: Path) -> None:
    """Answers stay matched to their requests when one in between is taken back: no answer of
    one request is ever read as another's (each names its own path)."""
    for i in range(30):
        (tmp_path / f"f{i:02}").write_bytes(b"%d" % i)
    code = f"""
root = {str(tmp_path)!r}
keys = [path_key(os.path.join(root, f"f{{i:02}}")) for i in range(30)]
reader = Reader.start()
assert reader is not None
batches = [keys[0:10], keys[10:20], keys[20:30]]
seqs = [reader.send(b, 1) for b in batches]
reader.take_back(seqs[1])
out = []
for seq, batch in zip(seqs, batches):
    if seq == seqs[1]:
        continue
    deadline = time.monotonic() + 60
    while (answers := reader.answers(seq, batch)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    out += [[os.path.basename(e.path).decode(), e.digest.hex] for e in answers]
assert reader.answers(seqs[1], batches[1]) is None  # dropped, never handed out
reader.close()
print(json.dumps(out))
"""
    got = fresh(code)
    expected = [[f"f{i:02}", hash_bytes(b"%d" % i).hex] for i in [*range(10), *range(20, 30)]]
    assert got == expected


def test_a_request_taken_back_after_its_answer_arrived_is_dropped_too(tmp_path: Path) -> None:
    """A request taken back once its answer is already in (collected while another was sent)
    is never handed out either."""
    for i in range(10):
        (tmp_path / f"f{i}").write_bytes(b"%d" % i)
    code = f"""
keys = [path_key(os.path.join({str(tmp_path)!r}, f"f{{i}}")) for i in range(10)]
reader = Reader.start()
assert reader is not None
seq = reader.send(keys, 1)
deadline = time.monotonic() + 60
while seq not in reader._answered:  # its answer arrived and was collected
    assert time.monotonic() < deadline
    time.sleep(0.01)
    reader._collect()
reader.take_back(seq)
print(json.dumps(reader.answers(seq, keys) is None))
reader.close()
"""
    assert fresh(code) is True


def test_hash_paths_with_the_reader_equals_hashing_alone(tmp_path: Path) -> None:
    """Results, their order, failures, skips and recorded cache entries are the same with the
    reader (jobs=2) as without it (jobs=1), over a tree of small files mixed with odd ones."""
    for d in range(3):
        sub = tmp_path / "tree" / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(300):
            (sub / f"f{i:03}").write_bytes(b"%d-%d" % (d, i) * (i % 7))
    (tmp_path / "tree" / "d1" / "big").write_bytes(b"z" * (READ_SIZE + 5))
    os.mkfifo(tmp_path / "tree" / "d1" / "fifo")
    (tmp_path / "tree" / "d2" / "dangling").symlink_to(tmp_path / "nowhere")
    code = f"""
from taskkit.content.statcache import StatCache
import taskkit.content.reader as reader_module
started = []
real_start = Reader.start.__func__
def spy(cls):
    reader = real_start(cls)
    started.append(reader is not None)
    return reader
Reader.start = classmethod(spy)
root = {str(tmp_path)!r}
out = {{}}
for jobs in (1, 2):
    cache = StatCache.open(os.path.join(root, f"cache{{jobs}}"), clock=lambda: 10**18)
    rows = []
    for r in hash_paths([os.path.join(root, "tree")], jobs=jobs, cache=cache, reader=True):
        if isinstance(r, FileDigest):
            rows.append([r.path, r.digest.hex, r.size, r.cached, len(r.chunks)])
        else:
            rows.append([r.path, type(r).__name__])
    keys = sorted(path_key(row[0]) for row in rows if len(row) == 5)
    found = cache.lookup(keys)
    entries = sorted([k.decode(), found[k].digest.hex, tuple(found[k].stat),
                      found[k].recorded_ns] for k in keys)
    cache.close()
    out[jobs] = [rows, entries]
print(json.dumps([out[1], out[2], started]))
"""
    alone, with_reader, started = fresh(code)  # type: ignore[misc]
    assert started == [True]  # jobs=1 asks for no reader; jobs=2 got one
    assert with_reader == alone
    rows = alone[0]
    assert len(rows) == 3 * 300 + 3
    assert ["fifo" in row[0] for row in rows if row[1] == "Skipped"] == [True]
    assert ["dangling" in row[0] for row in rows if row[1] == "Failed"] == [True]


def test_a_partly_changed_tree_reads_its_changes_through_the_reader(tmp_path: Path) -> None:
    """A warm run over a tree where 200 of 600 files changed, interleaved with unchanged ones
    in every window: the reader is forked for the changes, the unchanged come from the cache,
    and results and recorded entries equal those of a run without a reader on a copy."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(600):
        (tree / f"f{i:03}").write_bytes(b"v1-%03d" % i)
    code = f"""
from taskkit.content.statcache import StatCache
import shutil
started = []
real_start = Reader.start.__func__
def spy(cls):
    reader = real_start(cls)
    started.append(reader is not None)
    return reader
Reader.start = classmethod(spy)
root, tree = {str(tmp_path)!r}, {str(tree)!r}
def run(jobs, name, clock):
    cache = StatCache.open(os.path.join(root, name), clock=lambda: clock)
    try:
        rows = [[r.path, r.digest.hex, r.cached] for r in hash_paths(
            [tree], jobs=jobs, cache=cache, reader=True)]
        keys = sorted(path_key(row[0]) for row in rows)
        found = cache.lookup(keys)
        return rows, sorted([k.decode(), found[k].digest.hex, found[k].recorded_ns] for k in keys)
    finally:
        cache.close()
run(1, "cache", 4 * 10**18)
shutil.copytree(os.path.join(root, "cache"), os.path.join(root, "copy"))
for i in range(0, 600, 3):
    with open(os.path.join(tree, f"f{{i:03}}"), "wb") as f:
        f.write(b"v2-%03d" % i)
with_reader = run(2, "cache", 5 * 10**18)
without = run(1, "copy", 5 * 10**18)
print(json.dumps([with_reader, without, started]))
"""
    with_reader, without, started = fresh(code)  # type: ignore[misc]
    assert started == [True]
    assert with_reader == without
    rows = with_reader[0]
    assert [row[2] for row in rows] == [i % 3 != 0 for i in range(600)]
    assert all(
        row[1] == hash_bytes(b"v%d-%03d" % (1 if i % 3 else 2, i)).hex for i, row in enumerate(rows)
    )


def test_a_reader_killed_mid_run_costs_nothing_but_re_reads(tmp_path: Path) -> None:
    """SIGKILL to the reader during a run: every file is still hashed, correctly, by the
    caller, and the dead reader is reaped."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(2000):
        (tree / f"f{i:04}").write_bytes(b"%d" % i)
    code = f"""
readers = []
real_start = Reader.start.__func__
def spy(cls):
    reader = real_start(cls)
    readers.append(reader)
    return reader
Reader.start = classmethod(spy)
rows = []
for r in hash_paths([{str(tree)!r}], jobs=2, reader=True):
    rows.append([os.path.basename(r.path), r.digest.hex])
    if len(rows) == 1:
        os.kill(readers[0].pid, signal.SIGKILL)
pid = readers[0].pid
try:
    os.kill(pid, 0)
    reaped = False
except ProcessLookupError:
    reaped = True
print(json.dumps([rows, reaped]))
"""
    rows, reaped = fresh(code)  # type: ignore[misc]
    assert reaped
    assert rows == [[f"f{i:04}", hash_bytes(b"%d" % i).hex] for i in range(2000)]


def test_the_reader_ends_with_its_run_even_when_the_run_is_cut_short(tmp_path: Path) -> None:
    """Closing the results early, and a run that ends normally, both reap the reader."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(1000):
        (tree / f"f{i:04}").write_bytes(b"x")
    code = f"""
pids = []
real_start = Reader.start.__func__
def spy(cls):
    reader = real_start(cls)
    pids.append(reader.pid)
    return reader
Reader.start = classmethod(spy)
results = hash_paths([{str(tree)!r}], jobs=2, reader=True)
next(results)
results.close()
list(hash_paths([{str(tree)!r}], jobs=2, reader=True))
alive = []
for pid in pids:
    try:
        os.kill(pid, 0)
        alive.append(pid)
    except ProcessLookupError:
        pass
print(json.dumps([len(pids), alive]))
"""
    assert fresh(code) == [2, []]


def test_no_reader_is_forked_by_a_process_with_threads() -> None:
    """With a second thread running, start() declines (a fork could copy a held lock)."""
    code = """
import threading
stop = threading.Event()
thread = threading.Thread(target=stop.wait)
thread.start()
try:
    declined = Reader.start() is None
finally:
    stop.set()
    thread.join()
reader = Reader.start()
print(json.dumps([declined, reader is not None]))
reader.close()
"""
    assert fresh(code) == [True, True]


def test_kill_9_of_taskkit_hash_leaves_a_usable_cache_and_no_reader(tmp_path: Path) -> None:
    """`taskkit hash` killed with SIGKILL mid-run: its reader ends by itself (its request pipe
    closes), and the next run's digests, from the cache or not, are the true ones."""
    tree = tmp_path / "tree"
    for d in range(10):
        sub = tree / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(1000):
            (sub / f"f{i:04}").write_bytes(b"%d/%d" % (d, i))
    env = {**os.environ, "TASKKIT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskkit", "hash", str(tree)],
        env=env,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # it is hashing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    deadline = time.monotonic() + 30
    while _processes_naming(str(tree)):
        assert time.monotonic() < deadline, "a reader outlived its killed run"
        time.sleep(0.05)
    again = subprocess.run(
        [sys.executable, "-m", "taskkit", "hash", "--json", str(tree)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in again.stdout.splitlines()]
    assert len(rows) == 10_000
    for row in rows:
        d, i = Path(row["path"]).parent.name[1:], Path(row["path"]).name[1:]
        assert row["digest"] == str(hash_bytes(b"%d/%d" % (int(d), int(i))))


def _processes_naming(text: str) -> list[int]:
    """The processes whose command line holds ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found


def test_a_warm_run_checks_here_and_sees_every_change_a_stat_can(tmp_path: Path) -> None:
    """A warm run asked to use a reader checks the cached files itself, and forks no reader
    for the few files left to read; unchanged files come from the cache; a same-size rewrite
    with its mtime put back, a file swapped for a FIFO and a deleted file are each seen
    (re-hashed, skipped, failed) exactly as without a reader."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(600):
        (tree / f"f{i:03}").write_bytes(b"v1-%03d" % i)
    code = f"""
from taskkit.content.statcache import StatCache
starts = []
real_start = Reader.start.__func__
def spy(cls):
    starts.append(1)
    return real_start(cls)
Reader.start = classmethod(spy)
tree = {str(tree)!r}
import shutil
def run(jobs, name="cache"):
    cache = StatCache.open(os.path.join({str(tmp_path)!r}, name), clock=lambda: 4 * 10**18)
    try:
        return [[os.path.basename(r.path), type(r).__name__, getattr(r, "cached", None),
                 r.digest.hex if isinstance(r, FileDigest) else None]
                for r in hash_paths([tree], jobs=jobs, cache=cache, reader=True)]
    finally:
        cache.close()
run(1)  # fill the cache, then give the run without a reader a copy of it
shutil.copytree(os.path.join({str(tmp_path)!r}, "cache"), os.path.join({str(tmp_path)!r}, "copy"))
st = os.stat(os.path.join(tree, "f100"))
with open(os.path.join(tree, "f100"), "wb") as f:
    f.write(b"v2-100")
os.utime(os.path.join(tree, "f100"), ns=(st.st_atime_ns, st.st_mtime_ns))
os.unlink(os.path.join(tree, "f200"))
os.mkfifo(os.path.join(tree, "f200"))
os.unlink(os.path.join(tree, "f300"))
os.symlink(os.path.join(tree, "nowhere"), os.path.join(tree, "f300"))
first_starts = len(starts)
with_reader = run(2)
without = run(1, "copy")
print(json.dumps([with_reader, without, first_starts, len(starts)]))
"""
    with_reader, without, first_starts, all_starts = fresh(code)  # type: ignore[misc]
    assert first_starts == 0  # jobs=1: never a reader
    assert all_starts == 0  # the warm run had three files to read: no fork for them
    assert with_reader == without
    rows = {row[0]: row for row in with_reader}
    assert rows["f100"][1:] == ["FileDigest", False, hash_bytes(b"v2-100").hex]
    assert rows["f200"][1] == "Skipped"
    assert rows["f300"][1] == "Failed"
    assert rows["f000"][1:] == ["FileDigest", True, hash_bytes(b"v1-000").hex]
    assert sum(1 for row in with_reader if row[2] is True) == 597


def test_the_reader_does_not_run_the_callers_signal_handlers() -> None:
    """A SIGTERM handler of the caller (a runner's, forwarding it to its task) is not the
    reader's: SIGTERM ends the reader at once, and the handler runs in the caller only."""
    code = """
ran = []
signal.signal(signal.SIGTERM, lambda *a: ran.append(os.getpid()))
reader = Reader.start()
os.kill(reader.pid, signal.SIGTERM)
deadline = time.monotonic() + 30
while (status := os.waitpid(reader.pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
    time.sleep(0.01)
ended = status[0] == reader.pid and os.WIFSIGNALED(status[1])
print(json.dumps([ended and os.WTERMSIG(status[1]) == signal.SIGTERM, ran]))
"""
    assert fresh(code) == [True, []]
