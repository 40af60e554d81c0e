"""The task functions of the reliability job (``bench/rel_chaos.py``), run by ``taskkit call
relfn:pipeline name=NAME`` (``--path`` this folder).

``pipeline`` stages the shared input (through the node cache), runs two inner task functions
(its steps: a finished one returns its stored result and is not run again), then a loop that
keeps its progress in ``taskkit.checkpoint_dir()``, and publishes ``fout/NAME.txt``. Where the
trial keeps things comes from the environment, read once at import: ``REL_ROOT`` (the trial's
``az://`` prefix) and ``REL_SHARED`` (the shared input's URL); the log lines are ``reljob``'s.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import reljob

import taskkit

ROOT = os.environ.get("REL_ROOT", "az://rel/unset")
SHARED = os.environ.get("REL_SHARED", "az://rel/input/shared.bin")


@taskkit.task
def fstep(name: str, seed: str, n: int) -> str:
    """One step of ``pipeline``: a body that takes a moment and logs its start and end."""
    reljob.log("start", name, f"f{n}", taskkit.attempt())
    time.sleep(reljob.STEP_SECONDS)
    value = hashlib.sha256(f"{seed}/{n}".encode()).hexdigest()
    reljob.log("end", name, f"f{n}", taskkit.attempt())
    return value


@taskkit.task(inputs={"shared": SHARED}, outputs={"fout/*": f"{ROOT}/out/fn/"})
def pipeline(name: str, *, shared: Path = taskkit.staged) -> str:
    """The function task: two steps, a checkpointed loop, one published file."""
    seed = hashlib.sha256(name.encode() + b"\0" + shared.read_bytes()).hexdigest()
    values = []
    for n in (1, 2):
        values.append(fstep(name, seed, n))
        reljob.log("done", name, f"f{n}")
    value = reljob.iterate(name, "floop", values[-1], taskkit.checkpoint_dir(), taskkit.attempt())
    reljob.write_atomically(Path("fout", f"{name}.txt"), reljob.spread(value.encode()))
    return value
