"""Task functions against a real Azurite server: state, inputs and outputs in a container.

Each program is a real Python process with ``AZURE_STORAGE_CONNECTION_STRING`` set (as on a
node); runs are counted in a file outside the state. What was published is read back with the
plain Azure SDK.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskkit.testing import Azurite

pytestmark = pytest.mark.azurite

PROGRAM = textwrap.dedent(
    """
    import logging, os, sys
    from pathlib import Path
    import taskkit

    C = os.environ["CONTAINER"]
    BOX = Path(os.environ["BOX"])
    logging.basicConfig(filename=BOX / "log.txt", level=logging.INFO, format="%(message)s")

    def mark(name):
        with open(BOX / "runs.txt", "a") as f:
            f.write(name + "\\n")

    @taskkit.task(
        inputs={"ref": f"az://{C}/ref/"},
        outputs={"out/*.csv": f"az://{C}/results/"},
    )
    def count(ref: Path, letter: str) -> dict[str, int]:
        mark("count")
        text = (ref / "genome.fa").read_text()
        Path("out").mkdir(exist_ok=True)
        Path("out/counts.csv").write_text(f"{letter},{text.count(letter)}\\n")
        return {letter: text.count(letter)}

    if __name__ == "__main__":
        import json
        print(json.dumps(count(sys.argv[1])))
    """
)


@pytest.fixture
def program(
    tmp_path: Path, azurite: Azurite, azurite_container: str
) -> tuple[list[str], dict[str, str], Path]:
    box = tmp_path / "box"
    box.mkdir()
    (tmp_path / "prog.py").write_text(PROGRAM)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AZ_BATCH_", "AZURE_", "TASKKIT_"))
    }
    root = str(Path(__file__).resolve().parents[2])
    env.update(
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
        CONTAINER=azurite_container,
        BOX=str(box),
        PYTHONPATH=os.pathsep.join([root, str(tmp_path)]),
        TASKKIT_STATE=f"az://{azurite_container}/state",
        TASKKIT_LOCAL=str(tmp_path / "local"),
        TASKKIT_CACHE_DIR=str(tmp_path / "cache"),
    )
    with azurite.blob_service_client() as service:
        service.get_blob_client(azurite_container, "ref/genome.fa").upload_blob(b"ACGTA")
    return [sys.executable, str(tmp_path / "prog.py")], env, box


def run(argv: list[str], env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [*argv, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_a_function_stages_publishes_and_is_not_run_again(
    program: tuple[list[str], dict[str, str], Path],
    azurite: Azurite,
    azurite_container: str,
    tmp_path: Path,
) -> None:
    """Staged from a blob prefix, outputs published with a manifest, a second process hits."""
    argv, env, box = program
    assert json.loads(run(argv, env, tmp_path, "A")) == {"A": 2}
    assert json.loads(run(argv, env, tmp_path, "A")) == {"A": 2}
    assert (box / "runs.txt").read_text().splitlines() == ["count"]
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        names = {b.name for b in container.list_blobs(name_starts_with="results/")}
        published = container.download_blob("results/counts.csv").readall()
    assert names == {"results/counts.csv", "results/_taskkit_manifest.json"}
    assert published == b"A,2\n"


def test_a_new_version_of_an_input_blob_runs_again_and_says_why(
    program: tuple[list[str], dict[str, str], Path],
    azurite: Azurite,
    azurite_container: str,
    tmp_path: Path,
) -> None:
    """The input's content is part of the key; the log names the input that changed."""
    argv, env, box = program
    run(argv, env, tmp_path, "A")
    with azurite.blob_service_client() as service:
        service.get_blob_client(azurite_container, "ref/genome.fa").upload_blob(
            b"AAAA", overwrite=True
        )
    assert json.loads(run(argv, env, tmp_path, "A")) == {"A": 4}
    assert (box / "runs.txt").read_text().splitlines() == ["count", "count"]
    log = (box / "log.txt").read_text()
    assert f"input ref: new version of az://{azurite_container}/ref/" in log
