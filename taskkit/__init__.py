"""taskkit: goal-seeking, idempotent tasks for Azure Batch.

The public API is what ``__all__`` lists; everything else is private and may change. The
runner's names (the journal, the spec, the exit-code policy) are imported on first use, so
``import taskkit`` and the transfer commands do not pay for pydantic.
"""

from typing import TYPE_CHECKING, Any

from taskkit.chunkio import hash_chunks
from taskkit.command import Finished, run_logged
from taskkit.digest import CHUNK_SIZE, Digest, StreamHasher, combine_chunks, hash_bytes
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    IOFailure,
    LinkOut,
    LocalPermissionDenied,
    MisuseError,
    PermissionDenied,
    TaskFailure,
    TaskkitError,
    TransientError,
    UsageError,
)
from taskkit.hashing import FileDigest, HashResult, hash_file, hash_paths
from taskkit.logs import LogSink, Phase
from taskkit.manifest import Manifest, ManifestFile
from taskkit.nodecache import NodeCache
from taskkit.outputs import UploadEntry, UploadPlan
from taskkit.patterns import Output
from taskkit.retry import RetryBudget
from taskkit.stager import Summary, stage
from taskkit.staging import Input, Plan, PlanEntry
from taskkit.statcache import StatCache, default_cache_dir
from taskkit.storage import RemoteFile
from taskkit.upload import upload
from taskkit.walk import Failed, Skipped

if TYPE_CHECKING:
    from taskkit.codes import CodeSet
    from taskkit.journal import Journal
    from taskkit.policy import (
        Decision,
        Ending,
        ExitPolicy,
        Verdict,
        on_signal,
        permanent_codes,
        retryable_codes,
        success_codes,
    )
    from taskkit.runner import run
    from taskkit.spec import RunSpec
    from taskkit.steps import run_step

__version__ = "0.1.0"

#: Public names imported on first use, and the module each comes from.
_LAZY = {
    "CodeSet": "taskkit.codes",
    "Decision": "taskkit.policy",
    "Ending": "taskkit.policy",
    "ExitPolicy": "taskkit.policy",
    "Journal": "taskkit.journal",
    "RunSpec": "taskkit.spec",
    "Verdict": "taskkit.policy",
    "on_signal": "taskkit.policy",
    "permanent_codes": "taskkit.policy",
    "retryable_codes": "taskkit.policy",
    "run": "taskkit.runner",
    "run_step": "taskkit.steps",
    "success_codes": "taskkit.policy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CHUNK_SIZE",
    "CodeSet",
    "ConfigError",
    "DataError",
    "Decision",
    "Digest",
    "Ending",
    "ExitPolicy",
    "Failed",
    "FileDigest",
    "Finished",
    "HashResult",
    "IOFailure",
    "Input",
    "InputNotFound",
    "Journal",
    "LinkOut",
    "LocalPermissionDenied",
    "LogSink",
    "Manifest",
    "ManifestFile",
    "MisuseError",
    "NodeCache",
    "Output",
    "PermissionDenied",
    "Phase",
    "Plan",
    "PlanEntry",
    "RemoteFile",
    "RetryBudget",
    "RunSpec",
    "Skipped",
    "StatCache",
    "StreamHasher",
    "Summary",
    "TaskFailure",
    "TaskkitError",
    "TransientError",
    "UploadEntry",
    "UploadPlan",
    "UsageError",
    "Verdict",
    "__version__",
    "combine_chunks",
    "default_cache_dir",
    "hash_bytes",
    "hash_chunks",
    "hash_file",
    "hash_paths",
    "on_signal",
    "permanent_codes",
    "retryable_codes",
    "run",
    "run_logged",
    "run_step",
    "stage",
    "success_codes",
    "upload",
]
