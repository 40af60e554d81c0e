"""An example pipeline of task functions: stage a reference dataset, clean its shards in
nested tasks, publish the results. Run it with ``python -m pipeline`` (see README.md)."""
