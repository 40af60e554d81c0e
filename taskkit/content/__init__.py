"""What bytes are: digests, chunked reads, hashing, the stat-cache and walking paths (local
only)."""
