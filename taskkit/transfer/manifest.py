"""The manifest: the record, written last under a DEST, that its set of files is published.

Blob storage makes one file atomic, never a set. So an upload writes every file first and then
``_taskkit_manifest.json`` under DEST, naming each file with its digest and size, and the task
that published them. Readers treat a DEST without a manifest as not published; an upload that
is about to change a published set removes the manifest first, so a reader never sees a manifest
that disagrees with the files beside it.

The format is JSON, UTF-8, with ``"format": "taskkit-manifest-1"``::

    {"format": "taskkit-manifest-1", "created": "2026-11-21T10:00:00Z",
     "task": {"job_id": "j", "task_id": "t", "node_id": "n", "attempt": 2},
     "files": [{"name": "a/b.txt", "digest": "xxh3-128:...", "size": 12}, ...]}
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from typing import NamedTuple

from taskkit.content.digest import Digest
from taskkit.exceptions import DataError

__all__ = ["FORMAT", "Manifest", "ManifestFile", "task_identity"]

FORMAT = "taskkit-manifest-1"

#: Where the task's identity comes from: Batch's variables, and the attempt taskkit counts.
_TASK_VARIABLES = {
    "job_id": "AZ_BATCH_JOB_ID",
    "task_id": "AZ_BATCH_TASK_ID",
    "node_id": "AZ_BATCH_NODE_ID",
    "attempt": "TASKKIT_ATTEMPT",
}


class ManifestFile(NamedTuple):
    """One published file: its name below DEST, digest and size."""

    name: str
    digest: Digest
    size: int


class Manifest(NamedTuple):
    """A published set of files, by name order."""

    files: tuple[ManifestFile, ...]
    task: Mapping[str, str | int]
    created: str

    @classmethod
    def of(cls, files: list[ManifestFile], task: Mapping[str, str | int] | None = None) -> Manifest:
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        return cls(
            tuple(sorted(files)),
            dict(task_identity() if task is None else task),
            now.isoformat().replace("+00:00", "Z"),
        )

    def to_bytes(self) -> bytes:
        return _compact(
            {
                "format": FORMAT,
                "created": self.created,
                "task": dict(self.task),
                "files": self._files_json(),
            }
        )

    def _files_json(self) -> list[dict[str, object]]:
        return [{"name": f.name, "digest": str(f.digest), "size": f.size} for f in self.files]

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        """Read a manifest; anything else is a :class:`DataError` naming ``where``."""
        try:
            obj = json.loads(data)
            if obj.get("format") != FORMAT:
                raise ValueError(f"format {obj.get('format')!r}, not {FORMAT!r}")
            files = tuple(
                ManifestFile(_text(f["name"]), Digest.parse(_text(f["digest"])), _size(f["size"]))
                for f in obj["files"]
            )
            task = {str(k): v for k, v in dict(obj.get("task") or {}).items()}
            return cls(files, task, str(obj.get("created", "")))
        except (ValueError, TypeError, KeyError, AttributeError, DataError) as exc:
            raise DataError(f"{where} is not a taskkit manifest: {exc}") from exc

    def same_files(self, other: Manifest) -> bool:
        """Whether both publish the same content under the same names, for the same work
        (a checkpoint is restored only for the fingerprint its manifest names)."""
        return self.files == other.files and self.task.get("fingerprint") == other.task.get(
            "fingerprint"
        )

    def said_by(self, data: bytes) -> bool:
        """Whether the manifest ``data`` publishes what this one does (:meth:`same_files`),
        told without a value per file: its files, written as this one writes them, must be
        exactly this one's, so a manifest spelt otherwise (or no manifest) counts as
        different and is rewritten, never the other way round."""
        files_json = self._files_json()
        # As this one writes it, the files come last: when the bytes end in exactly those
        # files, only the rest (format and task) is parsed, a small part of a large manifest.
        tail = b',"files":' + _compact(files_json) + b"}"
        if data.endswith(tail):
            try:
                head = json.loads(data[: -len(tail)] + b"}")
            except ValueError:
                head = None
            if isinstance(head, dict):
                return self._same_task(head)
        try:
            obj = json.loads(data)
        except ValueError:
            return False
        if not isinstance(obj, dict) or not self._same_task(obj):
            return False
        files = obj.get("files")
        # Equal dicts, and each size an int: JSON's true and 1.0 equal 1 in Python.
        return files == files_json and all(type(f["size"]) is int for f in files)

    def _same_task(self, obj: dict[str, object]) -> bool:
        """Whether the manifest read as ``obj`` is of this format and this one's fingerprint."""
        if obj.get("format") != FORMAT:
            return False
        task = obj.get("task")
        if task is not None and not isinstance(task, dict):
            return False
        return bool((task or {}).get("fingerprint") == self.task.get("fingerprint"))


def _compact(value: object) -> bytes:
    """``value`` in JSON as a manifest is written: no spaces, UTF-8 as it is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _size(value: object) -> int:
    if type(value) is not int or value < 0:
        raise TypeError(f"{value!r} is not a size")
    return value


def task_identity(environ: Mapping[str, str] | None = None) -> dict[str, str | int]:
    """The task an upload runs in, as far as the environment tells."""
    env = os.environ if environ is None else environ
    found: dict[str, str | int] = {}
    for field, variable in _TASK_VARIABLES.items():
        value = env.get(variable)
        if value:
            found[field] = int(value) if field == "attempt" and value.isdigit() else value
    return found
