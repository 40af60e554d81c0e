"""Make the example's reference dataset in ``remote/ref/``: a folder that stands for blob
storage (the pipeline reads it as ``file://.../remote/ref/``, as it would read
``az://data/pipeline/ref/`` on Batch). Four shards of station readings, with a few rows a
cleaner must drop; the same bytes every time (a fixed seed).

``python make_data.py``; ``python make_data.py --add`` adds a fifth shard.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

REF = Path(__file__).resolve().parent / "remote" / "ref"
STATIONS = ["aberdeen", "bergen", "cork", "dundee", "esbjerg", "faro"]
BASE = {"aberdeen": 8.0, "bergen": 7.5, "cork": 10.5, "dundee": 8.5, "esbjerg": 9.0, "faro": 17.0}


def shard(number: int) -> str:
    """The CSV text of shard ``number``: 40 readings, some of them broken."""
    rng = random.Random(number)
    lines = ["station,reading"]
    for i in range(40):
        station = rng.choice(STATIONS)
        if i % 13 == 5:
            lines.append(f"{station},-99.9")  # the sensor had no reading
        elif i % 17 == 9:
            lines.append(f"{station},n/a")  # a broken row
        else:
            lines.append(f"{station},{BASE[station] + rng.uniform(-3, 3):.1f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    count = 5 if "--add" in argv else 4
    REF.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        (REF / f"part-{number:02d}.csv").write_text(shard(number), encoding="utf-8")
    print(f"{count} shards in {REF.as_uri()}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
