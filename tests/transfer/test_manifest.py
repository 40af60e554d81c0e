"""taskkit.transfer.manifest: the published set of a DEST, its JSON form, and the task that wrote
it."""

from __future__ import annotations

import json
import re

import pytest

from taskkit.content.digest import hash_bytes
from taskkit.exceptions import DataError
from taskkit.transfer.manifest import FORMAT, Manifest, ManifestFile, task_identity

A = ManifestFile("a.txt", hash_bytes(b"a"), 1)
B = ManifestFile("sub/b.bin", hash_bytes(b"bb"), 2)
UNICODE = ManifestFile("数据/ü #%?.txt", hash_bytes(b""), 0)
TASK = {"job_id": "j", "task_id": "t", "node_id": "n", "attempt": 2}


def test_to_bytes_and_parse_round_trip() -> None:
    """parse(to_bytes()) gives back the same files, task and creation time."""
    manifest = Manifest.of([B, UNICODE, A], TASK)
    again = Manifest.parse(manifest.to_bytes(), "memory://d/_taskkit_manifest.json")
    assert again == manifest
    assert again.files == manifest.files
    assert dict(again.task) == TASK
    assert again.created == manifest.created


def test_of_sorts_the_files_by_name_and_stamps_utc_seconds() -> None:
    """Files are kept in name order; ``created`` is UTC to the second, ending in Z."""
    manifest = Manifest.of([B, A], {})
    assert manifest.files == (A, B)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest.created)


def test_the_json_has_the_documented_shape() -> None:
    """UTF-8 JSON with format, created, task and files (name, digest string, size); names
    are written as UTF-8, not escaped."""
    manifest = Manifest.of([A, UNICODE], TASK)
    data = manifest.to_bytes()
    assert "数据".encode() in data
    assert json.loads(data) == {
        "format": FORMAT,
        "created": manifest.created,
        "task": TASK,
        "files": [
            {"name": "a.txt", "digest": str(A.digest), "size": 1},
            {"name": UNICODE.name, "digest": str(UNICODE.digest), "size": 0},
        ],
    }
    assert FORMAT == "taskkit-manifest-1"


def test_an_empty_manifest_round_trips() -> None:
    """A DEST published with no files (--allow-empty) has a manifest listing none."""
    manifest = Manifest.of([], {})
    assert Manifest.parse(manifest.to_bytes(), "x").files == ()


def test_parse_tolerates_a_missing_task_and_created() -> None:
    """Only format and files are required; task defaults to empty, created to ''."""
    data = json.dumps({"format": FORMAT, "files": []}).encode()
    manifest = Manifest.parse(data, "x")
    assert (manifest.files, dict(manifest.task), manifest.created) == ((), {}, "")


GOOD = {"name": "a", "digest": str(hash_bytes(b"a")), "size": 1}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"null",
        json.dumps({"files": [GOOD]}).encode(),
        json.dumps({"format": "taskkit-manifest-2", "files": [GOOD]}).encode(),
        json.dumps({"format": FORMAT}).encode(),
        json.dumps({"format": FORMAT, "files": 3}).encode(),
        json.dumps({"format": FORMAT, "files": [{"name": "a", "size": 1}]}).encode(),
        json.dumps({"format": FORMAT, "files": [{**GOOD, "digest": "md5:00"}]}).encode(),
        json.dumps({"format": FORMAT, "files": [{**GOOD, "size": "big"}]}).encode(),
        json.dumps({"format": FORMAT, "files": [{**GOOD, "size": None}]}).encode(),
        json.dumps({"format": FORMAT, "files": ["a"]}).encode(),
        json.dumps({"format": FORMAT, "files": [], "task": [1]}).encode(),
    ],
    ids=repr,
)
def test_anything_else_is_a_data_error_naming_the_place(data: bytes) -> None:
    """Not JSON, not an object, another format, missing or malformed files, a task that is
    not a mapping: DataError (65) whose message names where the manifest was read."""
    where = "az://c/run/_taskkit_manifest.json"
    with pytest.raises(DataError) as info:
        Manifest.parse(data, where)
    assert info.value.exit_code == 65
    assert str(info.value).startswith(f"{where} is not a taskkit manifest: ")


def test_task_identity_comes_from_batch_variables_and_the_attempt() -> None:
    """Job, task and node from AZ_BATCH_*; the attempt from TASKKIT_ATTEMPT, as an int."""
    env = {
        "AZ_BATCH_JOB_ID": "job-1",
        "AZ_BATCH_TASK_ID": "task-7",
        "AZ_BATCH_NODE_ID": "tvm-1",
        "TASKKIT_ATTEMPT": "3",
        "UNRELATED": "x",
    }
    assert task_identity(env) == {
        "job_id": "job-1",
        "task_id": "task-7",
        "node_id": "tvm-1",
        "attempt": 3,
    }


def test_task_identity_leaves_out_what_is_missing_or_empty() -> None:
    """Unset or empty variables are not written; an attempt that is not a number stays text."""
    assert task_identity({}) == {}
    assert task_identity({"AZ_BATCH_JOB_ID": "", "TASKKIT_ATTEMPT": "two"}) == {"attempt": "two"}


