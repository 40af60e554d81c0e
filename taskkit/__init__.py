"""taskkit: goal-seeking, idempotent tasks for Azure Batch.

The public API is what ``__all__`` lists; everything else is private and may change.
"""

from taskkit.chunkio import hash_chunks
from taskkit.command import Finished, run_logged
from taskkit.digest import CHUNK_SIZE, Digest, StreamHasher, combine_chunks, hash_bytes
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    IOFailure,
    MisuseError,
    PermissionDenied,
    TaskFailure,
    TaskkitError,
    TransientError,
    UsageError,
)
from taskkit.hashing import FileDigest, HashResult, hash_file, hash_paths
from taskkit.logs import LogSink
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

__version__ = "0.1.0"

__all__ = [
    "CHUNK_SIZE",
    "ConfigError",
    "DataError",
    "Digest",
    "Failed",
    "FileDigest",
    "Finished",
    "HashResult",
    "IOFailure",
    "Input",
    "InputNotFound",
    "LogSink",
    "Manifest",
    "ManifestFile",
    "MisuseError",
    "NodeCache",
    "Output",
    "PermissionDenied",
    "Plan",
    "PlanEntry",
    "RemoteFile",
    "RetryBudget",
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
    "__version__",
    "combine_chunks",
    "default_cache_dir",
    "hash_bytes",
    "hash_chunks",
    "hash_file",
    "hash_paths",
    "run_logged",
    "stage",
    "upload",
]
