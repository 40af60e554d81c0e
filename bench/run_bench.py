"""What ``taskkit run`` costs when it wraps a command that does nothing, or has nothing to do.

Every run is a whole process, timed from before its spawn to after its reap (interpreter
start-up and imports included), under ``/usr/bin/time`` for the peak RSS and the CPU time
(user + system) of that process alone. The variants of a section take turns run by run
(a, b, c, a, b, c, ...) so that a noisy neighbour hurts them all alike; each number is the
median (and the minimum) of ``--runs`` runs (default 7), and the result is the ratio against
anchors measured in the same run; next to each ratio with a target, the same ratio of CPU times,
the steadier measure when the machine is busy.

1. LOCAL state (``--state file://TMP/state``), no inputs, no outputs:

   a. ``taskkit run --state file://TMP/state --job-id b --task-id tN -- true``, a fresh task id
      each run, so the command always runs: the journal is read, attempt 1 is recorded, the
      logs are kept, the outcome is recorded;
   b. the same with a task that already succeeded: the goal is met, the command is not run;
   c. the dependency floor ``python -c 'import click, pydantic, fsspec, xxhash'`` (the
      interpreter taskkit runs on), and the anchors ``sh -c true``, ``python -c pass`` and
      ``taskkit --version`` (start-up and the command line's imports).

   Target: a <= 1.5 x the floor.

2. AZURE goal met (a private Azurite server this script starts, ``taskkit.testing.Azurite``):
   a task that succeeded once (one ``-i az://data/in/input.txt=input.txt`` input, one
   ``-o 'res/**=az://out/r/'`` output), run again with the same command line: its journal and
   its input are read, nothing is written, the command is not run. Next to the floor: a bare
   Python process that imports adlfs and reads one blob (``fs.cat_file('data/in/input.txt')``;
   the connection string comes from the environment), and ``python -c 'import adlfs'``. The
   requests of every goal-met run are counted from Azurite's debug log: none may write.

   Target: goal met <= 1.5 x the floor.

When a target is missed (or with ``--profile``) the variant is profiled: ``-X importtime`` (the
import time of each top-level package, next to the floor's, over 3 runs) and cProfile of one
run in process (the functions that take the most time, imports included).

Azurite is one Node.js process sharing the machine's CPUs with the client under test; the
absolute times say little, the ratios against the anchors are the result. ``--quick`` runs each
variant 3 times, for a smoke run. Needs Azurite (``make test`` installs it).

Run: ``.venv/bin/python bench/run_bench.py [--runs N] [--quick] [--profile]``
"""

from __future__ import annotations

import argparse
import collections
import compileall
import json
import os
import platform
import pstats
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from benchlib import (
    TIME,
    Proc,
    Spread,
    Timing,
    cpu_model,
    cpu_times,
    load,
    op_counts,
    output,
    print_load,
    print_ratio,
    print_ratio_header,
    print_table,
    report_anomalies,
    run_main,
    short_path,
    spawn,
)

import taskkit
from taskkit.testing import Azurite, find_azurite

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python")
TASKKIT = str(BIN / "taskkit")
BUSY = 0.15
TARGET = "<= 1.5"
RATIO_WIDTH = 70
WRITES = frozenset(
    {
        "BlockBlob_Upload",
        "BlockBlob_StageBlock",
        "BlockBlob_CommitBlockList",
        "AppendBlob_Create",
        "AppendBlob_AppendBlock",
        "Blob_Delete",
        "Container_Create",
        "Blob_SetMetadata",
    }
)
DEPENDENCIES = "import click, pydantic, fsspec, xxhash"
INPUT = "data/in/input.txt"
#: How the requests of a run are counted: "2 Blob_Download, 1 Container_GetProperties".
OPS = "{n} {op}"
COMMAND = ["sh", "-c", "mkdir -p res && cp input.txt res/output.txt"]

#: One ``taskkit`` command line under cProfile, in process (argv: PROFILE_OUT ARGS...).
PROFILER = """\
import cProfile, sys

out, argv = sys.argv[1], sys.argv[2:]
profile = cProfile.Profile()
profile.enable()
from taskkit.cli import main

try:
    main(argv)  # with argv given, main ends with sys.exit, not os._exit
except SystemExit:
    pass
profile.disable()
profile.dump_stats(out)
"""

