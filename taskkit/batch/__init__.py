"""Azure Batch: the task JSON that runs ``taskkit run`` (and, later, submitting it)."""
