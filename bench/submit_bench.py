"""How fast ``taskkit batch submit`` adds tasks, against the raw azure-batch SDK.

The Batch service cannot run here: both sides talk to taskkit's local endpoint
(``taskkit.testing.batch_endpoint``), which answers as the service documents, each answer
held back by ``--rtt`` seconds to stand for the network's round trip to a Batch account.

Measured, medians of ``--runs`` runs, each into a fresh job:

* the anchor: the raw SDK's own bulk call, ``BatchClient.create_tasks(job, tasks,
  max_concurrency=N)``, in a process of its own (import and client included, as a user's
  script pays them);
* ``taskkit batch submit TASKS --job-id J -j N``, the whole process (reading and checking the
  file, listing the job's tasks first, the collections, the summary);
* the same submit run again on the full job (every task already there: one listing, no add).

Usage: python bench/submit_bench.py [--tasks 20000] [--rtt 0.05] [--jobs 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from taskkit.testing.batch_endpoint import BatchEndpoint

ACCOUNT = "benchacct"
KEY = "YmVuY2gta2V5LW5vdC1hLXNlY3JldA=="

SDK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from azure.batch import BatchClient, models
    from azure.core.credentials import AzureNamedKeyCredential
    endpoint, job, path, jobs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = BatchClient(endpoint, AzureNamedKeyCredential(sys.argv[5], sys.argv[6]))
    tasks = [models.BatchTaskCreateOptions(t) for t in json.load(open(path))]
    result = client.create_tasks(job, tasks, max_concurrency=jobs)
    assert len(result.result_values) == len(tasks)
    """
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"submit_bench: {argv[:4]} failed: {done.stderr.strip()[-400:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rtt", type=float, default=0.05)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "AZURE_BATCH_ACCOUNT": ACCOUNT, "AZURE_BATCH_ACCESS_KEY": KEY}
    tasks = [
        {
            "id": f"t{i:06d}",
            "commandLine": f"/bin/sh -c 'exec taskkit run --state az://state/runs -- "
            f"python work.py --shard {i}'",
            "constraints": {"maxTaskRetryCount": 3},
            "exitConditions": {
                "exitCodeRanges": [
                    {"start": 200, "end": 202, "exitOptions": {"dependencyAction": "block"}}
                ]
            },
        }
        for i in range(args.tasks)
    ]
    with tempfile.TemporaryDirectory() as tmp, BatchEndpoint(ACCOUNT) as endpoint:
        path = Path(tmp) / "tasks.json"
        path.write_text(json.dumps(tasks))
        endpoint.delay = args.rtt
        print(
            f"{args.tasks:,} tasks ({path.stat().st_size / 2**20:.1f} MiB), {args.jobs} requests "
            f"in flight, {args.rtt * 1000:.0f} ms a request; medians of {args.runs} runs\n"
        )
        found: dict[str, list[float]] = {"sdk": [], "submit": [], "again": []}
        for run in range(args.runs):  # the variants take turns
            sdk_job, our_job = f"sdk-{run}", f"tk-{run}"
            endpoint.add_job(sdk_job)
            endpoint.add_job(our_job)
            found["sdk"].append(
                timed(
                    [
                        sys.executable,
                        "-c",
                        SDK_SCRIPT,
                        endpoint.url,
                        sdk_job,
                        str(path),
                        str(args.jobs),
                        ACCOUNT,
                        KEY,
                    ],
                    env,
                )
            )
            submit = [
                sys.executable,
                "-m",
                "taskkit",
                "batch",
                "submit",
                str(path),
                "--job-id",
                our_job,
                "--endpoint",
                endpoint.url,
                "-j",
                str(args.jobs),
            ]
            found["submit"].append(timed(submit, env))
            found["again"].append(timed(submit, env))
            assert len(endpoint.task_ids(our_job)) == args.tasks
            assert len(endpoint.task_ids(sdk_job)) == args.tasks
        anchor = statistics.median(found["sdk"])
        rows = [
            ("raw SDK create_tasks(max_concurrency)", "sdk"),
            ("taskkit batch submit", "submit"),
            ("taskkit batch submit, again (all there)", "again"),
        ]
        for label, key in rows:
            median = statistics.median(found[key])
            spread = ", ".join(f"{s:.2f}" for s in found[key])
            print(
                f"  {label:<42} {median:7.2f} s  {median / anchor:5.2f}x the SDK  "
                f"{args.tasks / median:8,.0f} tasks/s  ({spread})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