#: One process, the same ``taskkit`` command run several times in it (argv: a JSON list of
#: argument lists): the import of the command line, the first run (which imports the rest), and
#: the runs after it, whose time is the work alone.
WARM = """\
import json, sys, time

start = time.perf_counter()
from taskkit.cli import main

imported = time.perf_counter() - start


def once(argv):
    start = time.perf_counter()
    try:
        main(argv)  # with argv given, main ends with sys.exit, not os._exit
    except SystemExit:
        pass
    return time.perf_counter() - start


runs = [once(argv) for argv in json.loads(sys.argv[1])]
print(json.dumps({"cli": imported, "first": runs[0], "warm": runs[1:]}))
"""

#: The floor of a goal-met run on Azure: import adlfs, read one blob.
ADLFS_READ = f"""\
import os, adlfs
fs = adlfs.AzureBlobFileSystem(connection_string=os.environ["AZURE_STORAGE_CONNECTION_STRING"])
fs.cat_file("{INPUT}")
"""


# -- processes ------------------------------------------------------------------------------------


@dataclass
class CpuTimes(Spread):
    """The CPU times (user + system) of a variant's runs: steadier than wall times on a busy
    machine, blind to time spent waiting (for Azurite, for the disk)."""

    seconds: list[float]

    @classmethod
    def of(cls, timing: Timing) -> CpuTimes | None:
        known = [p.cpu for p in timing.procs if p.cpu is not None]
        return cls(known) if known and min(known) > 0 else None


# -- profiling ------------------------------------------------------------------------------------


def import_times(stderr: str) -> dict[str, float]:
    """Seconds of import (self time) by module, from ``-X importtime`` output."""
    found: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|")
        found[name.strip()] = int(self_us) / 1e6
    return found


def package(module: str) -> str:
    """Where a module's import time is booked: its top-level package (azure by sub-package)."""
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[0] == "azure" else parts[0]


def fresh_ids(argv: Sequence[str], tag: str) -> list[str]:
    """``argv`` with its placeholder task id ``tN`` made unique with ``tag``."""
    return [f"t{tag}" if a == "tN" else a for a in argv]


