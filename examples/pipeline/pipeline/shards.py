"""One shard of readings, cleaned and summed: the nested task of the pipeline.

A shard's rows are its argument, so its key is its content: the same rows are cleaned once,
whichever run (and whichever node) asks first.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import TypedDict

import taskkit

log = logging.getLogger(__name__)

#: Sensors write this when they have no reading; such rows are dropped.
MISSING = -99.9
#: Each real run of a shard appends a line here (the example counts runs with it).
RUN_LOG = "runs.log"


class ShardSummary(TypedDict):
    """What a shard's task returns (a plain dict: JSON keeps it exactly)."""

    part: str
    kept: int
    dropped: int
    stations: dict[str, list[float]]  # station -> [count, sum of readings]


def clean_rows(text: str) -> tuple[list[tuple[str, float]], int]:
    """The rows of a shard that hold a station and a reading, and how many were dropped."""
    kept: list[tuple[str, float]] = []
    dropped = 0
    for row in csv.reader(io.StringIO(text)):
        if row == ["station", "reading"]:
            continue  # the header
        try:
            station, value = row[0].strip(), float(row[1])
        except (IndexError, ValueError):
            dropped += 1
            continue
        if not station or value == MISSING:
            dropped += 1
            continue
        kept.append((station, value))
    return kept, dropped


@taskkit.task
def summarize_shard(part: str, text: str) -> ShardSummary:
    """Per station of one shard: how many readings and their sum."""
    with open(RUN_LOG, "a", encoding="utf-8") as ledger:
        ledger.write(f"summarize_shard {part}\n")
    rows, dropped = clean_rows(text)
    stations: dict[str, list[float]] = {}
    for station, value in rows:
        count_and_sum = stations.setdefault(station, [0, 0.0])
        count_and_sum[0] += 1
        count_and_sum[1] += value
    log.info("cleaned %s: %d rows kept, %d dropped", part, len(rows), dropped)
    return {"part": part, "kept": len(rows), "dropped": dropped, "stations": stations}


def shard_names(ref: Path) -> list[Path]:
    """The shards of the reference dataset, in a stable order."""
    return sorted(ref.glob("part-*.csv"))
