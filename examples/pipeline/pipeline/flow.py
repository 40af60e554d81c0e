"""The pipeline: stage the reference dataset, summarize each shard in a nested task, publish
the results, return a small summary.

Where the data lives is the only thing that differs between a laptop and Azure Batch:
``PIPELINE_DATA`` is the URL of the dataset's folder (``az://data/pipeline`` on Batch); without
it, the example's own ``remote/`` folder (a ``file://`` "remote", made by ``make_data.py``).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import taskkit
from pipeline.shards import shard_names, summarize_shard

DATA = os.environ.get("PIPELINE_DATA") or (Path(__file__).resolve().parents[1] / "remote").as_uri()


@taskkit.task(
    inputs={"ref": f"{DATA}/ref/"},
    outputs={"results/*.csv": f"{DATA}/results/"},
    retries=2,
)
def pipeline(top: int = 3, *, ref: Path = taskkit.staged) -> dict[str, object]:
    """Clean every shard of ``ref``, write the per-station means and the per-shard counts to
    ``results/``, and return the counts with the ``top`` warmest stations."""
    shards = [summarize_shard(part.name, part.read_text()) for part in shard_names(ref)]
    totals: dict[str, list[float]] = {}
    for shard in shards:
        for station, (count, total) in shard["stations"].items():
            both = totals.setdefault(station, [0, 0.0])
            both[0] += count
            both[1] += total
    means = {station: round(total / count, 2) for station, (count, total) in totals.items()}
    Path("results").mkdir(exist_ok=True)
    with open("results/stations.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["station", "readings", "mean"])
        for station in sorted(totals):
            writer.writerow([station, totals[station][0], means[station]])
    with open("results/shards.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["part", "kept", "dropped"])
        for shard in shards:
            writer.writerow([shard["part"], shard["kept"], shard["dropped"]])
    warmest = sorted(means, key=lambda station: (-means[station], station))[:top]
    return {
        "shards": len(shards),
        "kept": sum(shard["kept"] for shard in shards),
        "dropped": sum(shard["dropped"] for shard in shards),
        "warmest": [[station, means[station]] for station in warmest],
    }


@taskkit.task(
    inputs={"ref": f"{DATA}/ref/"},
    outputs={"results/parts/*.json": f"{DATA}/results/parts/"},
    retries=2,
)
def summarize_part(part: str, *, ref: Path = taskkit.staged) -> dict[str, object]:
    """One shard, ``ref/<part>.csv``, on its own: the task a Batch fan-out runs once per shard
    (``taskkit batch tasks --params parts.csv``). Publishes ``results/parts/<part>.json``."""
    path = ref / f"{part}.csv"
    if not path.is_file():
        raise ValueError(f"no shard {part!r} in the reference data")  # permanent: fix the row
    summary = summarize_shard(path.name, path.read_text(encoding="utf-8"))
    Path("results/parts").mkdir(parents=True, exist_ok=True)
    with open(f"results/parts/{part}.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, sort_keys=True)
    return {"part": part, "kept": summary["kept"], "dropped": summary["dropped"]}
