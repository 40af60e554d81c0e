"""Issue 15's table (bench/many_files.py): at its --quick size every row and the scale section
are printed, each run checked; and the request counts, the extrapolation and the verdicts are
worked out as the script says."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import many_files
from benchlib import Proc, Timing

ROWS = [
    r"warm re-stage, 2,000 x 512 B, file://",
    r"cold stage, 2,000 x 512 B, file://",
    r"cold stage, 1,000 x 4 KiB, node cache, second task",
    r"cold upload, 1,000 x 4 KiB, file:// DEST",
    r"unchanged upload, 1,000 files",
    r"taskkit hash, 1,000 x 4 KiB, cold stat-cache",
    r"taskkit hash, 1,000 x 4 KiB, warm",
    r"peak RSS while planning, per file \(200 -> 2,000 dry runs\)",
]


@pytest.mark.skipif(shutil.which("xxhsum") is None, reason="the hash row's anchor needs xxhsum")
def test_quick_run_prints_every_row_with_its_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --quick run ends without an anomaly (every run exited 0, every first run's files and
    summary as expected) and prints each target row with a value, its target and a verdict,
    and the scale section's three sizes, the largest extrapolated."""
    code = many_files.main(["--quick", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "No anomaly" in out
    table = out.split("Issue 15's targets", 1)[1].split("Floors:", 1)[0]
    for row in ROWS:
        assert re.search(rf"{row}\s+\d+\.\d+ (s|KiB) .*<= [\d.]+( s|x| KiB)\s+(met|NOT MET)$",
                         table, re.MULTILINE), row  # fmt: skip
    assert len(table.strip().splitlines()) == len(ROWS) + 2  # the title and the header
    floors = out.split("Floors:", 1)[1].split("Scale on paper", 1)[0]
    for work in ("cold stage", "node cache, second task", "cold upload"):
        assert re.search(rf"^  {work}, .*\d\.\d+s\s+\d+\.\d+x\s+\d+\.\d+x$", floors, re.MULTILINE)
    scale = out.split("Scale on paper", 1)[1]
    for n, how in (("200", "measured"), ("2,000", "measured"), ("1,000,000", "extrapolated")):
        assert re.search(rf"^\s+{n}\s+\d.*{how}", scale, re.MULTILINE), n
    assert not (tmp_path / "run").exists()  # the runs' outputs are gone, the data kept
    assert (tmp_path / "data" / "s2000x512").is_dir()


def test_requests_count_listing_pages_and_one_request_per_small_file() -> None:
    """A stage lists in pages of 5,000 and GETs each file once; an upload lists once, PUTs each
    file and the manifest; an unchanged upload lists the files and the manifest and reads the
    manifest; a file over 8 MiB takes a request per 8 MiB (and an upload its block list)."""
    assert many_files.azure_requests(100_000) == {
        "stage_list": 20,
        "stage_get": 100_000,
        "warm_stage": 20,
        "upload_list": 1,
        "upload_put": 100_001,
        "unchanged_upload": 22,
    }
    assert many_files.azure_requests(5000)["stage_list"] == 1
    assert many_files.azure_requests(5001)["stage_list"] == 2
    assert many_files.azure_requests(4999)["unchanged_upload"] == 2
    assert many_files.azure_requests(5000)["unchanged_upload"] == 3
    big = many_files.azure_requests(10, 20 << 20)  # 3 ranges of 8 MiB each
    assert (big["stage_get"], big["upload_put"]) == (30, 10 * 4 + 1)


def test_extrapolation_follows_the_line_and_never_falls() -> None:
    """The 1M column lies on the line through the two measured sizes; a line falling with more
    files (noise) stays flat at the larger size's value."""
    scale = {10: {"warm": 1.0, "cold": 5.0}, 100: {"warm": 10.0, "cold": 4.0}}
    assert many_files.extrapolate(scale, 10, 100, "warm", 1000) == pytest.approx(100.0)
    assert many_files.extrapolate(scale, 10, 100, "cold", 1000) == 4.0


def timing(label: str, *seconds: float) -> Timing:
    return Timing(label, procs=[Proc([], s, None, None, 0, "", "") for s in seconds])


def test_a_row_is_met_only_within_its_target() -> None:
    """A ratio of medians at or under its bound is met, over it is not; an absolute row is
    judged on the median in seconds, not the best run."""
    anchor = timing("cp -r", 1.0, 1.0, 1.0)
    assert many_files.judged("w", timing("t", 2.0, 2.0, 9.0), anchor, 2.0).met
    missed = many_files.judged("w", timing("t", 2.1, 2.1, 1.0), anchor, 2.0)
    assert not missed.met
    assert missed.ratio == pytest.approx(2.1)
    assert not many_files.judged("w", timing("t", 0.5, 0.7, 0.7), None, 0.6).met
    assert many_files.judged("w", timing("t", 0.5, 0.6, 0.7), None, 0.6).met
