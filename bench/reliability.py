"""The reliability suites of taskkit's promises, run and printed as one table.

R1 chaos and R2 storage faults (``rel_chaos.py``), R3 the bad-input corpus (``bad_inputs.py``),
R4 the node cache under load (``rel_cache.py``), R5 secrets (``rel_secrets.py``). Each suite
runs its own Azurite and returns ``{"name", "rows": [(metric, value), ...], "problems": [...]}``;
empty problems mean every invariant it checks held. A suite whose module is not there is
named as missing (and counts as a problem when asked for by name). ``--size ci`` keeps each
suite near a minute; ``--size full`` runs the sizes of the issue (200 trials for R1).

Run: ``.venv/bin/python bench/reliability.py [--suite R1,R2,R3,R4,R5] [--size ci|full]
[--scratch DIR]`` (Azurite from ``TASKKIT_AZURITE`` or ``.azurite/``). Exits 1 when a suite
found a problem.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchlib import load, report_anomalies, run_main

Suite = Callable[[str, Path], dict[str, Any]]

#: Each suite: its module, and the function of it that runs the suite.
SUITES = {
    "R1": ("rel_chaos", "suite"),
    "R2": ("rel_chaos", "suite_r2"),
    "R3": ("bad_inputs", "run_all"),
    "R4": ("rel_cache", "suite"),
    "R5": ("rel_secrets", "suite"),
}


def find(suite: str) -> Suite | None:
    """The function that runs ``suite``, imported only now (None when its module is not
    there yet)."""
    module_name, function = SUITES[suite]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    found = getattr(module, function)
    return corpus(found) if function == "run_all" else found


def corpus(run_all: Callable[..., list[tuple[Any, list[str]]]]) -> Suite:
    """R3 as a suite: ``bad_inputs.run_all`` runs every case; a row per command."""

    def suite(size: str, scratch: Path) -> dict[str, Any]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
        results = run_all(scratch, env, jobs=2)
        total = Counter(str(case.command) for case, _ in results)
        failed = Counter(str(case.command) for case, problems in results if problems)
        rows = [("cases (passing)", f"{len(results)} ({len(results) - sum(failed.values())})")]
        rows += [
            (f"  {command}", f"{n - failed[command]} of {n} pass")
            for command, n in sorted(total.items())
        ]
        problems = [f"{case.name}: {p}" for case, found in results for p in found]
        return {"name": "R3 bad-input corpus", "rows": rows, "problems": problems}

    return suite


def run(suite: str, size: str, scratch: Path) -> tuple[dict[str, Any], float]:
    """One suite's result and its seconds; a suite that raised is a problem, not a crash."""
    started = time.monotonic()
    found = find(suite)
    if found is None:
        module = SUITES[suite][0]
        result = {"name": suite, "rows": [], "problems": [f"bench/{module}.py is not there"]}
        return result, 0.0
    folder = scratch / suite
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        result = found(size, folder)
    except Exception as exc:  # the table still shows the other suites
        lines = traceback.format_exception(exc)
        result = {"name": suite, "rows": [], "problems": [f"raised: {''.join(lines).strip()}"]}
    return result, time.monotonic() - started


def print_table(results: Sequence[tuple[dict[str, Any], float]]) -> None:
    """One block per suite: its rows, its verdict and its seconds."""
    width = max((len(str(m)) for r, _ in results for m, _ in r["rows"]), default=20)
    for result, seconds in results:
        verdict = "held" if not result["problems"] else f"{len(result['problems'])} PROBLEMS"
        print(f"{result['name']}  ({verdict}, {seconds:.0f} s)")
        for metric, value in result["rows"]:
            print(f"  {metric:<{width}}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default=",".join(SUITES), help="e.g. R1,R2 (default: all)")
    parser.add_argument("--size", choices=("ci", "full"), default="ci")
    parser.add_argument("--scratch", type=Path, help="where the suites work (default: a "
                        "temporary folder, removed at the end)")  # fmt: skip
    args = parser.parse_args()
    chosen = [s.strip().upper() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)} (choose from {', '.join(SUITES)})")
    print(f"reliability suites {','.join(chosen)} at size {args.size}; load average {load()}")
    with tempfile.TemporaryDirectory(prefix="taskkit-reliability-") as tmp:
        scratch = args.scratch.resolve() if args.scratch else Path(tmp)
        results = []
        for suite in chosen:
            results.append(run(suite, args.size, scratch))
            print(f"  {suite} done in {results[-1][1]:.0f} s", flush=True)
    print()
    print_table(results)
    problems = [f"{r['name']}: {p}" for r, _ in results for p in r["problems"]]
    return report_anomalies(problems, "every invariant held")


if __name__ == "__main__":
    run_main(main)
