"""`taskkit upload`: one stderr line per problem and the documented exit code, the plan on
--dry-run, the summary (or --json object) last on stdout, progress lines in a log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import fsspec.core
import pytest
from click.testing import CliRunner

import taskkit.cli.report
from taskkit.cli import main
from taskkit.cli.progress import Progress
from taskkit.content.digest import hash_bytes
from taskkit.transfer.manifest import Manifest
from taskkit.transfer.upload_plan import MANIFEST_NAME

TASKKIT = [sys.executable, "-m", "taskkit"]
DEADLINE = 30.0
SUMMARY_KEYS = {
    "files",
    "transferred",
    "resumed",
    "skipped",
    "linked",
    "failed",
    "bytes_transferred",
    "bytes_reused",
    "seconds",
    "dry_run",
}


@pytest.fixture(autouse=True)
def own_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stat-cache of the test's own, and no Batch variables from the machine running it."""
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(tmp_path / "cache"))
    for name in list(os.environ):
        if name.startswith("AZ_BATCH_") or (name.startswith("TASKKIT_") and "CACHE" not in name):
            monkeypatch.delenv(name)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


def make(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def invoke(*args: str) -> tuple[int, list[str], list[str]]:
    """``taskkit ARGS`` in this process: exit code, stdout lines, stderr lines."""
    with CliRunner().isolation() as (out, err, _), pytest.raises(SystemExit) as info:
        main(list(args))
    stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    assert "Traceback" not in stdout + stderr
    code = info.value.code
    assert isinstance(code, int)
    return code, stdout.splitlines(), stderr.splitlines()


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``taskkit ARGS`` as a real process."""
    proc = subprocess.run(
        [*TASKKIT, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def assert_one_error(stderr: list[str], *fragments: str) -> None:
    assert len(stderr) == 1, stderr
    assert stderr[0].startswith("taskkit: error: ")
    for fragment in fragments:
        assert fragment in stderr[0]


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        ("out/*.txt", "has no destination"),
        ("=az://c/x/", "names no files"),
        ("/etc/*=az://c/x/", "relative to the working directory"),
        ("../x=az://c/x/", "must not leave"),
        ("out/*=az://c/*/", "without wildcards"),
    ],
)
def test_a_malformed_output_is_one_line_and_exit_64(
    workdir: Path, output: str, fragment: str
) -> None:
    """A GLOB=DEST that makes no sense: one error line, exit 64, nothing on stdout."""
    code, out, err = invoke("upload", "-o", output, "--workdir", str(workdir))
    assert code == 64
    assert_one_error(err, fragment)
    assert out == []


def test_a_bad_container_name_is_exit_64_before_any_request(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """az://Bad/ is refused by name (64), one line, before any filesystem is even built."""

    def no_store(*args: object, **kwargs: object) -> None:
        raise AssertionError("a store was opened")

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_store)
    make(workdir, {"a.txt": b"a"})
    code, out, err = invoke("upload", "-o", "a.txt=az://Bad/x/", "--workdir", str(workdir))
    assert code == 64
    assert_one_error(err, "'Bad'", "not a valid container name")
    assert out[-1].startswith("taskkit: uploaded 0 files in ")
    assert out[-1].endswith("0 already there, 1 failed; not published")


def test_a_glob_matching_nothing_is_exit_66_and_publishes_nothing(
    workdir: Path, dest: Path
) -> None:
    """No file matches: one line pointing at --allow-empty, exit 66, DEST untouched."""
    code, _, err = invoke("upload", "-o", f"*.txt=file://{dest}", "--workdir", str(workdir))
    assert code == 66
    assert_one_error(err, "'*.txt' matches no file", "--allow-empty")
    assert not dest.exists()


def test_allow_empty_exits_0_with_an_empty_manifest(workdir: Path, dest: Path) -> None:
    """--allow-empty: exit 0, nothing on stderr, DEST published with no files."""
    code, out, err = invoke(
        "upload", "-o", f"*.txt=file://{dest}", "--allow-empty", "--workdir", str(workdir)
    )
    assert (code, err) == (0, [])
    assert out[-1].endswith("0 failed; published")
    manifest = Manifest.parse((dest / MANIFEST_NAME).read_bytes(), "m")
    assert manifest.files == ()


def test_json_prints_the_summary_object_last(workdir: Path, dest: Path) -> None:
    """--json: the last stdout line is the summary object, with exactly its keys."""
    make(workdir, {"out/a.txt": b"aaa", "out/b/c.txt": b"cc"})
    code, out, err = invoke(
        "upload", "-o", f"out/**=file://{dest}", "--json", "--workdir", str(workdir)
    )
    assert (code, err) == (0, [])
    summary = json.loads(out[-1])
    assert set(summary) == SUMMARY_KEYS
    assert {k: v for k, v in summary.items() if k != "seconds"} == {
        "files": 2,
        "transferred": 2,
        "resumed": 0,
        "skipped": 0,
        "linked": 0,
        "failed": 0,
        "bytes_transferred": 5,
        "bytes_reused": 0,
        "dry_run": False,
    }
    assert (dest / "b" / "c.txt").read_bytes() == b"cc"


