"""taskkit: goal-seeking, idempotent tasks for Azure Batch.

The public API is what ``__all__`` lists; everything else is private and may change.
"""

from taskkit.chunkio import hash_chunks
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
from taskkit.statcache import StatCache, default_cache_dir
from taskkit.walk import Failed, Skipped

__version__ = "0.1.0"

__all__ = [
    "CHUNK_SIZE",
    "ConfigError",
    "DataError",
    "Digest",
    "Failed",
    "FileDigest",
    "HashResult",
    "IOFailure",
    "InputNotFound",
    "MisuseError",
    "PermissionDenied",
    "Skipped",
    "StatCache",
    "StreamHasher",
    "TaskFailure",
    "TaskkitError",
    "TransientError",
    "UsageError",
    "__version__",
    "combine_chunks",
    "default_cache_dir",
    "hash_bytes",
    "hash_chunks",
    "hash_file",
    "hash_paths",
]
