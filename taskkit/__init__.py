"""taskkit: goal-seeking, idempotent tasks for Azure Batch.

The public API is what ``__all__`` lists; everything else is private and may change. Every
name but the exceptions and ``__version__`` is imported on first use, so ``import taskkit``
costs almost nothing and each command pays only for the wings it uses (``taskkit hash`` starts
without the runner, storage or transfer wings).

What the library has to say goes to an observer (:mod:`taskkit.observer`), by default records
of the ``"taskkit"`` logger, which gets a ``NullHandler`` here: a program that configures no
logging hears nothing from taskkit.
"""

import logging
from typing import TYPE_CHECKING, Any

from taskkit.exceptions import (
    BadTask,
    ConfigError,
    Conflict,
    DataError,
    InputNotFound,
    IOFailure,
    LinkOut,
    LocalPermissionDenied,
    MisuseError,
    PermissionDenied,
    SourceChanged,
    TaskFailure,
    TaskkitError,
    TransientError,
    UsageError,
)

if TYPE_CHECKING:
    from taskkit.content.chunkio import hash_chunks
    from taskkit.content.digest import CHUNK_SIZE, Digest, StreamHasher, combine_chunks, hash_bytes
    from taskkit.content.hashing import FileDigest, HashResult, hash_file, hash_paths
    from taskkit.content.statcache import StatCache, default_cache_dir
    from taskkit.content.walk import Failed, Skipped
    from taskkit.function.context import attempt, checkpoint_dir, is_last_attempt
    from taskkit.function.deadline import DeadlineReached
    from taskkit.function.failures import Permanent, PermanentFailure, Retryable
    from taskkit.function.plan import CallPlan, Explanation
    from taskkit.function.spec import staged
    from taskkit.function.task import Task, explain, task
    from taskkit.observer import LoggingObserver, NullObserver, Observer, Observers, Progress
    from taskkit.runner.codes import CodeSet
    from taskkit.runner.command import Finished, run_logged
    from taskkit.runner.journal import Journal
    from taskkit.runner.logs import LogSink, Phase
    from taskkit.runner.policy import (
        Decision,
        Ending,
        ExitPolicy,
        Verdict,
        on_signal,
        permanent_codes,
        retryable_codes,
        success_codes,
    )
    from taskkit.runner.run import run
    from taskkit.runner.spec import RunSpec
    from taskkit.runner.steps import run_step
    from taskkit.storage.base import RemoteFile
    from taskkit.storage.retry import RetryBudget
    from taskkit.storage.stores import Stores
    from taskkit.transfer.manifest import Manifest, ManifestFile
    from taskkit.transfer.nodecache import NodeCache
    from taskkit.transfer.patterns import Output
    from taskkit.transfer.stage import stage
    from taskkit.transfer.stage_plan import Input, Plan, PlanEntry
    from taskkit.transfer.summary import Summary
    from taskkit.transfer.upload import upload
    from taskkit.transfer.upload_plan import UploadEntry, UploadPlan

from taskkit._version import __version__

logging.getLogger("taskkit").addHandler(logging.NullHandler())