def test_dry_run_prints_the_plan_and_changes_nothing(workdir: Path, dest: Path) -> None:
    """--dry-run: a send or skip line per file with size and reason, the manifest's publish
    line, the would-upload summary; DEST is left as it was."""
    make(workdir, {"a.txt": b"a"})
    assert invoke("upload", "-o", f"*.txt=file://{dest}", "--workdir", str(workdir))[0] == 0
    make(workdir, {"b.txt": b"bb"})
    before = sorted((p, p.read_bytes()) for p in dest.iterdir())
    code, out, err = invoke(
        "upload", "-o", f"*.txt=file://{dest}", "--dry-run", "--workdir", str(workdir)
    )
    assert (code, err) == (0, [])
    assert out[:3] == [
        f"skip  a.txt -> {dest}/a.txt  (1 B; same digest at the destination (hashed))",
        f"send  b.txt -> {dest}/b.txt  (2 B; not at the destination)",
        f"publish {dest}/{MANIFEST_NAME}  (written last)",
    ]
    assert out[3].startswith("taskkit: would upload 2 files in ")
    assert out[3].endswith("1 sent (2 B, 0 resumed), 1 already there, 0 failed")
    assert len(out) == 4
    assert sorted((p, p.read_bytes()) for p in dest.iterdir()) == before


