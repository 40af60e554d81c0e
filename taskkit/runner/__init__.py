"""Tasks: the spec, the journal, the goal, the exit-code policy, attempts, steps, checkpoints and
logs."""
