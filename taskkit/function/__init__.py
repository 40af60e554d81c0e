"""Python functions as goal-seeking tasks: ``@taskkit.task``, their keys, results and failures."""