def test_progress_in_a_log_is_lines_saying_uploading(
    workdir: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr not a terminal: plain lines 'taskkit: uploading: ...' every interval (the run
    is held open until the first one is written)."""

    class AtLeastOneLine(Progress):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.drawn = threading.Event()

        def line(self) -> str:
            text = super().line()
            self.drawn.set()
            return text

        def __exit__(self, *exc: object) -> None:
            assert self.drawn.wait(DEADLINE), "no progress line was written"
            super().__exit__(*exc)

    monkeypatch.setattr(taskkit.cli.report, "Progress", AtLeastOneLine)
    make(workdir, {"a.txt": b"12345"})
    code, out, err = invoke(
        "upload",
        "-o",
        f"a.txt=file://{dest}",
        "--progress-interval",
        "0.1",
        "--workdir",
        str(workdir),
    )
    assert code == 0
    assert err
    assert all(line.startswith("taskkit: uploading: ") for line in err), err
    assert "of 5 B, " in err[-1]
    assert out[-1].startswith("taskkit: uploaded 1 files")


def test_verbose_prints_a_line_per_file_sent(workdir: Path, dest: Path) -> None:
    """-v: 'sent LOCAL -> URL' on stdout for each file sent, before the summary."""
    make(workdir, {"out/a.txt": b"a", "out/b.txt": b"b"})
    code, out, err = invoke("upload", "-o", f"out/=file://{dest}", "-v", "--workdir", str(workdir))
    assert (code, err) == (0, [])
    assert sorted(out[:-1]) == [
        f"sent  out/a.txt -> {dest}/a.txt",
        f"sent  out/b.txt -> {dest}/b.txt",
    ]
    assert out[-1].startswith("taskkit: uploaded 2 files")


def test_a_name_staging_cannot_write_back_is_exit_65_and_nothing_is_published(
    workdir: Path, dest: Path
) -> None:
    """A backslash in a name: one error line, exit 65; the other files are sent; no manifest;
    the summary says it is not published."""
    make(workdir, {"out/ok.txt": b"ok", "out/bad\\name.txt": b"x"})
    code, out, err = invoke("upload", "-o", f"out/=file://{dest}", "--workdir", str(workdir))
    assert code == 65
    assert_one_error(err, "'out/bad\\\\name.txt'", "backslash")
    assert (dest / "ok.txt").read_bytes() == b"ok"
    assert not (dest / MANIFEST_NAME).exists()
    assert "; published" not in out[-1]
    assert out[-1].endswith("0 already there, 1 failed; not published")


def test_a_link_leading_out_is_a_warning_not_a_failure(
    workdir: Path, dest: Path, tmp_path: Path
) -> None:
    """One warning line for a link out of the workdir; the rest is uploaded; exit 0."""
    make(tmp_path, {"elsewhere.txt": b"secret"})
    make(workdir, {"out/a.txt": b"a"})
    (workdir / "out" / "ext.txt").symlink_to(tmp_path / "elsewhere.txt")
    code, _, err = invoke("upload", "-o", f"out/*=file://{dest}", "--workdir", str(workdir))
    assert code == 0
    assert err == [
        "taskkit: warning: not uploading 'out/ext.txt': "
        "a link that leads out of the working directory"
    ]
    assert sorted(p.name for p in dest.iterdir()) == [MANIFEST_NAME, "a.txt"]


def test_a_reversed_range_is_a_usage_error(workdir: Path, dest: Path) -> None:
    """'[z-a]' in GLOB: one line, exit 64, not an internal error."""
    code, _, err = invoke("upload", "-o", f"[z-a]=file://{dest}", "--workdir", str(workdir))
    assert_one_error(err)
    assert "internal error" not in err[0]
    assert code == 64


# -- as a real process --------------------------------------------------------------------------


def test_a_real_upload_publishes_and_a_second_one_sends_nothing(workdir: Path, dest: Path) -> None:
    """`python -m taskkit upload` from the workdir as cwd: exit 0, quiet stderr, the files and
    the manifest at DEST; run again, everything is already there."""
    make(workdir, {"out/a.txt": b"alpha", "out/sub/b.txt": b"beta"})
    first = run("upload", "-o", f"out/**=file://{dest}/run", cwd=workdir)
    assert (first.returncode, first.stderr) == (0, "")
    assert "2 sent (9 B, " in first.stdout
    assert "0 already there, 0 failed; published\n" in first.stdout
    manifest = Manifest.parse((dest / "run" / MANIFEST_NAME).read_bytes(), "m")
    assert [(f.name, f.digest) for f in manifest.files] == [
        ("a.txt", hash_bytes(b"alpha")),
        ("sub/b.txt", hash_bytes(b"beta")),
    ]
    again = run("upload", "-o", f"out/**=file://{dest}/run", "--json", cwd=workdir)
    assert (again.returncode, again.stderr) == (0, "")
    summary = json.loads(again.stdout.splitlines()[-1])
    assert (summary["transferred"], summary["skipped"], summary["bytes_transferred"]) == (0, 2, 0)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["-o", "out/*.txt"], 64, "has no destination"),
        (["-o", "*.txt=file:///nonexistent-dest/"], 66, "matches no file"),
        ([], 64, "Missing option '-o'"),
    ],
)
def test_a_real_process_fails_with_one_line_and_the_exit_code(
    workdir: Path, args: list[str], code: int, fragment: str
) -> None:
    """Each failure is one stderr line and its exit code, no traceback, as a real process."""
    proc = run("upload", *args, "--workdir", str(workdir))
    assert proc.returncode == code
    assert_one_error(proc.stderr.splitlines(), fragment)


def test_a_bracket_in_a_set_gives_a_single_stderr_line(workdir: Path, dest: Path) -> None:
    """'[[]x' matching nothing: exactly the one 'matches no file' line on stderr."""
    proc = run("upload", "-o", f"[[]x=file://{dest}", "--workdir", str(workdir))
    assert proc.returncode == 66
    assert_one_error(proc.stderr.splitlines(), "matches no file")


def test_the_settings_of_stage_and_upload_are_the_run_specs() -> None:
    """The transfer settings `taskkit stage` and `taskkit upload` build without a RunSpec have
    its defaults, and take each setting given (already checked by its option) as given."""
    from taskkit.cli.transfer import _settings
    from taskkit.runner.spec import RunSpec

    spec = RunSpec()
    nothing = {"jobs": None, "retries": None, "retry_budget": None, "progress_interval": None}
    assert _settings(nothing) == _settings({}) == spec.transfer()
    assert spec.retry() == spec.transfer().retry()
    for name, value in (("jobs", 3), ("retries", 2), ("retry_budget", 5.0), ("verbose", True)):
        given = _settings({**nothing, name: value})
        assert given == spec.transfer()._replace(**{name: value})
        assert given == RunSpec.model_validate({name: value}).transfer()


@pytest.mark.parametrize(("setting", "imported"), [([], False), (["-j", "2"], True)])
def test_an_upload_imports_the_run_spec_only_for_a_setting_given(
    workdir: Path, dest: Path, setting: list[str], imported: bool
) -> None:
    """`taskkit upload` without settings starts without pydantic (a third of an unchanged
    upload of many files); with one, the RunSpec checks it as before."""
    make(workdir, {"a.txt": b"alpha"})
    code = (
        "import sys\nfrom taskkit.cli import main\n"
        f"try:\n    main({['upload', '-o', f'a.txt=file://{dest}/', *setting]!r})\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "print([m for m in sys.modules if m.split('.')[0] == 'pydantic'] != [])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(imported)
    assert (dest / MANIFEST_NAME).exists()