# -- the bench ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.problems: list[str] = []
        self.missed: list[tuple[str, Timing, Timing, dict[str, str]]] = []
        self.targets: list[tuple[str, Timing, Timing, dict[str, str]]] = []
        self.busy: list[float] = []
        self.base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TASKKIT_", "AZ_BATCH_", "AZURE_", "PYTHONPROFILEIMPORTTIME"))
        }
        self.base["TASKKIT_CACHE_DIR"] = str(scratch / "cache")
        self.cwd = scratch / "wd"
        self.cwd.mkdir()

    def anomaly(self, text: str) -> None:
        self.problems.append(text)
        print(f"  ANOMALY: {text}", flush=True)

    def failed(self, proc: Proc, what: str) -> None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        self.anomaly(f"{what}: `{self.shown(proc.argv)}` exited with {proc.code}\n{tail}")

    def shown(self, argv: Sequence[str]) -> str:
        """A command line as printed, with short paths (no credential is ever in argv)."""
        text = shlex.join(argv)
        for path, short in ((str(self.scratch), "TMP"), (TASKKIT, "taskkit"), (PYTHON, "python")):
            text = text.replace(path, short)
        return text

    def load_note(self) -> None:
        total0, idle0 = cpu_times()
        print_load()
        total1, idle1 = cpu_times()
        self.busy.append(1 - (idle1 - idle0) / max(total1 - total0, 1))

    def ratios(self, number: int, pairs: Sequence[tuple[Timing, Timing, str | None]],
               env: dict[str, str]) -> None:  # fmt: skip
        """Print ``num / den`` for each pair; remember the pairs with a target."""
        title = f"Ratios ({number}; wall times, < 1: faster than the anchor)"
        print_ratio_header(title, RATIO_WIDTH)
        for num, den, target in pairs:
            print_ratio(f"{num.label} / {den.label}", num, den, target, RATIO_WIDTH)
            cpu_num, cpu_den = CpuTimes.of(num), CpuTimes.of(den)
            if target is not None and cpu_num is not None and cpu_den is not None:
                print_ratio("  the same, CPU time (user + system)", cpu_num, cpu_den,
                            width=RATIO_WIDTH)  # fmt: skip
            if target is not None:
                self.targets.append((str(number), num, den, env))
                if num.median / den.median > float(target.split()[1]):
                    self.missed.append((str(number), num, den, env))

    # -- 1: local state

    def local(self, number: int) -> None:
        runs = self.args.runs
        print(f"{number}. LOCAL state (file://), no inputs or outputs, {runs} runs each")
        self.load_note()
        state = f"file://{self.scratch}/state"
        run = [TASKKIT, "run", "--state", state, "--job-id", "b"]
        env = self.base
        done = spawn([*run, "--task-id", "done", "--", "true"], env, self.scratch, cwd=self.cwd)
        if done.code != 0:
            self.failed(done, "the run the goal-met variant re-runs")
        fresh = Timing("run -- true", [*run, "--task-id", "tN", "--", "true"])
        met = Timing("run -- true, goal met", [*run, "--task-id", "done", "--", "true"])
        floor = Timing("floor: " + DEPENDENCIES, [PYTHON, "-c", DEPENDENCIES])
        anchors = [
            Timing("sh -c true", ["sh", "-c", "true"]),
            Timing("python -c pass", [PYTHON, "-c", "pass"]),
            Timing("taskkit --version", [TASKKIT, "--version"]),
        ]
        variants = [fresh, met, floor, *anchors]
        for v in variants:
            print(f"  $ {self.shown(v.argv)}")
        for i in range(runs):
            for v in variants:
                proc = spawn(fresh_ids(v.argv, str(i)), env, self.scratch, cwd=self.cwd)
                if proc.code != 0:
                    self.failed(proc, v.label)
                v.procs.append(proc)
            self.check_local(i, met.procs[-1])
        print_table(variants, rate=False, places=3)
        print("  checked: every fresh run recorded success in its outcome.json; every goal-met "
              f"run said so and added no attempt ({self.attempts('done')} in all)")  # fmt: skip
        pairs = [(fresh, floor, TARGET), (met, floor, None)]
        self.ratios(number, pairs + [(fresh, a, None) for a in anchors], env)
        print()

    def attempts(self, task: str) -> int:
        return len(list((self.scratch / "state" / "b" / task / "attempts").glob("*.json")))

    def check_local(self, i: int, met: Proc) -> None:
        outcome = self.scratch / "state" / "b" / f"t{i}" / "outcome.json"
        try:
            state = json.loads(outcome.read_text())["state"]
        except (OSError, ValueError, KeyError) as exc:
            state = f"unreadable ({exc})"
        if state != "success":
            self.anomaly(f"task t{i}: outcome {state}, not success")
        if "goal met" not in met.stderr or self.attempts("done") != 1:
            self.anomaly(f"goal met run {i}: {met.stderr.strip()!r}, {self.attempts('done')} "
                         "attempts recorded")  # fmt: skip

    # -- 2: azure, goal met

    def azure(self, number: int, az: Azurite) -> None:
        runs = self.args.runs
        print(f"{number}. AZURE goal met: az:// state, one az:// input, one output, {runs} runs "
              "each")  # fmt: skip
        self.load_note()
        env = {**self.base, "AZURE_STORAGE_CONNECTION_STRING": az.connection_string}
        with az.blob_service_client() as service:
            for name in ("state", "data", "out"):
                service.create_container(name)
            container, blob = INPUT.split("/", 1)
            service.get_blob_client(container, blob).upload_blob(os.urandom(1024))
        workdir = self.scratch / "azwd"
        workdir.mkdir()
        argv = [TASKKIT, "run", "--state", "az://state/runs", "--job-id", "b", "--task-id", "t1",
                "--workdir", str(workdir), "-i", f"az://{INPUT}=input.txt",
                "-o", "res/**=az://out/r/", "--", *COMMAND]  # fmt: skip
        print(f"  $ {self.shown(argv)}")
        offset = az.log_offset()
        first = spawn(argv, env, self.scratch, cwd=self.cwd)
        ops = az.operations(offset)
        if first.code != 0:
            self.failed(first, "the first run")
        print(f"  first run (untimed): {first.seconds:.2f} s, {len(ops)} requests: "
              f"{op_counts(ops, OPS)}")  # fmt: skip
        self.check_published(az)

        met = Timing("run, goal met (az://)", argv)
        floor = Timing("floor: import adlfs, read one blob", [PYTHON, "-c", ADLFS_READ])
        adlfs = Timing("import adlfs", [PYTHON, "-c", "import adlfs"])
        deps = Timing(DEPENDENCIES, [PYTHON, "-c", DEPENDENCIES])
        print(f"  $ python -c {shlex.quote(ADLFS_READ.strip().replace(chr(10), '; '))}")
        variants = [met, floor, adlfs, deps]
        seen: list[list[str]] = []
        for i in range(runs):
            for v in variants:
                offset = az.log_offset()
                proc = spawn(v.argv, env, self.scratch, cwd=self.cwd)
                if proc.code != 0:
                    self.failed(proc, v.label)
                v.procs.append(proc)
                if v is met:
                    seen.append(az.operations(offset))
                    if "goal met" not in proc.stderr:
                        self.anomaly(f"goal-met run {i}: {proc.stderr.strip()!r}")
                elif v is floor and i == 0:
                    print(f"  floor's requests: {op_counts(az.operations(offset), OPS)}")
        print_table(variants, rate=False, places=3)
        for text, n in collections.Counter(op_counts(ops, OPS) for ops in seen).items():
            print(f"  goal-met requests, {n} run(s): {text}")
        written = max(sum(op in WRITES for op in ops) for ops in seen)
        print(f"  goal-met requests per run: {', '.join(str(len(ops)) for ops in seen)}; "
              f"writes: at most {written} per run; target 0: "
              f"{'met' if written == 0 else 'MISSED'}")  # fmt: skip
        if written:
            self.anomaly("a goal-met run wrote to the store")
        self.ratios(number, [(met, floor, TARGET), (met, adlfs, None), (met, deps, None)], env)
        print()

    def check_published(self, az: Azurite) -> None:
        with az.blob_service_client() as service:
            names = {b.name for b in service.get_container_client("out").list_blobs()}
            raw = service.get_blob_client("state", "runs/b/t1/outcome.json").download_blob()
            outcome = json.loads(raw.readall())
        want = {"r/output.txt", "r/_taskkit_manifest.json"}
        if names != want or outcome.get("state") != "success":
            self.anomaly(f"first run: out/ holds {sorted(names)}, outcome {outcome.get('state')}")
        else:
            print("  checked: out/r/ holds the output and its manifest; the outcome is success")

    # -- profiles

    def profile(self, section: str, slow: Timing, floor: Timing, env: dict[str, str]) -> None:
        print(f"Profile of '{slow.label}' (section {section}), next to '{floor.label}'")
        # Imports: -X importtime, 5 runs of each taking turns, the median self time of each
        # module. Modules both import cost the same but for noise; the others are the cost.
        tries: dict[str, list[dict[str, float]]] = {"slow": [], "floor": []}
        traced = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
        for _ in range(5):
            for key, timing in (("slow", slow), ("floor", floor)):
                argv = fresh_ids(timing.argv, f"p{time.monotonic_ns()}")  # fresh, as when timed
                proc = spawn(argv, traced, self.scratch, cwd=self.cwd)
                tries[key].append(import_times(proc.stderr))

        def median(key: str) -> dict[str, float]:
            names = {n for found in tries[key] for n in found}
            return {n: statistics.median(f.get(n, 0.0) for f in tries[key]) for n in names}

        mine, base = median("slow"), median("floor")
        extra = {n: t for n, t in mine.items() if n not in base}
        shared = sum(t for n, t in mine.items() if n in base)
        print(f"  imports (-X importtime, median of 5): {sum(mine.values()):.3f} s, the floor's "
              f"{sum(base.values()):.3f} s; {sum(extra.values()):.3f} s in {len(extra)} modules "
              f"the floor does not import, {shared:.3f} s in the {len(mine) - len(extra)} it "
              "does")  # fmt: skip
        booked: dict[str, list[float]] = collections.defaultdict(list)
        for name, t in extra.items():
            booked[package(name)].append(t)
        print(f"  {'only taskkit imports':<32} {'self':>7} {'modules':>7}")
        for name, times in sorted(booked.items(), key=lambda kv: -sum(kv[1]))[:12]:
            print(f"  {name:<32} {sum(times):6.3f}s {len(times):>7}")
        own = sorted(((t, n) for n, t in mine.items() if n.startswith("taskkit")), reverse=True)
        print("  taskkit's own modules, self time: "
              + ", ".join(f"{n} {t * 1000:.0f} ms" for t, n in own[:8]))  # fmt: skip
        # The same command run 6 times in one process: imports once, then the work alone.
        script = self.scratch / "warm.py"
        script.write_text(WARM)
        argvs = [fresh_ids(slow.argv[1:], f"w{i}{time.monotonic_ns()}") for i in range(6)]
        proc = spawn([PYTHON, str(script), json.dumps(argvs)], env, self.scratch, cwd=self.cwd)
        try:
            warm = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  in one process: import taskkit.cli {warm['cli']:.3f} s; the first run "
                  f"{warm['first']:.3f} s (its imports and its work); 5 more runs, the work "
                  f"alone: median {statistics.median(warm['warm']):.3f} s")  # fmt: skip
        except (IndexError, ValueError, KeyError):
            self.failed(proc, "the in-process runs")
        # cProfile of one run, in process.
        out = self.scratch / "run.prof"
        script = self.scratch / "profiler.py"
        script.write_text(PROFILER)
        argv = fresh_ids(slow.argv[1:], f"q{time.monotonic_ns()}")
        proc = spawn([PYTHON, str(script), str(out), *argv], env, self.scratch, cwd=self.cwd)
        if proc.code != 0 or not out.exists():
            self.failed(proc, "cProfile run")
            return
        stats = pstats.Stats(str(out))
        entries = stats.stats  # type: ignore[attr-defined]
        whole = stats.total_tt  # type: ignore[attr-defined]
        imports = max((v[3] for k, v in entries.items() if k[2] == "_find_and_load"), default=0)
        print(f"  cProfile of one run, in process: {whole:.3f} s under the profiler, of which "
              f"imports {imports:.3f} s ({imports / whole:.0%}); the functions and modules with "
              "the most cumulative time (import machinery left out):")  # fmt: skip
        shown = 0
        for (path, line, func), (_, calls, _, cum, _) in sorted(
            entries.items(), key=lambda item: item[1][3], reverse=True
        ):
            where = self.short(path)
            if where is None or where.startswith(("<frozen", "importlib/")) or cum < 0.01:
                continue
            print(f"  {cum:7.3f}s {cum / whole:4.0%} {calls:>6}x  {where}:{line} {func}")
            shown += 1
            if shown >= 24:
                break
        print()

    @staticmethod
    def short(path: str) -> str | None:
        """A function's file, short; None for the profiler's own frames."""
        if path == "~" or path.endswith("profiler.py"):
            return None
        return short_path(path, REPO)


