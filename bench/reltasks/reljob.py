"""The work of the reliability job (``bench/rel_chaos.py``): the bodies of its shell tasks'
steps, as a small program, and what its task functions (``relfn``) compute.

Everything here is deterministic: the same input gives the same bytes, on any node, after any
number of kills. Only the standard library is imported, so a step body starts in a few
milliseconds and a kill lands in the work, not in an import.

Each body tells the log named by ``REL_LOG`` what it does, one line per ``write()`` on a file
opened for appending (so lines of concurrent tasks never interleave). The log lies outside the
emulator's folder, which a preemption wipes:

    start TASK STEP ATTEMPT       a step's body began
    end TASK STEP ATTEMPT         it finished (its step may still be killed before it is recorded)
    done TASK STEP                the step is recorded done (written by the caller, after
                                  ``taskkit step`` or the inner task returned)
    iter TASK STEP I T0 T1 ATTEMPT   one iteration of a checkpointed loop, with its times

Usage (the steps of ``shell_task.sh``)::

    python reljob.py digest TASK SRC DEST     # DEST: a digest of SRC and TASK, spread to 64 KiB
    python reljob.py iterate TASK SRC DEST    # a checkpointed loop over SRC's digest
    python reljob.py render TASK DEST SRC...  # the task's output from its steps' files
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

#: How long a step's body works (so a kill lands inside it).
STEP_SECONDS = float(os.environ.get("REL_STEP_SECONDS", "0.15"))
#: The checkpointed loop: how many iterations, each taking this long.
ITERATIONS = int(os.environ.get("REL_ITERATIONS", "6"))
ITERATION_SECONDS = float(os.environ.get("REL_ITERATION_SECONDS", "0.06"))
SPREAD = 64 * 1024


def log(*words: object) -> None:
    """Append one line to ``REL_LOG`` (nothing without it)."""
    path = os.environ.get("REL_LOG")
    if not path:
        return
    line = (" ".join(str(w) for w in words) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def spread(seed: bytes, size: int = SPREAD) -> bytes:
    """``size`` bytes that depend on every bit of ``seed``: a SHA-256 counter stream."""
    blocks = (hashlib.sha256(seed + n.to_bytes(8, "little")).digest() for n in range(size // 32))
    return b"".join(blocks)


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def iterate(task: str, step: str, seed: str, checkpoint: Path | None, attempt: object) -> str:
    """The checkpointed loop: ``ITERATIONS`` rounds of hashing, each noted in ``checkpoint``
    (written atomically) so a restart resumes after the last round the checkpoint kept."""
    state = checkpoint / f"{task}-{step}.json" if checkpoint is not None else None
    done, value = 0, seed
    if state is not None and state.is_file():
        kept = json.loads(state.read_text())
        if kept.get("seed") == seed:
            done, value = int(kept["done"]), str(kept["value"])
    for i in range(done, ITERATIONS):
        started = time.time()
        time.sleep(ITERATION_SECONDS)
        value = hashlib.sha256(f"{value}/{i}".encode()).hexdigest()
        log("iter", task, step, i, f"{started:.3f}", f"{time.time():.3f}", attempt)
        if state is not None:
            record = {"seed": seed, "done": i + 1, "value": value}
            write_atomically(state, json.dumps(record).encode())
    return value


def main(argv: list[str]) -> int:
    command, task, *paths = argv
    attempt = os.environ.get("TASKKIT_ATTEMPT", "?")
    if command != "render":  # not a step: it runs in every attempt that gets that far
        log("start", task, command, attempt)
    if command == "digest":
        src, dest = (Path(p) for p in paths)
        time.sleep(STEP_SECONDS)
        seed = hashlib.sha256(task.encode() + b"\0" + src.read_bytes()).digest()
        write_atomically(dest, spread(seed))
    elif command == "iterate":
        src, dest = (Path(p) for p in paths)
        seed = hashlib.sha256(src.read_bytes()).hexdigest()
        where = os.environ.get("TASKKIT_CHECKPOINT_DIR")
        value = iterate(task, command, seed, Path(where) if where else None, attempt)
        write_atomically(dest, spread(value.encode()))
    elif command == "render":
        dest, *sources = (Path(p) for p in paths)
        text = "".join(f"{s.name} {hashlib.sha256(s.read_bytes()).hexdigest()}\n" for s in sources)
        write_atomically(dest, f"task {task}\n{text}".encode())
    else:
        print(f"reljob: unknown command {command!r}", file=sys.stderr)
        return 2
    if command != "render":
        log("end", task, command, attempt)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