def test_of_without_a_task_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifest.of(files) names the task from os.environ; an explicit task wins."""
    for name in ("AZ_BATCH_JOB_ID", "AZ_BATCH_TASK_ID", "AZ_BATCH_NODE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZ_BATCH_TASK_ID", "from-env")
    monkeypatch.setenv("TASKKIT_ATTEMPT", "1")
    assert dict(Manifest.of([A]).task) == {"task_id": "from-env", "attempt": 1}
    assert dict(Manifest.of([A], {"task_id": "given"}).task) == {"task_id": "given"}


def test_same_files_ignores_created_and_task() -> None:
    """Two manifests of the same files from other tasks at other times say the same thing;
    a different digest, size, name or file set does not."""
    one = Manifest((A, B), {"task_id": "t1"}, "2026-01-01T00:00:00Z")
    two = Manifest((A, B), {"task_id": "t2", "attempt": 4}, "2026-11-21T10:00:00Z")
    assert one.same_files(two)
    assert not one.same_files(Manifest((A,), {}, ""))
    assert not one.same_files(Manifest((A, B._replace(size=3)), {}, ""))
    assert not one.same_files(Manifest((A, B._replace(digest=hash_bytes(b"x"))), {}, ""))
    assert not one.same_files(Manifest((A, B._replace(name="sub/c.bin")), {}, ""))


def said(manifest: Manifest, **changes: object) -> bytes:
    """``manifest``'s bytes with top-level fields replaced (None: removed)."""
    obj = json.loads(manifest.to_bytes())
    for field, value in changes.items():
        if value is None:
            obj.pop(field, None)
        else:
            obj[field] = value
    return json.dumps(obj).encode()


def test_said_by_agrees_with_same_files_for_every_kind_of_difference() -> None:
    """said_by(bytes) is same_files(parse(bytes)) for manifests that differ in a file's
    digest, size or name, in the set of files, in their fingerprint, or only in task and time;
    the bytes' spacing does not matter."""
    one = Manifest.of([A, B], {"task_id": "t1", "fingerprint": "f1"})
    others = [
        Manifest.of([A, B], {"task_id": "t2", "attempt": 4, "fingerprint": "f1"}),
        Manifest.of([A], {"fingerprint": "f1"}),
        Manifest.of([A, B, UNICODE], {"fingerprint": "f1"}),
        Manifest.of([A, B._replace(size=3)], {"fingerprint": "f1"}),
        Manifest.of([A, B._replace(digest=hash_bytes(b"x"))], {"fingerprint": "f1"}),
        Manifest.of([A, B._replace(name="sub/c.bin")], {"fingerprint": "f1"}),
        Manifest.of([A, B], {"fingerprint": "f2"}),
        Manifest.of([A, B], {}),
    ]
    for other in others:
        for data in (other.to_bytes(), json.dumps(json.loads(other.to_bytes()), indent=2).encode()):
            assert one.said_by(data) == one.same_files(Manifest.parse(data, "m")), other
    assert one.said_by(others[0].to_bytes())
    assert Manifest.of([UNICODE], {}).said_by(Manifest.of([UNICODE], {"a": 1}).to_bytes())


def test_said_by_counts_anything_else_as_different() -> None:
    """Not JSON, another format, no files, a size spelt true or 1.0 for 1, a task that is not an
    object: not the same (the manifest is rewritten), never an exception."""
    one = Manifest.of([A], {})
    files = json.loads(one.to_bytes())["files"]
    spelt = [dict(files[0], size=True)], [dict(files[0], size=1.0)]
    for data in (
        b"",
        b"\xff",
        b"[]",
        b'"text"',
        said(one, format="taskkit-manifest-0"),
        said(one, format=None),
        said(one, files=None),
        said(one, files={"a.txt": 1}),
        said(one, files=spelt[0]),
        said(one, files=spelt[1]),
        said(one, task=["fingerprint"]),
    ):
        assert not one.said_by(data), data
    assert one.said_by(said(one, task=None))  # no task: no fingerprint, as none here


def test_said_by_reads_only_the_head_of_bytes_ending_in_its_files_and_still_checks_it() -> None:
    """Bytes ending in exactly this manifest's files, as it writes them: the verdict is the
    full one's, from the part before the files (format, task's fingerprint); a broken or
    foreign head is different, and a head that hides a second "files" never wins."""
    one = Manifest.of([A, B, UNICODE], {"fingerprint": "f1"})
    tail = one.to_bytes()[one.to_bytes().index(b',"files":') :]
    heads = {
        b'{"format":"taskkit-manifest-1","created":"x","task":{"fingerprint":"f1"}': True,
        b'{"format":"taskkit-manifest-1","task":{"fingerprint":"f1","attempt":2}': True,
        b'{"format":"taskkit-manifest-1"': False,  # no task: no fingerprint, not f1
        b'{"format":"taskkit-manifest-1","task":{"fingerprint":"f2"}': False,
        b'{"format":"taskkit-manifest-0","task":{"fingerprint":"f1"}': False,
        b'{"format":"taskkit-manifest-1","task":["fingerprint"]': False,
        b'{"format":"taskkit-manifest-1","task":{"fingerprint":"f1"': False,  # not JSON
        b'["taskkit-manifest-1"': False,
        b'{"format":"taskkit-manifest-1","task":{"fingerprint":"f1"},"files":[]': True,
    }
    for head, verdict in heads.items():
        data = head + tail
        assert one.said_by(data) is verdict, data
        try:
            full = one.same_files(Manifest.parse(data, "m"))
        except Exception:
            full = False
        assert full is verdict, data