def print_header(args: argparse.Namespace, azurite: str) -> None:
    print("taskkit run benchmark: the cost of the wrapper, next to bare Python processes.")
    print("Machine")
    print(f"  cpu           {cpu_model()}")
    print(f"  cpus          {os.cpu_count()} (shared by Azurite and the process under test)")
    print(f"  kernel        {platform.system()} {platform.release()}")
    print(f"  load average  {load()} (1, 5, 15 min) at start")
    print("Software")
    print(f"  python        {platform.python_version()} ({sys.executable})")
    head = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = output(["git", "-C", str(REPO), "status", "--porcelain", "--", "taskkit"])
    changed = len(dirty.splitlines()) if dirty and not dirty.startswith("unavailable") else 0
    note = f" + {changed} changed/new files under taskkit/" if changed else ""
    print(f"  taskkit       {taskkit.__version__}, git {head}{note}")
    for name in ("click", "pydantic", "fsspec", "xxhash", "adlfs", "azure-storage-blob"):
        print(f"  {name:<13} {metadata.version(name)}")
    print(f"  azurite       {output([azurite, '--version'])}")
    if not os.access(TIME, os.X_OK):
        print(f"  note          no {TIME}: peak RSS and CPU time are not measured")
    print(f"Settings: {'QUICK' if args.quick else 'full'}; runs {args.runs}")
    print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=None, help="timed runs per variant [7]")
    parser.add_argument("--quick", action="store_true", help="3 runs per variant, a smoke run")
    parser.add_argument("--profile", action="store_true", help="profile even if targets are met")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 7
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    azurite = find_azurite(cwd=REPO)
    compileall.compile_dir(str(Path(taskkit.__file__).parent), quiet=1)
    print_header(args, azurite)
    with tempfile.TemporaryDirectory(prefix="run-bench-") as tmp:
        scratch = Path(tmp)
        bench = Bench(args, scratch)
        bench.local(1)
        with Azurite(azurite) as az:
            print(f"Azurite (pid {az.pid}) up in {az.startup_seconds:.1f} s at {az.blob_endpoint}")
            bench.azure(2, az)
            profiles = bench.targets if args.profile else bench.missed
            for section, slow, floor, env in profiles:
                bench.profile(section, slow, floor, env)
    print("Note: taskkit ends with os._exit once its output is flushed (no interpreter teardown);")
    print("the python -c anchors and floors tear their modules down, as any script does.")
    busy = max(bench.busy, default=0.0)
    quiet = "BUSY (numbers are noisy)" if busy > BUSY else "quiet"
    print(f"Machine while measuring: {quiet}; CPUs up to {busy:.0%} busy while the bench idled; "
          f"load average {load()} at the end")  # fmt: skip
    code = report_anomalies(
        bench.problems,
        "No anomaly: every run exited 0, each fresh run recorded success, each goal-met run ran "
        "nothing and wrote nothing.",
    )
    print(f"total {time.perf_counter() - began:.0f} s")
    return code


if __name__ == "__main__":
    run_main(main)
