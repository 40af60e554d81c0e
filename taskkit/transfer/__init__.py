"""Moving files: staging inputs (plan, download, node cache) and uploading outputs (plan, upload,
manifest)."""
