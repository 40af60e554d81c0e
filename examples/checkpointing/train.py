"""A training loop that survives preemption: it writes its progress to $TASKKIT_CHECKPOINT_DIR
and resumes from the latest checkpoint it finds there.

A linear model fitted by minibatch SGD, in plain Python so that it runs anywhere: each step
draws a minibatch, computes the gradient and updates the weights. Every --every steps the
whole state (step, weights, the random generator's state) is written to
$TASKKIT_CHECKPOINT_DIR/state.json atomically: written to a temporary file beside the
checkpoint directory, flushed to disk, then renamed over the old one. A kill at any moment
leaves either the previous checkpoint or the new one, never half of one. With the generator's
state in the checkpoint, a resumed run draws the same minibatches as an uninterrupted one, so
its result is the same, bit for bit.

    python train.py [--steps 1000] [--every 10] [--batch 2560] [--out result.json]
    python train.py --account LEDGER     # what the ledger says was computed again and saved

When TRAIN_LEDGER names a file, every step computed appends one line to it (attempt, node,
step, seconds), and every start one line saying where it resumed: the example counts the work
with it, in a file outside the node, which a preemption does not wipe. A real job has no need
of it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

FEATURES = 16
SAMPLES = 4000
SEED = 2026
RATE = 0.02


def dataset() -> tuple[list[list[float]], list[float]]:
    """The same synthetic data on every node: y = x . w_true + noise."""
    rng = random.Random(SEED)
    w_true = [rng.uniform(-2.0, 2.0) for _ in range(FEATURES)]
    xs = [[rng.gauss(0.0, 1.0) for _ in range(FEATURES)] for _ in range(SAMPLES)]
    ys = [sum(a * b for a, b in zip(x, w_true, strict=True)) + rng.gauss(0.0, 0.1) for x in xs]
    return xs, ys


def step(
    weights: list[float], xs: list[list[float]], ys: list[float], rng: random.Random, batch: int
) -> float:
    """One SGD step on a minibatch drawn from ``rng``, in place; the minibatch's loss."""
    grad = [0.0] * FEATURES
    loss = 0.0
    for _ in range(batch):
        i = rng.randrange(SAMPLES)
        x = xs[i]
        err = sum(a * b for a, b in zip(x, weights, strict=True)) - ys[i]
        loss += err * err
        for j in range(FEATURES):
            grad[j] += err * x[j]
    for j in range(FEATURES):
        weights[j] -= RATE * grad[j] / batch
    return loss / batch


def load(directory: Path) -> dict[str, Any] | None:
    """The latest checkpoint, or None. A leftover temporary file is not a checkpoint."""
    try:
        state: dict[str, Any] = json.loads((directory / "state.json").read_text())
    except FileNotFoundError:
        return None
    return state


def save(directory: Path, state: dict[str, Any]) -> None:
    """Replace the checkpoint atomically: a temporary file written and flushed to disk, then
    renamed over the old one (a rename within one filesystem is atomic). The temporary file
    lies outside the checkpoint directory, so a sync never meets a half-written one."""
    final = directory / "state.json"
    temporary = directory.parent / f".{directory.name}-state.json.tmp"
    with open(temporary, "w") as file:
        json.dump(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, final)


class Ledger:
    """One JSON line per step computed, appended straight to the file (a kill loses none)."""

    def __init__(self, path: str | None) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None
        self.attempt = os.environ.get("TASKKIT_ATTEMPT", "-")
        self.node = os.environ.get("AZ_BATCH_NODE_ID", "-")

    def write(self, **fields: object) -> None:
        if self.fd is not None:
            line = {"attempt": self.attempt, "node": self.node, **fields}
            os.write(self.fd, (json.dumps(line) + "\n").encode())


def train(steps: int, every: int, batch: int, directory: Path, out: Path) -> dict[str, Any]:
    xs, ys = dataset()
    ledger = Ledger(os.environ.get("TRAIN_LEDGER"))
    state = load(directory)
    if state is not None and (state["steps"], state["batch"]) != (steps, batch):
        sys.exit(f"train: {directory / 'state.json'} is a checkpoint of another run")
    if state is None:
        rng = random.Random(SEED + 1)
        state = {"steps": steps, "batch": batch, "step": 0, "weights": [0.0] * FEATURES}
        print(f"no checkpoint: starting at step 0 of {steps}", flush=True)
    else:
        rng = random.Random()
        rng.setstate(_rng_state(state["rng"]))
        print(f"resumed at step {state['step']} of {steps} from its checkpoint", flush=True)
    ledger.write(resumed=state["step"], steps=steps)
    weights: list[float] = state["weights"]
    loss = float("nan")
    for n in range(state["step"], steps):
        began = time.perf_counter()
        loss = step(weights, xs, ys, rng, batch)
        ledger.write(step=n, seconds=time.perf_counter() - began)
        done = n + 1
        if done % every == 0 or done == steps:
            save(directory, {**state, "step": done, "weights": weights, "rng": rng.getstate()})
        if done % 100 == 0:
            print(f"step {done}: loss {loss:.6f}", flush=True)
    result = {"steps": steps, "batch": batch, "loss": loss, "weights": weights}
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _rng_state(saved: list[Any]) -> tuple[Any, ...]:
    """random.Random.getstate() as JSON gave it back: lists where it had tuples."""
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


def account(path: Path) -> str:
    """What the ledger says: where the last attempt resumed, and the seconds of work the
    earlier attempts did, split into the part computed again and the part kept."""
    starts: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        (starts if "resumed" in record else runs).append(record)
    if not starts:
        return "the ledger is empty: nothing ran"
    steps = starts[-1]["steps"]
    last = starts[-1]["attempt"], starts[-1]["node"]
    earlier = [r for r in runs if (r["attempt"], r["node"]) != last]
    final = {r["step"] for r in runs if (r["attempt"], r["node"]) == last}
    before = sum(r["seconds"] for r in earlier)
    again = sum(r["seconds"] for r in earlier if r["step"] in final)
    computed = len(runs)
    lines = [
        f"{computed} steps computed for {steps} ({computed - len({r['step'] for r in runs})} "
        f"of them again), in {len(starts)} attempts: "
        + ", ".join(
            f"attempt {s['attempt']} on {s['node']} from step {s['resumed']}" for s in starts
        )
    ]
    if len(starts) == 1:
        lines.append("no attempt was interrupted: nothing was recomputed")
    else:
        lines.append(
            f"resumed at step {starts[-1]['resumed']} of {steps}: {again:.1f} s of {before:.1f} s "
            f"recomputed, {before - again:.1f} s saved"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps in all (1000)")
    parser.add_argument("--every", type=int, default=10, help="steps between checkpoints (10)")
    parser.add_argument("--batch", type=int, default=2560, help="samples a step (2560)")
    parser.add_argument("--out", type=Path, default=Path("result.json"), help="the result")
    parser.add_argument("--account", type=Path, metavar="LEDGER", help="read a ledger instead")
    args = parser.parse_args()
    if args.account:
        print(account(args.account))
        return
    where = os.environ.get("TASKKIT_CHECKPOINT_DIR")
    if not where:
        sys.exit("train: TASKKIT_CHECKPOINT_DIR is not set (run it under taskkit run)")
    directory = Path(where)
    directory.mkdir(parents=True, exist_ok=True)
    result = train(args.steps, args.every, args.batch, directory, args.out)
    print(f"done: {result['steps']} steps, loss {result['loss']:.6f}", flush=True)


if __name__ == "__main__":
    main()
