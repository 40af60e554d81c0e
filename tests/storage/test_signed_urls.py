"""A token in the query of a storage URL that is not http(s) (``az://c/p?sv=..&sig=..``) is
refused wherever such a URL is given, before anything is read or written: the state, an input,
an output, ``status``. Such a URL would otherwise name blobs (a journal under ``runs?sig=...``),
be printed, or be read as a glob (``?`` is a wildcard of paths)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_helpers import invoke

from taskkit.exceptions import UsageError
from taskkit.transfer.patterns import parse_output
from taskkit.transfer.stage_plan import parse_input

SIGNATURE = "c2VjcmV0c2lnbmF0dXJlMTIz%3D"
RUN = ("run", "--state", "STATE", "--job-id", "j", "--task-id", "t")
TOKEN = f"se=2030-01-01T00%3A00%3A00Z&sp=rwlc&sv=2026-10-06&sr=c&sig={SIGNATURE}"


def _refused(code: int, out: str, err: str, expected: int) -> None:
    assert code == expected, err
    assert SIGNATURE not in out + err
    (line,) = err.splitlines()
    assert "AZURE_STORAGE_SAS_TOKEN" in line


@pytest.mark.parametrize("scheme", ["az", "abfs", "file", "memory"])
def test_a_run_whose_state_holds_a_token_is_refused_and_writes_nothing(
    scheme: str, tmp_path: Path
) -> None:
    """``run --state URL?TOKEN``: exit 200 (configuration), one line without the signature,
    nothing written in the working directory."""
    work = tmp_path / "work"
    code, out, err = invoke(
        [
            *("run", "--state", f"{scheme}://state/runs?{TOKEN}", "--job-id", "j"),
            *("--task-id", "t", "--workdir", str(work), "--", "true"),
        ]
    )
    _refused(code, out, err, 200)
    assert not work.exists()


def test_status_of_a_state_holding_a_token_is_refused() -> None:
    """``status --state URL?TOKEN``: one line (64), the signature not printed."""
    code, out, err = invoke(
        ["status", "--state", f"az://state/runs?{TOKEN}", "--job-id", "j", "--json"]
    )
    _refused(code, out, err, 64)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stage", "-i", f"az://data/in/a.txt?{TOKEN}=a.txt"], 64),
        (["stage", "-i", f"az://data/in/?{TOKEN}"], 64),
        (["upload", "-o", f"out/**=az://results/r1/?{TOKEN}"], 64),
        ([*RUN, "-i", f"az://data/in/a.txt?{TOKEN}", "--", "true"], 200),
        ([*RUN, "-o", f"out/**=az://results/r1/?{TOKEN}", "--", "true"], 200),
    ],
    ids=["stage-file", "stage-prefix", "upload", "run-input", "run-output"],
)  # fmt: skip
def test_inputs_and_outputs_holding_a_token_are_refused(
    argv: list[str], expected: int, tmp_path: Path
) -> None:
    """An input or output URL (not http) with a token: one line naming the variable to use
    instead, the signature never shown, and not read as a glob that matches nothing."""
    state = tmp_path / "state"
    given = [str(state) if arg == "STATE" else arg for arg in argv]
    code, out, err = invoke([*given[:1], "--workdir", str(tmp_path / "work"), *given[1:]])
    _refused(code, out, err, expected)
    assert "matches nothing" not in err
    assert not state.exists()
    assert not (tmp_path / "work").exists()


def test_the_parsers_refuse_a_token_and_keep_globs() -> None:
    """``?`` stays a wildcard of az:// paths; only a query carrying a signature is refused."""
    assert parse_input("az://data/reads/s?.fq=reads/").dest == "reads/"
    with pytest.raises(UsageError, match="AZURE_STORAGE_SAS_TOKEN"):
        parse_input(f"az://data/reads/a.fq?{TOKEN}")
    assert parse_output("out/?.csv=az://c/r/").pattern == "out/?.csv"
    with pytest.raises(UsageError, match="AZURE_STORAGE_SAS_TOKEN"):
        parse_output(f"out/**=az://c/r/?{TOKEN}")
