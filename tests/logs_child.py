"""A real taskkit process for tests/runner/test_logs.py: one command under a LogSink, as the runner
will.

    python tests/logs_child.py FOLDER DEST [--interval S] [--deadline S] [--grace S]
        [--result FILE] [--fail] -- COMMAND...

DEST ``-`` keeps the logs local. The process exits with the command's ``exit_code``; ``--result``
writes the :class:`~taskkit.runner.command.Finished` fields there as JSON; ``--fail`` raises after
the
command, to show that the ``with`` still uploads. Nothing else is printed, so the test sees the
command's output byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys

from taskkit.cli.report import RunReport
from taskkit.runner.command import run_logged
from taskkit.runner.logs import LogSink


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("dest")
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--deadline", type=float, default=None)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--result", default=None)
    parser.add_argument("--fail", action="store_true")
    split = sys.argv.index("--")
    args = parser.parse_args(sys.argv[1:split])
    command = sys.argv[split + 1 :]
    dest = None if args.dest == "-" else args.dest
    # The command line's observer: its warnings are lines on stderr, as `taskkit run` says them.
    console = RunReport(verbose=False, interval=10.0)
    with LogSink(args.folder, dest, interval=args.interval, observer=console) as sink:
        finished = run_logged(command, sink=sink, deadline=args.deadline, grace=args.grace)
        if args.result:
            with open(args.result, "w", encoding="utf-8") as out:
                json.dump({**finished._asdict(), "exit_code": finished.exit_code}, out)
        if args.fail:
            raise RuntimeError("taskkit failed after the command")
    return finished.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
