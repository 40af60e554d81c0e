"""``python -m pipeline [TOP]``: run the pipeline and print its summary as JSON;
``python -m pipeline --explain [TOP]``: say whether that call would run, and why."""

from __future__ import annotations

import json
import logging
import sys

from pipeline.flow import pipeline


def main(argv: list[str]) -> int:
    # taskkit speaks through the "taskkit" logger: configured here, its lines reach stderr.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    explain = "--explain" in argv
    words = [word for word in argv if word != "--explain"]
    top = int(words[0]) if words else 3
    if explain:
        print(pipeline.explain(top))
        return 0
    print(json.dumps(pipeline(top)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
