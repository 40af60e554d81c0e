"""``python -m pipeline [TOP]``: run the pipeline and print its summary as JSON;
``python -m pipeline --explain [TOP]``: say whether that call would run, and why."""

from __future__ import annotations

import json
import logging
import sys

from pipeline.flow import pipeline


def main(argv: list[str]) -> int:
    # taskkit speaks through the "taskkit" logger: a handler on it (and on the example's own
    # "pipeline" logger) sends their INFO lines to stderr. Not logging.basicConfig(level=INFO):
    # that would also print every HTTP request the Azure SDK logs when the data is on az://.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for name in ("taskkit", "pipeline"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
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
