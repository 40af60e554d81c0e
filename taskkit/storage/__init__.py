"""The one boundary to remote storage: the store contract, opening URLs, errors, retries,
backends."""