#: Public names imported on first use, and the module each comes from.
_LAZY = {
    "hash_chunks": "taskkit.content.chunkio",
    "CHUNK_SIZE": "taskkit.content.digest",
    "Digest": "taskkit.content.digest",
    "StreamHasher": "taskkit.content.digest",
    "combine_chunks": "taskkit.content.digest",
    "hash_bytes": "taskkit.content.digest",
    "FileDigest": "taskkit.content.hashing",
    "HashResult": "taskkit.content.hashing",
    "hash_file": "taskkit.content.hashing",
    "hash_paths": "taskkit.content.hashing",
    "StatCache": "taskkit.content.statcache",
    "default_cache_dir": "taskkit.content.statcache",
    "Failed": "taskkit.content.walk",
    "Skipped": "taskkit.content.walk",
    "LoggingObserver": "taskkit.observer",
    "NullObserver": "taskkit.observer",
    "Observer": "taskkit.observer",
    "Observers": "taskkit.observer",
    "Progress": "taskkit.observer",
    "Finished": "taskkit.runner.command",
    "run_logged": "taskkit.runner.command",
    "LogSink": "taskkit.runner.logs",
    "Phase": "taskkit.runner.logs",
    "RemoteFile": "taskkit.storage.base",
    "RetryBudget": "taskkit.storage.retry",
    "Stores": "taskkit.storage.stores",
    "Manifest": "taskkit.transfer.manifest",
    "ManifestFile": "taskkit.transfer.manifest",
    "NodeCache": "taskkit.transfer.nodecache",
    "Output": "taskkit.transfer.patterns",
    "stage": "taskkit.transfer.stage",
    "Input": "taskkit.transfer.stage_plan",
    "Plan": "taskkit.transfer.stage_plan",
    "PlanEntry": "taskkit.transfer.stage_plan",
    "Summary": "taskkit.transfer.summary",
    "upload": "taskkit.transfer.upload",
    "UploadEntry": "taskkit.transfer.upload_plan",
    "UploadPlan": "taskkit.transfer.upload_plan",
    "CallPlan": "taskkit.function.plan",
    "DeadlineReached": "taskkit.function.deadline",
    "Explanation": "taskkit.function.plan",
    "Permanent": "taskkit.function.failures",
    "PermanentFailure": "taskkit.function.failures",
    "Retryable": "taskkit.function.failures",
    "Task": "taskkit.function.task",
    "attempt": "taskkit.function.context",
    "checkpoint_dir": "taskkit.function.context",
    "explain": "taskkit.function.task",
    "is_last_attempt": "taskkit.function.context",
    "staged": "taskkit.function.spec",
    "task": "taskkit.function.task",
    "CodeSet": "taskkit.runner.codes",
    "Decision": "taskkit.runner.policy",
    "Ending": "taskkit.runner.policy",
    "ExitPolicy": "taskkit.runner.policy",
    "Journal": "taskkit.runner.journal",
    "RunSpec": "taskkit.runner.spec",
    "Verdict": "taskkit.runner.policy",
    "on_signal": "taskkit.runner.policy",
    "permanent_codes": "taskkit.runner.policy",
    "retryable_codes": "taskkit.runner.policy",
    "run": "taskkit.runner.run",
    "run_step": "taskkit.runner.steps",
    "success_codes": "taskkit.runner.policy",
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
    "BadTask",
    "CallPlan",
    "CodeSet",
    "ConfigError",
    "Conflict",
    "DataError",
    "DeadlineReached",
    "Decision",
    "Digest",
    "Ending",
    "ExitPolicy",
    "Explanation",
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
    "LoggingObserver",
    "Manifest",
    "ManifestFile",
    "MisuseError",
    "NodeCache",
    "NullObserver",
    "Observer",
    "Observers",
    "Output",
    "Permanent",
    "PermanentFailure",
    "PermissionDenied",
    "Phase",
    "Plan",
    "PlanEntry",
    "Progress",
    "RemoteFile",
    "RetryBudget",
    "Retryable",
    "RunSpec",
    "Skipped",
    "SourceChanged",
    "StatCache",
    "Stores",
    "StreamHasher",
    "Summary",
    "Task",
    "TaskFailure",
    "TaskkitError",
    "TransientError",
    "UploadEntry",
    "UploadPlan",
    "UsageError",
    "Verdict",
    "__version__",
    "attempt",
    "checkpoint_dir",
    "combine_chunks",
    "default_cache_dir",
    "explain",
    "hash_bytes",
    "hash_chunks",
    "hash_file",
    "hash_paths",
    "is_last_attempt",
    "on_signal",
    "permanent_codes",
    "retryable_codes",
    "run",
    "run_logged",
    "run_step",
    "stage",
    "staged",
    "success_codes",
    "task",
    "upload",
]
