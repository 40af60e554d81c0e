"""Azure Batch: the task JSON that runs ``taskkit run`` (taskjson), and the emulated pool of
``taskkit local run`` (tasks, emulator, chaos, report)."""
