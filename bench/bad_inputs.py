"""R3, the bad-input corpus: what every taskkit command does with input it cannot take.

Each :class:`Case` is one command line (run as ``python -m taskkit ...`` in a fresh folder, the
files of its ``files`` made first) and what it must do with it: exit with the code README's
tables give, say so in one line on stderr that names what is wrong, never show a traceback or a
credential, and change nothing but what the command owns (its ``owns`` paths: a state folder,
a local node) -- no file left half-written anywhere, nothing left in its temporary folder.

:func:`check` runs one case and returns the problems found (none: it passed); :func:`run_all`
runs them all. ``tests/test_bad_inputs.py`` and ``bench/reliability.py`` both use this table;
run as a script it prints one line per case and the count per command.

A case's decisive line is stderr's one line, except for a ``taskkit run`` whose attempt has
begun (``Output.ATTEMPT``): an attempt announces itself and its verdict in notes (README's
"What an attempt says"), so there stderr holds only ``taskkit:`` lines, at most one error
among them, and the last one, ``taskkit: note: attempt N: <verdict>: ...``, is the decisive
line, with the error line when there is one (a step's, say, which the verdict only counts).
The same for ``taskkit call`` of a function that fails (``Output.CALL``): the state note may
come first (README: "one note names it when it is first made"); and for a pattern whose only
matches were skipped with their documented warning (``Output.WARNED``: a FIFO is "skipped
with a warning"), which says why the error line that follows found nothing.
"""

from __future__ import annotations

import argparse
import enum
import fnmatch
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CASES",
    "DIR",
    "FAKE_CONNECTION_STRING",
    "FAKE_KEY",
    "FIFO",
    "Case",
    "Dir",
    "Fifo",
    "Link",
    "Mode",
    "Output",
    "check",
    "run_all",
]

#: A fake account key, shaped as a real one (88 base64 characters ending in ``==``).
FAKE_KEY = "Zm9vYmFyYmF6cXV4" * 5 + "Zm9vYmFyYmF6cX=="
#: A connection string with that key, for a loopback port nothing listens on (discard, 9): a
#: request fails at once, never waiting on DNS or a timeout.
FAKE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=corpusacct;"
    f"AccountKey={FAKE_KEY};BlobEndpoint=http://127.0.0.1:9/corpusacct"
)
#: A SAS signature typed into a URL by mistake: never to be echoed.
FAKE_SIG = "c29tZXNpZ25hdHVyZQ%3D%3Dcorpus"
#: How long one case may take before it counts as hung.
TIMEOUT = 120.0
#: A case slower than this waited on something (the network, a retry budget of 60 s): even on
#: a busy machine a bad input takes a few seconds.
SLOW = 45.0


class Output(enum.Enum):
    """What stderr may hold besides the decisive line (see the module docstring)."""

    ONE_LINE = "one line"
    ATTEMPT = "an attempt's notes, its verdict last"
    CALL = "the state note, then the error"
    WARNED = "documented warnings, then the error"


@dataclass(frozen=True)
class Dir:
    """An empty folder to make, with permissions ``mode`` (0o555 for one nobody but root may
    write into: such a case runs its command as the user nobody when the test runs as root)."""

    mode: int = 0o755


@dataclass(frozen=True)
class Fifo:
    """A named pipe to make (a reader that opens it would hang)."""


@dataclass(frozen=True)
class Link:
    """A symbolic link to ``target`` (need not exist)."""

    target: str


@dataclass(frozen=True)
class Mode:
    """A file of ``content`` with permissions ``mode`` (0 for one nobody but root may read:
    such a case runs its command as the user nobody when the test runs as root)."""

    content: str
    mode: int


DIR = Dir()
FIFO = Fifo()
Setup = str | bytes | Dir | Fifo | Link | Mode


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the files it meets, and what it must do.

    ``{root}`` in ``argv``, ``env`` and file contents is the case's folder (its working
    directory). ``says`` are words the decisive line must hold (case-insensitive). ``owns``
    are paths (fnmatch patterns, relative to the folder) the command may create or change,
    with everything below them. ``secret`` runs it with :data:`FAKE_CONNECTION_STRING` in
    ``AZURE_STORAGE_CONNECTION_STRING``; ``hidden`` are more strings that must never be shown
    or stored; the decisive line must not hold the words of ``avoids``. ``why`` says where the
    expected code comes from when it is not plain.
    """

    name: str
    command: str
    argv: tuple[str, ...]
    code: int
    says: tuple[str, ...]
    files: Mapping[str, Setup] = field(default_factory=dict)
    owns: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    output: Output = Output.ONE_LINE
    secret: bool = False
    hidden: tuple[str, ...] = ()
    why: str = ""
    #: Words the decisive line must not hold (a name the user never gave, say).
    avoids: tuple[str, ...] = ()

    @property
    def unprivileged(self) -> bool:
        """Whether a file of the case is unreadable or a folder unwritable: root must not
        run it."""
        return any(
            (isinstance(f, Mode) and not f.mode & 0o444)
            or (isinstance(f, Dir) and not f.mode & 0o222)
            for f in self.files.values()
        )


def case(
    name: str,
    command: str,
    argv: str | list[str],
    code: int,
    says: str | tuple[str, ...],
    **kw: object,
) -> Case:
    """A :class:`Case`, ``argv`` written as a shell line (or a list, for hostile names)."""
    words = tuple(shlex.split(argv) if isinstance(argv, str) else argv)
    return Case(name, command, words, code, (says,) if isinstance(says, str) else says, **kw)  # type: ignore[arg-type]


# -- the corpus -----------------------------------------------------------------------------------

STATE = "--state file://{root}/state --job-id j --task-id t"
SRC = {"src/a.txt": "a\n", "out/o.txt": "o\n"}
MODULE = """import taskkit

@taskkit.task
def f(n: int) -> int:
    return n

@taskkit.task
def bad(n: int) -> int:
    raise ValueError("row 7 has no id")

@taskkit.task
def flaky() -> int:
    raise OSError("the service is down")

@taskkit.task
def quits() -> int:
    import sys
    sys.exit(4)

@taskkit.task
def pair() -> object:
    return (1, 2)
"""
CALL_FILES: dict[str, Setup] = {"m.py": MODULE}
CALL_ENV = {"TASKKIT_STATE": "file://{root}/state"}
LOCAL = ".taskkit-local"
TASK_OK = '{"id": "a", "commandLine": "true"}'


def tasks_case(name: str, text: str | bytes, says: str | tuple[str, ...], **kw: object) -> Case:
    """A ``taskkit local run`` of a malformed TASKS file: 65, one line naming task and field,
    no task run (the node folders may be made: ``DIR`` is the command's)."""
    return case(
        name,
        "task json",
        "local run tasks.json",
        65,
        says,
        files={"tasks.json": text},
        owns=(LOCAL,),
        **kw,
    )


def local_case(name: str, argv: str, code: int, says: str | tuple[str, ...], **kw: object) -> Case:
    """A ``taskkit local run`` with a bad option, given a good TASKS file (``tasks.json``)."""
    files: dict[str, Setup] = {"tasks.json": f"[{TASK_OK}]"}
    files.update(kw.pop("files", {}))  # type: ignore[call-overload]
    return case(name, "local run", argv, code, says, files=files, owns=(LOCAL,), **kw)


CASES: list[Case] = [
    # -- taskkit hash ---------------------------------------------------------------------------
    case("hash-missing-path", "hash", "hash nothere", 66, ("nothere", "no such file")),
    case("hash-no-path", "hash", "hash", 64, "missing argument"),
    case("hash-jobs-zero", "hash", "hash -j 0 x", 64, "--jobs"),
    case("hash-unknown-option", "hash", "hash --bogus x", 64, "--bogus"),
    case("hash-broken-link", "hash", "hash broken", 66, "broken", files={"broken": Link("gone")}),
    case(
        "hash-link-cycle",
        "hash",
        "hash loop1",
        74,
        "too many levels",
        files={"loop1": Link("loop2"), "loop2": Link("loop1")},
    ),
    case(
        "hash-fifo-skipped",
        "hash",
        "hash fifo",
        0,
        ("warning", "fifo"),
        files={"fifo": FIFO},
        why="README: FIFOs are skipped with a warning and never opened (opening one would hang)",
    ),
    case(
        "hash-newline-in-name",
        "hash",
        ["hash", "bad\nname"],
        66,
        ("bad\\nname",),
        why="a newline in a path is escaped, so the error stays one line",
    ),
    case(
        "hash-unreadable",
        "hash",
        "hash secret.txt",
        77,
        ("secret.txt", "permission denied"),
        files={"secret.txt": Mode("x", 0)},
    ),
    case(
        "hash-one-bad-of-two",
        "hash",
        "hash ok.txt nothere",
        66,
        "nothere",
        files={"ok.txt": "ok"},
        why="README: the other paths are still hashed; the exit code is the first failure's",
    ),
    # -- taskkit stage --------------------------------------------------------------------------
    case("stage-no-input", "stage", "stage", 64, "--input"),
    case("stage-missing-local-source", "stage", "stage -i nothere=x", 66, "nothere"),
    case("stage-ipv6-unbracketed", "stage", "stage -i 'http://[::1/x=a'", 64, "ipv6"),
    case("stage-port-out-of-range", "stage", "stage -i http://h:99999/x/a=a", 64, "99999"),
    case("stage-az-no-container", "stage", "stage -i az:///x=a", 64, "no container"),
    case("stage-az-container-only", "stage", "stage -i az://data", 64, "az://data/"),
    case("stage-wildcard-container", "stage", "stage -i 'az://*/x=a'", 64, "wildcard"),
    case(
        "stage-dest-outside-workdir",
        "stage",
        "stage -i file://{root}/src/a.txt=../out.txt",
        64,
        ("../out.txt", "outside the working directory"),
        files=SRC,
    ),
    case(
        "stage-dest-taskkit-name",
        "stage",
        "stage -i file://{root}/src/a.txt=.taskkit-x",
        64,
        ".taskkit-",
        files=SRC,
    ),
    case(
        "stage-dest-backslash",
        "stage",
        ["stage", "-i", "file://{root}/src/a.txt=a\\b"],
        64,
        ("destination", "backslash"),
        files=SRC,
        why="README: a typed DEST with a backslash is refused before anything is read, as "
        "upload could never publish that name (it made the file until now)",
    ),
    case(
        "stage-bad-name-in-prefix",
        "stage",
        "stage -i file://{root}/src/=in/",
        65,
        ("bad\\nname", "control character"),
        files={"src/ok.txt": "ok", "src/bad\nname": "x"},
        owns=("in",),
        why="README: a source name that cannot be a path is refused on its own (65), "
        "the other files are still staged",
    ),
    case(
        "stage-cache-max-bytes-not-a-size", "stage", "stage --cache-max-bytes 12Q -i x=y", 64, "12Q"
    ),
    case(
        "stage-progress-interval-zero",
        "stage",
        "stage --progress-interval 0 -i x=y",
        64,
        "--progress-interval",
    ),
    case("stage-no-source", "stage", "stage -i =x", 64, "no source"),
    case(
        "stage-glob-matches-nothing",
        "stage",
        "stage -i 'file://{root}/src/*.zzz=z/'",
        66,
        ("matches nothing", "--allow-empty"),
        files=SRC,
    ),
    case(
        "stage-sas-in-az-url",
        "stage",
        f"stage -i 'az://cont/p?sv=1&sig={FAKE_SIG}=x'",
        64,
        "AZURE_STORAGE_SAS_TOKEN",
        hidden=(FAKE_SIG,),
    ),
    case(
        "stage-file-where-folder-must-be",
        "stage",
        "stage -i file://{root}/src/a.txt=afile/b.txt",
        74,
        ("afile", "not a directory"),
        files={**SRC, "afile": ""},
    ),
    case(
        "stage-workdir-is-file",
        "stage",
        "stage --workdir afile -i file://{root}/src/a.txt=b.txt",
        74,
        ("afile", "not a directory"),
        files={**SRC, "afile": ""},
        why="README: a file where the working directory should be is local I/O for stage (74)",
    ),
    case(
        "stage-two-inputs-clash",
        "stage",
        "stage -i file://{root}/src/a.txt=x -i file://{root}/src/=x",
        64,
        "nothing was staged",
        files=SRC,
    ),
    case(
        "stage-cache-dir-is-file",
        "stage",
        "stage --cache-dir afile -i file://{root}/src/a.txt=y",
        74,
        "--cache-dir",
        files={**SRC, "afile": ""},
    ),
    case(
        "stage-unreadable-source",
        "stage",
        "stage -i file://{root}/src/secret.txt=s.txt",
        77,
        ("cannot read", "secret.txt", "permission denied"),
        files={"src/secret.txt": Mode("x", 0)},
        avoids=(".partial", "cannot write"),
        why="the source may not be read: the line names it, not the partial file it went to",
    ),
    case(
        "stage-workdir-not-writable",
        "stage",
        "stage --workdir ro -i file://{root}/src/a.txt=x",
        77,
        ("ro/x", "permission denied"),
        files={**SRC, "ro": Dir(0o555)},
        avoids=(".partial",),
        why="the line names the DEST, not the partial file beside it, a name no one gave",
    ),
    case(
        "stage-workdir-cannot-be-made",
        "stage",
        "stage --workdir ro/new -i file://{root}/src/a.txt=x",
        77,
        ("ro/new", "permission denied"),
        files={**SRC, "ro": Dir(0o555)},
    ),
    case(
        "stage-garbled-connection-string",
        "stage",
        "stage -i az://cont/p/=x/",
        78,
        "AZURE_STORAGE_CONNECTION_STRING",
        env={"AZURE_STORAGE_CONNECTION_STRING": f"garbled;AccountKey={FAKE_KEY}"},
    ),
    case(
        "stage-account-unreachable",
        "stage",
        "stage --retries 1 -i az://cont/p/=x/",
        75,
        ("az://cont/p/", "corpusacct"),
        secret=True,
    ),
    case(
        "upload-broken-link-only",
        "upload",
        "upload -o 'out/*=file://{root}/dest/'",
        66,
        ("out/b", "broken symbolic link"),
        files={"out/b": Link("gone")},
        why="the pattern matched a broken link: that is its one line, not also 'matches no file'",
    ),
    case(
        "upload-fifo-only",
        "upload",
        "upload -o 'out/*=file://{root}/dest/'",
        66,
        ("out/*", "matches no file"),
        files={"out/p": FIFO},
        output=Output.WARNED,
    ),
    case(
        "upload-name-with-backslash",
        "upload",
        "upload -o 'out/*=file://{root}/dest/'",
        65,
        ("backslash",),
        files={"out/a\\b": "x", "out/ok.txt": "ok"},
        owns=("dest",),
        why="README: such a name could not be staged back; the other files are sent, no manifest",
    ),
    # -- taskkit upload -------------------------------------------------------------------------
    case("upload-no-output", "upload", "upload", 64, "--output"),
    case(
        "upload-glob-matches-nothing",
        "upload",
        "upload -o 'nomatch/*=file://{root}/dest/'",
        66,
        ("nomatch/*", "--allow-empty"),
    ),
    case("upload-http-dest", "upload", "upload -o 'out/**=https://h/c/'", 64, "http(s)", files=SRC),
    case(
        "upload-empty-segment", "upload", "upload -o 'out/**=az://cont/x//y/'", 64, "empty segment"
    ),
    case("upload-no-dest", "upload", "upload -o 'out/**'", 64, "no destination", files=SRC),
    case(
        "upload-sas-in-dest",
        "upload",
        f"upload -o 'out/**=az://cont/p?sig={FAKE_SIG}'",
        64,
        "AZURE_STORAGE_SAS_TOKEN",
        files=SRC,
        hidden=(FAKE_SIG,),
    ),
    case(
        "upload-dest-below-file",
        "upload",
        "upload -o 'out/**={root}/afile/sub/'",
        74,
        ("afile", "not a directory"),
        files={**SRC, "afile": ""},
    ),
    case(
        "upload-workdir-missing",
        "upload",
        "upload --workdir nope -o 'out/**=file://{root}/dest/'",
        64,
        ("nope", "not a directory"),
        why="upload reads its working directory and never makes it: a name that is no folder is "
        "a bad value (64); stage makes it, so a file in its way is local I/O there (74)",
    ),
    case(
        "upload-bad-container-name",
        "upload",
        "upload -o 'out/**=az://c/p/'",
        64,
        "container name",
        files=SRC,
        secret=True,
    ),
    case(
        "upload-garbled-connection-string",
        "upload",
        "upload -o 'out/**=az://cont/p/'",
        78,
        "AZURE_STORAGE_CONNECTION_STRING",
        files=SRC,
        env={"AZURE_STORAGE_CONNECTION_STRING": f"garbled;AccountKey={FAKE_KEY}"},
    ),
    case(
        "upload-account-unreachable",
        "upload",
        "upload --retries 1 -o 'out/**=az://cont/p/'",
        75,
        ("az://cont/p/", "corpusacct"),
        files=SRC,
        secret=True,
    ),
    case(
        "upload-unreadable-output",
        "upload",
        "upload -o 'out/*=file://{root}/dest/'",
        77,
        ("secret.txt", "permission denied"),
        files={"out/secret.txt": Mode("x", 0)},
        owns=("dest",),
    ),
    case(
        "upload-dest-not-writable",
        "upload",
        "upload -o 'out/*=file://{root}/ro/dest/'",
        77,
        ("ro/dest", "permission denied"),
        files={**SRC, "ro": Dir(0o555)},
    ),
    case(
        "hash-unreadable-folder",
        "hash",
        "hash d",
        77,
        ("d/sub", "permission denied"),
        files={"d/a": "a", "d/sub": Dir(0)},
        why="README: a path that cannot be read gets one line; the other paths are still hashed",
    ),
    # -- taskkit run ----------------------------------------------------------------------------
    case("run-no-state", "run", "run --job-id j --task-id t -- true", 200, "--state"),
    case("run-no-ids", "run", "run --state file://{root}/state -- true", 200, "--job-id"),
    case("run-no-command", "run", f"run {STATE}", 200, "no command"),
    case(
        "run-max-retries-not-int",
        "run",
        f"run {STATE} --max-retries x -- true",
        200,
        "--max-retries",
    ),
    case(
        "run-deadline-beyond-lifetime",
        "run",
        f"run {STATE} --deadline 181d -- true",
        200,
        ("--deadline", "180"),
    ),
    case("run-deadline-unit-twice", "run", f"run {STATE} --deadline 1h1h -- true", 200, "twice"),
    case(
        "run-hostile-task-id",
        "run",
        f"run {STATE} --task-id ../../etc -- true",
        200,
        ("--task-id", "not a Batch id"),
    ),
    case(
        "run-checkpoint-dir-leaves-workdir",
        "run",
        f"run {STATE} --checkpoint-dir ../x -- true",
        200,
        "--checkpoint-dir",
    ),
    case(
        "run-input-into-the-checkpoint-dir",
        "run",
        f"run {STATE} --checkpoint-dir ck -i file://{{root}}/src/a.txt=ck/a.txt -- true",
        200,
        ("ck/a.txt", "checkpoint directory"),
        files=SRC,
    ),
    case(
        "run-http-state",
        "run",
        "run --state https://h/x --job-id j --task-id t -- true",
        200,
        "http(s)",
    ),
    case("run-unknown-option", "run", f"run {STATE} --bogus -- true", 200, "--bogus"),
    case(
        "run-input-dest-backslash",
        "run",
        ["run", *STATE.split(), "-i", "file://{root}/src/a.txt=a\\b", "--", "true"],
        200,
        ("destination", "backslash"),
        files=SRC,
    ),
    case(
        "run-max-retries-variable",
        "run",
        "run --state file://{root}/state --job-id j --task-id t -- true",
        200,
        "TASKKIT_MAX_RETRIES",
        env={"TASKKIT_MAX_RETRIES": "x"},
    ),
    case(
        "run-command-is-a-folder",
        "run",
        f"run {STATE} -- ./sub",
        126,
        ("permanent", "126"),
        files={"sub": DIR},
        owns=("state", ".taskkit-outputs-*"),
        output=Output.ATTEMPT,
    ),
    case(
        "run-workdir-cannot-be-made",
        "run",
        f"run {STATE} --workdir ro/wd -- true",
        203,
        ("retryable", "ro/wd", "permission denied"),
        files={"ro": Dir(0o555)},
        owns=("state",),
        output=Output.ATTEMPT,
        why="README: a directory the attempt needs that cannot be made is local I/O, 203",
    ),
    case(
        "run-dry-run-input-missing",
        "run",
        f"run {STATE} --dry-run -i file://{{root}}/nothere=x -- true",
        201,
        ("nothere",),
        why="the plan is printed whole on stdout; its exit code comes with its line (there was "
        "none: exit 201 and an empty stderr)",
    ),
    case(
        "run-dry-run-bad-spec",
        "spec",
        f"run {STATE} --dry-run --spec bad.toml -- true",
        200,
        ("bad.toml", "TOML"),
        files={"bad.toml": "= 1"},
    ),
    case(
        "stage-dry-run-missing-source",
        "stage",
        "stage --dry-run -i file://{root}/nothere=x",
        66,
        "nothere",
    ),
    case(
        "run-input-missing",
        "run",
        f"run {STATE} -i file://{{root}}/nothere=x -- true",
        201,
        ("permanent", "nothere"),
        owns=("state",),
        output=Output.ATTEMPT,
    ),
    case(
        "run-output-matches-nothing",
        "run",
        f"run {STATE} -o 'nomatch/*=file://{{root}}/dest/' -- true",
        201,
        ("permanent", "nomatch/*"),
        owns=("state", ".taskkit-outputs-*"),
        output=Output.ATTEMPT,
    ),
    case(
        "run-workdir-is-file",
        "run",
        f"run {STATE} --workdir afile -- true",
        203,
        ("retryable", "afile"),
        files={"afile": ""},
        owns=("state",),
        output=Output.ATTEMPT,
    ),
    case(
        "run-dry-run-workdir-is-file",
        "run",
        f"run {STATE} --workdir afile --dry-run -- true",
        203,
        ("afile", "not a directory"),
        files={"afile": ""},
        why="README: a file where the working directory should be is 203 for run --dry-run",
    ),
    case(
        "run-command-not-found",
        "run",
        f"run {STATE} -- ./no-such-command",
        127,
        ("permanent", "127"),
        owns=("state", ".taskkit-outputs-*"),
        output=Output.ATTEMPT,
        why="README: a command that cannot start gets the shell's one line, and 127 is permanent",
    ),
    case(
        "run-local-dir-is-file",
        "run",
        "run --local afile -- true",
        203,
        ("afile", "not a directory"),
        files={"afile": ""},
    ),
    case(
        "run-state-unreachable",
        "run",
        "run --retries 1 --state az://state/runs --job-id j --task-id t -- true",
        204,
        ("az://state/runs", "corpusacct"),
        secret=True,
    ),
    case(
        "run-input-account-unreachable",
        "run",
        f"run --retries 1 {STATE} -i az://cont/p/=in/ -- true",
        204,
        ("retryable", "corpusacct"),
        owns=("state",),
        output=Output.ATTEMPT,
        secret=True,
        why="the journal and the attempt's logs are written with the key in the environment",
    ),
    # -- spec files (taskkit run --spec) --------------------------------------------------------
    case("spec-missing", "spec", f"run {STATE} --spec nothere.toml -- true", 200, "nothere.toml"),
    case(
        "spec-bad-toml",
        "spec",
        f"run {STATE} --spec bad.toml -- true",
        200,
        ("bad.toml", "TOML"),
        files={"bad.toml": "state = ["},
    ),
    case(
        "spec-unknown-key",
        "spec",
        f"run {STATE} --spec unk.toml -- true",
        200,
        ("unk.toml", "bogus"),
        files={"unk.toml": "bogus = 1\n"},
    ),
    case(
        "spec-bad-yaml",
        "spec",
        f"run {STATE} --spec bad.yaml -- true",
        200,
        ("bad.yaml", "YAML"),
        files={"bad.yaml": "a: [\n"},
    ),
    case(
        "spec-bad-json",
        "spec",
        f"run {STATE} --spec bad.json -- true",
        200,
        ("bad.json", "JSON"),
        files={"bad.json": '{"state": 1'},
    ),
    case(
        "spec-json-array",
        "spec",
        f"run {STATE} --spec arr.json -- true",
        200,
        ("arr.json", "table"),
        files={"arr.json": "[1, 2]"},
    ),
    case(
        "spec-yaml-list",
        "spec",
        f"run {STATE} --spec list.yml -- true",
        200,
        ("list.yml", "table"),
        files={"list.yml": "- a\n- b\n"},
    ),
    case(
        "spec-bad-value",
        "spec",
        f"run {STATE} --spec mr.toml -- true",
        200,
        ("mr.toml", "max-retries"),
        files={"mr.toml": 'max-retries = "x"\n'},
    ),
    case(
        "spec-deadline-beyond-lifetime",
        "spec",
        "run --job-id j --task-id t --spec dl.yaml -- true",
        200,
        ("dl.yaml", "deadline"),
        files={"dl.yaml": "state: file://{root}/state\ndeadline: 200d\n"},
    ),
    case(
        "spec-unknown-format",
        "spec",
        f"run {STATE} --spec spec.txt -- true",
        200,
        ("spec.txt", ".toml"),
        files={"spec.txt": "x"},
    ),
    case(
        "spec-is-a-folder",
        "spec",
        f"run {STATE} --spec specdir -- true",
        200,
        "specdir",
        files={"specdir": DIR},
    ),
    case(
        "spec-not-utf8",
        "spec",
        f"run {STATE} --spec bin.toml -- true",
        200,
        ("bin.toml", "TOML"),
        files={"bin.toml": b"\xff\xfe"},
    ),
    case(
        "spec-sas-in-state",
        "spec",
        "run --job-id j --task-id t --spec sas.toml -- true",
        200,
        ("sas.toml", "AZURE_STORAGE_SAS_TOKEN"),
        files={"sas.toml": f'state = "az://state/runs?sv=1&sig={FAKE_SIG}"\n'},
        hidden=(FAKE_SIG,),
    ),
    case(
        "spec-checkpoint-dir-dot",
        "spec",
        f"run {STATE} --spec cp.json -- true",
        200,
        ("cp.json", "checkpoint-dir"),
        files={"cp.json": '{"checkpoint-dir": "."}'},
    ),
    case(
        "spec-output-without-dest",
        "spec",
        f"run {STATE} --spec out.json -- true",
        200,
        ("out.json", "outputs", "no destination"),
        files={"out.json": '{"outputs": ["out/**"]}'},
        why="README: a bad value names the key and the file (the line named neither)",
    ),
    case(
        "spec-input-dest-backslash",
        "spec",
        f"run {STATE} --spec in.yaml -- true",
        200,
        ("in.yaml", "inputs", "backslash"),
        files={"in.yaml": 'inputs: ["file:///x=b\\\\c"]\n'},
    ),
    case(
        "spec-yaml-python-tag",
        "spec",
        f"run {STATE} --spec tag.yaml -- true",
        200,
        ("tag.yaml", "YAML"),
        files={"tag.yaml": "x: !!python/object:os.system {}\n"},
        why="a spec file is data: no YAML tag constructs an object",
    ),
    case(
        "spec-yaml-key-twice",
        "spec",
        f"run {STATE} --spec twice.yaml -- true",
        200,
        ("twice.yaml", "twice"),
        files={"twice.yaml": "max-retries: 1\nmax-retries: 2\n"},
    ),
    case(
        "spec-count-too-large",
        "spec",
        f"run {STATE} --spec big.json -- true",
        200,
        ("big.json", "max-retries", "2147483647"),
        files={"big.json": '{"max-retries": 99999999999999999999}'},
    ),
    case(
        "spec-output-variable-without-dest",
        "spec",
        f"run {STATE} -- true",
        200,
        ("TASKKIT_OUTPUTS", "no destination"),
        env={"TASKKIT_OUTPUTS": "out/**"},
    ),
    # -- taskkit step ---------------------------------------------------------------------------
    case("step-outside-run", "step", "step s -- true", 200, "taskkit run"),
    case(
        "step-hostile-name",
        "step",
        "step ../s -- true",
        200,
        "step name",
        env={"TASKKIT_STATE": "file://{root}/state", "TASKKIT_JOB_ID": "j", "TASKKIT_TASK_ID": "t"},
    ),
    case(
        "step-no-command",
        "step",
        "step s",
        200,
        "no command",
        env={"TASKKIT_STATE": "file://{root}/state", "TASKKIT_JOB_ID": "j", "TASKKIT_TASK_ID": "t"},
    ),
    case(
        "step-http-dest",
        "step",
        "step s -o 'x=https://h/c/' -- true",
        200,
        "http(s)",
        env={"TASKKIT_STATE": "file://{root}/state", "TASKKIT_JOB_ID": "j", "TASKKIT_TASK_ID": "t"},
    ),
    case("step-no-name", "step", "step", 200, "NAME"),
    case(
        "step-in-run-output-matches-nothing",
        "step",
        f"run {STATE} -- {{python}} -m taskkit step s -o 'nomatch/*=file://{{root}}/d/' -- true",
        201,
        ("nomatch/*", "a taskkit step in the command failed", "permanent"),
        owns=("state",),
        output=Output.ATTEMPT,
        why="README: 200-206 from the command (a taskkit step inside it failed) are taskkit's own",
    ),
    case(
        "step-in-run-hostile-name",
        "step",
        f"run {STATE} -- {{python}} -m taskkit step '../s' -- true",
        200,
        ("step name", "permanent"),
        owns=("state",),
        output=Output.ATTEMPT,
    ),
    # -- taskkit call ---------------------------------------------------------------------------
    case("call-no-function", "call", "call", 200, "no function"),
    case("call-unknown-module", "call", "call nomodule:fn", 200, "nomodule"),
    case("call-malformed-name", "call", ["call", "bad name"], 200, "MODULE:FUNCTION"),
    case("call-not-a-task", "call", "call json:dumps", 200, "@taskkit.task"),
    case(
        "call-not-an-integer",
        "call",
        "call m:f n=x",
        200,
        ("n", "not an integer"),
        files=CALL_FILES,
    ),
    case("call-missing-parameter", "call", "call m:f", 200, "missing", files=CALL_FILES),
    case(
        "call-unknown-parameter",
        "call",
        "call m:f m=1",
        200,
        "unknown parameter m",
        files=CALL_FILES,
    ),
    case("call-unknown-function", "call", "call m:nope", 200, "nope", files=CALL_FILES),
    case("call-parameter-twice", "call", "call m:f n=1 n=2", 200, "2 times", files=CALL_FILES),
    case(
        "call-state-no-container",
        "call",
        "call --state az:// m:f n=1",
        200,
        "no container",
        files=CALL_FILES,
    ),
    case(
        "call-syntax-error",
        "call",
        "call syn:f",
        200,
        ("SyntaxError", "syn.py:1"),
        files={"syn.py": "x = (\n"},
    ),
    case(
        "call-module-import-fails",
        "call",
        "call imp:f",
        200,
        ("nothere_mod", "imp.py:1"),
        files={"imp.py": "import nothere_mod\n"},
    ),
    case(
        "call-json-and-dry-run",
        "call",
        "call --json --dry-run m:f n=1",
        200,
        "--dry-run",
        files=CALL_FILES,
    ),
    case(
        "call-local-dir-is-file",
        "call",
        "call --local afile m:f n=1",
        203,
        ("afile", "not a directory"),
        files={**CALL_FILES, "afile": ""},
    ),
    case(
        "call-fails-permanently",
        "call",
        "call m:bad n=1",
        1,
        ("failed permanently", "row 7 has no id"),
        files=CALL_FILES,
        env=CALL_ENV,
        owns=("state",),
        output=Output.CALL,
    ),
    case(
        "call-fails-retryably",
        "call",
        "call m:flaky",
        75,
        ("retryable", "the service is down"),
        files=CALL_FILES,
        env=CALL_ENV,
        owns=("state",),
        output=Output.CALL,
    ),
    case(
        "call-sys-exit",
        "call",
        "call m:quits",
        75,
        "sys.exit(4)",
        files=CALL_FILES,
        env=CALL_ENV,
        owns=("state",),
        output=Output.CALL,
    ),
    case(
        "call-result-not-json",
        "call",
        "call m:pair",
        202,
        ("pair()", "tuple", "result='pickle'"),
        files=CALL_FILES,
        env=CALL_ENV,
        owns=("state",),
        output=Output.CALL,
        why="README: a result that does not come back as it went is refused at the first call; "
        "bad data, 202 as under taskkit run",
    ),
    # -- taskkit status and batch task-json -----------------------------------------------------
    case("status-no-state", "status", "status --job-id j", 64, "--state"),
    case(
        "status-hostile-job-id",
        "status",
        "status --state file://{root}/state --job-id '../x'",
        64,
        "--job-id",
    ),
    case(
        "status-no-journal",
        "status",
        "status --state file://{root}/state --job-id j",
        66,
        "no task",
    ),
    case("task-json-no-id", "batch task-json", "batch task-json -- true", 64, "--id"),
    case("task-json-hostile-id", "batch task-json", "batch task-json --id a/b -- true", 78, "--id"),
    case(
        "task-json-credential-in-env",
        "batch task-json",
        f"batch task-json --id t --state az://s/r --env X={FAKE_CONNECTION_STRING} -- true",
        78,
        "credential",
    ),
    case(
        "task-json-call-with-run-setting",
        "batch task-json",
        "batch task-json --id t --state az://s/r --call m:f -i x=y",
        64,
        "-i",
    ),
    # -- taskkit local run: its options ---------------------------------------------------------
    local_case("local-tasks-missing", "local run nothere.json", 66, "nothere.json"),
    local_case("local-no-tasks-argument", "local run", 64, "TASKS"),
    local_case("local-nodes-zero", "local run --nodes 0 tasks.json", 64, "--nodes"),
    local_case("local-slots-zero", "local run --slots 0 tasks.json", 64, "--slots"),
    local_case(
        "local-chaos-probability", "local run --chaos kill=2 tasks.json", 64, ("--chaos", "kill")
    ),
    local_case(
        "local-chaos-unknown-key", "local run --chaos boom=0.1 tasks.json", 64, ("--chaos", "boom")
    ),
    local_case(
        "local-chaos-no-value", "local run --chaos kill tasks.json", 64, ("--chaos", "kill")
    ),
    local_case(
        "local-chaos-key-twice", "local run --chaos kill=0.1,kill=0.2 tasks.json", 64, "twice"
    ),
    local_case(
        "local-chaos-within-negative", "local run --chaos within=-1 tasks.json", 64, "within"
    ),
    local_case(
        "local-chaos-storage-without-endpoint",
        "local run --chaos storage=0.5 tasks.json",
        64,
        ("storage", "AZURE_STORAGE_CONNECTION_STRING"),
    ),
    local_case(
        "local-chaos-storage-https-endpoint",
        "local run --chaos storage=0.5 tasks.json",
        64,
        ("storage", "BlobEndpoint"),
        env={"AZURE_STORAGE_CONNECTION_STRING": FAKE_CONNECTION_STRING.replace("http", "https")},
        why="the proxy stands in front of an http:// endpoint only; the key is never shown",
    ),
    local_case("local-seed-not-integer", "local run --seed x tasks.json", 64, "--seed"),
    local_case(
        "local-on-task-failure-unknown",
        "local run --on-task-failure retry tasks.json",
        64,
        "--on-task-failure",
    ),
    local_case("local-hostile-job-id", "local run --job-id ../x tasks.json", 64, "--job-id"),
    local_case(
        "local-dir-is-file",
        "local run --dir afile tasks.json",
        74,
        ("--dir", "afile", "exists"),
        files={"afile": ""},
        why="a file where the emulator's folder must be is local I/O (74, as for stage)",
    ),
    local_case(
        "local-report-below-file",
        "local run --report afile/r.json tasks.json",
        74,
        ("--report", "afile", "exists"),
        files={"afile": ""},
        why="checked before any task runs: the job ran, then its report and summary were lost "
        "('cannot proceed 'afile': file exists')",
    ),
    local_case(
        "local-tasks-unreadable",
        "local run secret.json",
        77,
        ("secret.json", "permission denied"),
        files={"secret.json": Mode("[]", 0)},
        why="as any input this user may not read (hash, stage): 77; it was 64, a bad option",
    ),
    local_case(
        "local-tasks-is-folder",
        "local run tasks",
        66,
        ("tasks", "directory"),
        files={"tasks": DIR},
        why="no task file at that path: as missing (66), the interface's code for TASKS; it was "
        "64, a bad option",
    ),
    # -- task JSON (taskkit local run TASKS) ----------------------------------------------------
    tasks_case("tasks-not-json", "not json", "json"),
    tasks_case("tasks-empty-file", "", "no task"),
    tasks_case("tasks-a-number", "3", "object"),
    tasks_case("tasks-no-id", '[{"commandLine": "true"}]', "id"),
    tasks_case("tasks-no-command-line", '[{"id": "a"}]', ("a", "commandLine")),
    tasks_case(
        "tasks-duplicate-id-ignoring-case",
        '[{"id": "a", "commandLine": "true"}, {"id": "A", "commandLine": "true"}]',
        ("A", "id"),
    ),
    tasks_case("tasks-hostile-id", '[{"id": "../a", "commandLine": "true"}]', ("../a", "id")),
    tasks_case(
        "tasks-bad-retry-count",
        '[{"id": "a", "commandLine": "true", "constraints": {"maxTaskRetryCount": "x"}}]',
        ("a", "maxTaskRetryCount"),
    ),
    tasks_case(
        "tasks-retry-count-below-minus-one",
        '[{"id": "a", "commandLine": "true", "constraints": {"maxTaskRetryCount": -2}}]',
        ("a", "maxTaskRetryCount"),
    ),
    tasks_case(
        "tasks-wall-clock-not-iso8601",
        '[{"id": "a", "commandLine": "true", "constraints": {"maxWallClockTime": "1h"}}]',
        ("a", "maxWallClockTime"),
    ),
    tasks_case(
        "tasks-unknown-field",
        '[{"id": "a", "commandLine": "true", "colour": "red"}]',
        ("a", "colour"),
    ),
    tasks_case(
        "tasks-depends-on-missing",
        '[{"id": "a", "commandLine": "true", "dependsOn": {"taskIds": ["zz"]}}]',
        ("a", "zz"),
    ),
    tasks_case(
        "tasks-dependency-cycle",
        '[{"id": "a", "commandLine": "true", "dependsOn": {"taskIds": ["b"]}},'
        ' {"id": "b", "commandLine": "true", "dependsOn": {"taskIds": ["a"]}}]',
        "cycle",
    ),
    tasks_case(
        "tasks-json-lines-one-bad",
        f"{TASK_OK}\n{{not json\n",
        ("line 2",),
    ),
    tasks_case(
        "tasks-environment-not-a-list",
        '[{"id": "a", "commandLine": "true", "environmentSettings": {"X": "1"}}]',
        ("a", "environmentSettings"),
    ),
    tasks_case("tasks-task-not-object", '["true"]', "object"),
    case(
        "tasks-stdin-not-json",
        "task json",
        "local run -",
        65,
        "json",
        stdin=b"nope\n",
        owns=(LOCAL,),
    ),
    tasks_case(
        "tasks-id-range-backwards",
        '[{"id": "1", "commandLine": "true"}, {"id": "a", "commandLine": "true",'
        ' "dependsOn": {"taskIdRanges": [{"start": 5, "end": 1}]}}]',
        ("a", "taskIdRanges"),
    ),
    tasks_case(
        "tasks-bad-dependency-action",
        '[{"id": "a", "commandLine": "true",'
        ' "exitConditions": {"default": {"dependencyAction": "explode"}}}]',
        ("a", "dependencyAction"),
    ),
    case(
        "tasks-unsupported-field",
        "task json",
        "local run tasks.json",
        0,
        ("warning", "resourceFiles", "not emulated"),
        files={
            "tasks.json": '[{"id": "a", "commandLine": "true",'
            ' "resourceFiles": [{"httpUrl": "http://h/x", "filePath": "x"}]}]'
        },
        owns=(LOCAL,),
        why="the issue: an unsupported Batch field is named, not silently ignored; a field "
        "Batch has is a warning and the job runs, one it lacks is an error (tasks-unknown-field)",
    ),
    tasks_case(
        "tasks-command-line-unsplittable",
        '[{"id": "a", "commandLine": "sh -c \\"unterminated"}]',
        ("a", "commandLine", "closing quotation"),
    ),
    tasks_case(
        "tasks-wall-clock-zero",
        '[{"id": "a", "commandLine": "true", "constraints": {"maxWallClockTime": "PT0S"}}]',
        ("a", "maxWallClockTime"),
    ),
    tasks_case(
        "tasks-exit-code-not-integer",
        '[{"id": "a", "commandLine": "true", "exitConditions": {"exitCodes": [{"code": "x"}]}}]',
        ("a", "exitCodes", "code"),
    ),
    tasks_case(
        "tasks-retry-count-fraction",
        '[{"id": "a", "commandLine": "true", "constraints": {"maxTaskRetryCount": 1.5}}]',
        ("a", "maxTaskRetryCount", "1.5"),
    ),
    tasks_case(
        "tasks-required-slots",
        '[{"id": "a", "commandLine": "true", "requiredSlots": 2}]',
        ("a", "requiredSlots"),
    ),
    tasks_case(
        "tasks-self-dependency",
        '[{"id": "a", "commandLine": "true", "dependsOn": {"taskIds": ["a"]}}]',
        ("a", "itself"),
    ),
    tasks_case(
        "tasks-id-range-matches-nothing",
        '[{"id": "a", "commandLine": "true",'
        ' "dependsOn": {"taskIdRanges": [{"start": 1, "end": 3}]}}]',
        ("a", "taskIdRanges"),
    ),
    tasks_case("tasks-not-utf8", b"\xff\xfe[]", "UTF-8"),
    tasks_case(
        "tasks-empty-command-line",
        '[{"id": "a", "commandLine": "  "}]',
        ("a", "commandLine"),
    ),
    # -- taskkit batch submit (nothing reaches a Batch service: refused before, or none there) --
    case(
        "submit-tasks-missing",
        "batch submit",
        "batch submit nothere.json --job-id j --dry-run",
        66,
        "nothere.json",
    ),
    case(
        "submit-tasks-not-json",
        "batch submit",
        "batch submit tasks.json --job-id j --dry-run",
        65,
        "not JSON",
        files={"tasks.json": "{oops"},
    ),
    case(
        "submit-hostile-task-id",
        "batch submit",
        "batch submit tasks.json --job-id j --dry-run",
        65,
        "id",
        files={"tasks.json": '[{"id": "../etc", "commandLine": "true"}]'},
    ),
    case(
        "submit-hostile-job-id",
        "batch submit",
        ["batch", "submit", "tasks.json", "--job-id", "a;rm -rf", "--dry-run"],
        78,
        "--job-id",
        files={"tasks.json": '[{"id": "a", "commandLine": "true"}]'},
    ),
    case(
        "submit-create-job-without-pool",
        "batch submit",
        "batch submit tasks.json --job-id j --create-job --dry-run",
        64,
        "--pool-id",
        files={"tasks.json": '[{"id": "a", "commandLine": "true"}]'},
    ),
    case(
        "submit-no-endpoint",
        "batch submit",
        "batch submit tasks.json --job-id j",
        78,
        "AZURE_BATCH_ENDPOINT",
        files={"tasks.json": '[{"id": "a", "commandLine": "true"}]'},
    ),
    case(
        "submit-endpoint-not-a-url",
        "batch submit",
        "batch submit tasks.json --job-id j --endpoint myaccount.batch",
        78,
        "endpoint",
        files={"tasks.json": '[{"id": "a", "commandLine": "true"}]'},
    ),
    case(
        "submit-half-a-shared-key",
        "batch submit",
        "batch submit tasks.json --job-id j --endpoint https://a.westeurope.batch.azure.com",
        78,
        "AZURE_BATCH_ACCOUNT",
        files={"tasks.json": '[{"id": "a", "commandLine": "true"}]'},
        env={"AZURE_BATCH_ACCESS_KEY": FAKE_KEY},
        hidden=(FAKE_KEY,),
    ),
    case(
        "submit-bad-patience",
        "batch submit",
        "batch submit tasks.json --job-id j --patience soon --dry-run",
        64,
        "--patience",
        files={"tasks.json": '[{"id": "a", "commandLine": "true"}]'},
    ),
    case(
        "submit-service-unreachable",
        "batch submit",
        "batch submit tasks.json --job-id j --endpoint http://127.0.0.1:9 --patience 1s",
        75,
        ("could not be reached", "re-run"),
        files={"tasks.json": '[{"id": "a", "commandLine": "true"}]'},
        env={"AZURE_BATCH_ACCOUNT": "acct", "AZURE_BATCH_ACCESS_KEY": FAKE_KEY},
        hidden=(FAKE_KEY,),
        why="a refused connection is transient: the service may come back",
    ),
    case(
        "submit-key-not-base64",
        "batch submit",
        "batch submit tasks.json --job-id j --endpoint https://a.westeurope.batch.azure.com",
        78,
        ("AZURE_BATCH_ACCESS_KEY", "base64"),
        files={"tasks.json": '[{"id": "a", "commandLine": "true"}]'},
        env={"AZURE_BATCH_ACCOUNT": "acct", "AZURE_BATCH_ACCESS_KEY": "not base64!!"},
        hidden=("not base64!!",),
    ),
    case(
        "submit-token-over-http",
        "batch submit",
        "batch submit tasks.json --job-id j --endpoint http://127.0.0.1:9",
        78,
        ("https://", "AZURE_BATCH_ACCOUNT"),
        files={"tasks.json": '[{"id": "a", "commandLine": "true"}]'},
        why="a token is never sent in the clear: a setting, not a transient failure",
    ),
    case(
        "submit-json-nested-too-deeply",
        "batch submit",
        "batch submit tasks.json --job-id j --dry-run",
        65,
        "nested too deeply",
        files={"tasks.json": "[" * 100_000 + "]" * 100_000},
    ),
    case(
        "submit-command-word-too-long",
        "batch submit",
        "batch submit tasks.json --job-id j --dry-run",
        65,
        ("commandLine", "131,071"),
        files={"tasks.json": '[{"id": "a", "commandLine": "' + "x" * 200_000 + '"}]'},
    ),
    case(
        "task-json-batch-key-in-env",
        "batch task-json",
        f"batch task-json --id t --state az://s/r --env AZURE_BATCH_ACCESS_KEY={FAKE_KEY[:32]} "
        "-- true",
        78,
        "credential",
        hidden=(FAKE_KEY[:32],),
    ),
    # -- taskkit report (and local run --report FILE.html) ---------------------------------------
    case("report-no-state", "report", "report --job-id j", 64, "--state"),
    case(
        "report-hostile-job-id",
        "report",
        "report --state file://{root}/state --job-id '../x'",
        64,
        "--job-id",
    ),
    case(
        "report-unknown-job",
        "report",
        "report --state file://{root}/state --job-id j",
        66,
        ("no task", "j"),
    ),
    case(
        "report-state-no-container",
        "report",
        "report --state az:///runs --job-id j",
        64,
        ("state", "container"),
    ),
    case(
        "report-output-missing-folder",
        "report",
        "report --state file://{root}/state --job-id j -o nowhere/r.html",
        74,
        ("nowhere", "does not exist"),
        why="checked before the journal is read: a page that cannot be written costs no reading",
    ),
    case(
        "report-output-is-directory",
        "report",
        "report --state file://{root}/state --job-id j -o out",
        74,
        ("out", "directory"),
        files={"out": DIR},
    ),
    case(
        "report-output-under-a-file",
        "report",
        "report --state file://{root}/state --job-id j -o plain/r.html",
        74,
        ("plain", "not a directory"),
        files={"plain": "x\n"},
    ),
    case(
        "report-jobs-zero", "report", "report --state file://{root}/s --job-id j -j 0", 64, "--jobs"
    ),
    local_case(
        "local-report-html-under-a-file",
        "local run tasks.json --report plain/r.html",
        74,
        ("--report", "plain"),
        files={"plain": "x\n"},
    ),
    # -- taskkit batch tasks (fan-out) ----------------------------------------------------------
    case(
        "fanout-hostile-id-in-column",
        "batch tasks",
        "batch tasks --template t.json --params p.csv --id-column s",
        65,
        ("line 3", "'../etc'", "not a Batch task id"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {s}'"}""",
            "p.csv": "s\nok\n../etc\n",
        },
    ),
    case(
        "fanout-duplicate-id-ignoring-case",
        "batch tasks",
        "batch tasks --template t.json --params p.csv --id-column s",
        65,
        ("line 4", "'A1'", "line 2", "ignoring case"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {s}'"}""",
            "p.csv": "s\na1\nb2\nA1\n",
        },
    ),
    case(
        "fanout-ragged-csv",
        "batch tasks",
        "batch tasks --template t.json --params p.csv",
        65,
        ("p.csv", "line 3", "1 values", "2 columns"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {a} {b}'"}""",
            "p.csv": "a,b\n1,2\n3\n",
        },
    ),
    case(
        "fanout-csv-not-utf8",
        "batch tasks",
        "batch tasks --template t.json --params p.csv",
        65,
        ("p.csv", "line 3", "UTF-8"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {a}'"}""",
            "p.csv": b"a\nok\n\xff\xfe\n",
        },
    ),
    case(
        "fanout-empty-params",
        "batch tasks",
        "batch tasks --template t.json --params p.csv",
        65,
        ("p.csv", "empty"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {a}'"}""",
            "p.csv": "",
        },
    ),
    case(
        "fanout-jsonl-null-value",
        "batch tasks",
        "batch tasks --template t.json --params p.jsonl",
        65,
        ("p.jsonl", "line 2", "null"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {a}'"}""",
            "p.jsonl": '{"a": 1}\n{"a": null}\n',
        },
    ),
    case(
        "fanout-unknown-placeholder",
        "batch tasks",
        "batch tasks --template t.json --params p.csv",
        65,
        ("unknown placeholder {smaple}", "{sample}"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {smaple}'"}""",
            "p.csv": "sample\n1\n",
        },
    ),
    case(
        "fanout-no-placeholder",
        "batch tasks",
        "batch tasks --template t.json --shards 3",
        65,
        ("no placeholder", "same work"),
        files={"t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- true'"}"""},
    ),
    case(
        "fanout-missing-template",
        "batch tasks",
        "batch tasks --template nothere.json --shards 3",
        66,
        ("no template file", "nothere.json"),
    ),
    case(
        "fanout-template-not-a-task",
        "batch tasks",
        "batch tasks --template t.json --shards 3",
        65,
        ("t.json", "not a JSON object"),
        files={"t.json": '["echo {shard}"]'},
    ),
    case(
        "fanout-template-not-taskkit",
        "batch tasks",
        "batch tasks --template t.json --shards 3",
        65,
        ("commandLine", "taskkit batch task-json"),
        files={"t.json": '{"id": "t", "commandLine": "python x.py {shard}"}'},
    ),
    case(
        "fanout-template-leans-on-sh",
        "batch tasks",
        "batch tasks --template t.json --shards 3",
        65,
        ("commandLine", "'$' outside quotes"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e $H {shard}'"}"""
        },
    ),
    case(
        "fanout-template-own-task-id",
        "batch tasks",
        "batch tasks --template t.json --shards 3",
        65,
        ("--task-id", "each shard gets its own"),
        files={
            "t.json": '{"id":"t","commandLine":'
            """"/bin/sh -c 'exec taskkit run --task-id x -- e {shard}'"}"""
        },
    ),
    case(
        "fanout-group-zero",
        "batch tasks",
        "batch tasks --template t.json --shards 3 --group 0",
        64,
        "--group",
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {shard}'"}"""
        },
    ),
    case(
        "fanout-shards-and-params",
        "batch tasks",
        "batch tasks --template t.json --shards 3 --params p.csv",
        64,
        ("--shards", "--params"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {a}'"}""",
            "p.csv": "a\n1\n",
        },
    ),
    case(
        "fanout-prefix-too-long",
        "batch tasks",
        "batch tasks --template t.json --shards 1000 --prefix " + "p" * 62,
        64,
        ("--prefix", "66 characters", "64"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {shard}'"}"""
        },
    ),
    case(
        "fanout-credential-in-a-row",
        "batch tasks",
        "batch tasks --template t.json --params p.csv",
        78,
        ("line 3", "credential"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- get {url}'"}""",
            "p.csv": f"url\nhttps://a/b\nhttps://a/c?sv=2024-05-04&sig={FAKE_SIG}\n",
        },
        hidden=(FAKE_SIG,),
    ),
    case(
        "fanout-call-column-like-an-option",
        "batch tasks",
        "batch tasks --template t.json --params p.csv",
        65,
        ("--help", "Python name"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit call m:f'"}""",
            "p.csv": "--help,val\n-rf /,1\n",
        },
    ),
    case(
        "fanout-jsonl-lone-surrogate",
        "batch tasks",
        "batch tasks --template t.json --params p.jsonl",
        65,
        ("name", "Unicode"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {name}'"}""",
            "p.jsonl": '{"name": "\\ud800"}\n',
        },
    ),
    case(
        "report-o-empty",
        "report",
        "report --state file://{root}/state --job-id j -o ''",
        74,
        "-o",
    ),
    case(
        "fanout-bad-retention-time",
        "batch tasks",
        "batch tasks --template t.json --shards 3 --retention-time forever",
        78,
        ("--retention-time", "forever"),
        files={
            "t.json": """{"id":"t","commandLine":"/bin/sh -c 'exec taskkit run -- e {shard}'"}"""
        },
    ),
]


# -- the check ------------------------------------------------------------------------------------

#: kind, size, mtime (ns), mode (and a link's target) of one path; folders by kind and mode.
Entry = tuple[str, int, int, int, str]


def _fill(text: str, root: Path) -> str:
    return text.replace("{root}", str(root)).replace("{python}", sys.executable)


def _make(root: Path, files: Mapping[str, Setup]) -> None:
    for rel, what in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, Dir):
            path.mkdir()
            path.chmod(what.mode)
        elif isinstance(what, Fifo):
            os.mkfifo(path)
        elif isinstance(what, Link):
            path.symlink_to(what.target)
        elif isinstance(what, Mode):
            path.write_text(what.content)
            path.chmod(what.mode)
        elif isinstance(what, bytes):
            path.write_bytes(what)
        else:
            path.write_text(_fill(what, root))


def _snapshot(root: Path) -> dict[str, Entry]:
    seen: dict[str, Entry] = {}
    for top, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                seen[rel] = ("dir", 0, 0, st.st_mode, "")
            elif stat.S_ISLNK(st.st_mode):
                seen[rel] = ("link", 0, 0, 0, os.readlink(path))
            else:
                kind = "file" if stat.S_ISREG(st.st_mode) else "special"
                seen[rel] = (kind, st.st_size, st.st_mtime_ns, st.st_mode, "")
    return seen


def _owned(rel: str, patterns: tuple[str, ...]) -> bool:
    parts = rel.split(os.sep)
    prefixes = [os.sep.join(parts[: n + 1]) for n in range(len(parts))]
    return any(fnmatch.fnmatchcase(p, pattern) for p in prefixes for pattern in patterns)


def _is_partial(rel: str) -> bool:
    name = os.path.basename(rel)
    return ".partial" in name or name.endswith((".tmp", ".temp")) or name.startswith(".tmp")


def _environment(case: Case, env: Mapping[str, str], work: Path, root: Path) -> dict[str, str]:
    """The caller's environment without any taskkit, Azure or Batch setting of its own, with
    the case's folders and settings."""
    clean = {
        k: v
        for k, v in env.items()
        if not k.startswith(("TASKKIT_", "AZURE_STORAGE_", "AZ_BATCH_"))
        # Each case is a process that mostly imports taskkit: let Python keep what it compiled.
        and k != "PYTHONDONTWRITEBYTECODE"
    }
    clean.update(
        TMPDIR=str(work / "tmp"),
        HOME=str(work / "home"),
        TASKKIT_CACHE_DIR=str(work / "cache"),
        TASKKIT_RETRY_BUDGET="0",
    )
    if any(name.endswith(".py") for name in case.files):
        # A module of the case's own is compiled where it lies, into the folder watched.
        clean["PYTHONDONTWRITEBYTECODE"] = "1"
    if case.secret:
        clean["AZURE_STORAGE_CONNECTION_STRING"] = FAKE_CONNECTION_STRING
    clean.update({k: _fill(v, root) for k, v in case.env.items()})
    return clean


def _decisive(case: Case, lines: list[str]) -> tuple[str, list[str]]:
    """The line that must say what is wrong, and the problems with the others."""
    problems = []
    if case.output is Output.ONE_LINE:
        if len(lines) != 1:
            problems.append(f"stderr has {len(lines)} lines, not one: {lines!r}")
        return (lines[-1] if lines else ""), problems
    foreign = [line for line in lines if not line.startswith("taskkit: ")]
    if foreign:
        problems.append(f"stderr has lines that are not taskkit's: {foreign!r}")
    errors = [line for line in lines if line.startswith("taskkit: error: ")]
    if len(errors) > 1:
        problems.append(f"stderr has {len(errors)} error lines: {errors!r}")
    if case.output is Output.ATTEMPT:
        last = lines[-1] if lines else ""
        if not last.startswith("taskkit: note: attempt "):
            problems.append(f"the last line is not the attempt's verdict: {last!r}")
        return " | ".join([*errors, last]), problems
    others = [line for line in lines if not line.startswith("taskkit: error: ")]
    if case.output is Output.CALL and any("are kept in" not in line for line in others):
        problems.append(f"stderr has more than the state note and the error: {lines!r}")
    if case.output is Output.WARNED and any("warning:" not in line for line in others):
        problems.append(f"stderr has more than warnings and the error: {lines!r}")
    if not errors or lines[-1] != errors[0]:
        problems.append(f"the error is not the last line: {lines!r}")
    return (errors[0] if errors else ""), problems


def check(case: Case, workdir: Path, env: dict[str, str]) -> list[str]:
    """Run ``case`` in ``workdir`` (made if missing; best empty) with ``env`` (the caller's
    environment: PATH, PYTHONPATH) and return what went wrong, or nothing."""
    if not (case.unprivileged and os.geteuid() == 0):
        return _check(case, Path(workdir), env, as_nobody=False)
    # Root reads any file: such a case runs as nobody, in folders of /tmp (every folder above
    # ``workdir`` may be closed to others, as pytest's are), removed afterwards.
    with tempfile.TemporaryDirectory(prefix="taskkit-bad-input-", dir="/tmp") as tmp:
        return _check(case, Path(tmp), env, as_nobody=True)


def _check(case: Case, work: Path, env: Mapping[str, str], *, as_nobody: bool) -> list[str]:
    root = work / "root"
    for sub in ("root", "tmp", "home", "cache"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    _make(root, case.files)
    if as_nobody:
        for sub in ("", "root", "tmp", "home", "cache"):
            (work / sub).chmod(0o777)
    before = _snapshot(root)
    argv = [sys.executable, "-m", "taskkit", *(_fill(a, root) for a in case.argv)]
    if as_nobody:
        # setpriv, not subprocess's user=: the venv's interpreter may sit below a folder only
        # root may enter, and setpriv gives up root's rights only once it is running.
        if shutil.which("setpriv") is None:
            return ["runs as root and cannot drop it (no setpriv): root reads every file"]
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            cwd=root,
            env=_environment(case, env, work, root),
            input=case.stdin,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [f"did not end within {TIMEOUT:.0f} s"]
    seconds = time.monotonic() - started
    problems = _said(case, proc, root)
    problems += _left(case, work, before)
    if seconds > SLOW:  # no bad input may wait on the network or a retry budget
        problems.append(f"took {seconds:.1f} s")
    return problems


def _said(case: Case, proc: subprocess.CompletedProcess[bytes], root: Path) -> list[str]:
    """What is wrong with the exit code and with what the command printed."""
    stdout = proc.stdout.decode(errors="replace")
    stderr = proc.stderr.decode(errors="replace")
    problems = []
    if proc.returncode != case.code:
        problems.append(f"exit {proc.returncode}, not {case.code}")
    for stream, text in (("stdout", stdout), ("stderr", stderr)):
        if "Traceback" in text:
            problems.append(f"a traceback on {stream}")
        if any(s in text for s in (FAKE_KEY, *case.hidden)):
            problems.append(f"a credential on {stream}")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if len(lines) != len(stderr.splitlines()):
        problems.append("stderr has blank lines")
    line, more = _decisive(case, lines)
    problems += more
    if line and not line.startswith("taskkit: "):
        problems.append(f"the line is not taskkit's: {line!r}")
    problems += [
        f"the line does not mention {word!r}: {line!r}"
        for word in case.says
        if _fill(word, root).lower() not in line.lower()
    ]
    problems += [f"the line mentions {word!r}: {line!r}" for word in case.avoids if word in line]
    return problems


def _left(case: Case, work: Path, before: dict[str, Entry]) -> list[str]:
    """What the command changed that it does not own, left half-written, or stored a
    credential in; and what it left in $TMPDIR or $HOME."""
    root = work / "root"
    problems = []
    after = _snapshot(root)
    for rel in sorted(set(before) | set(after)):
        old, new = before.get(rel), after.get(rel)
        if old == new:
            continue
        if not _owned(rel, case.owns):
            what = "made" if old is None else "removed" if new is None else "changed"
            problems.append(f"{what} {rel!r}, which the command does not own")
        elif new is not None and new[0] == "file" and _is_partial(rel):
            problems.append(f"a partial file left at {rel!r}")
    for sub in ("tmp", "home"):
        left = sorted(p.name for p in (work / sub).iterdir())
        if left:
            problems.append(f"left in ${'TMPDIR' if sub == 'tmp' else 'HOME'}: {left}")
    secrets = [s.encode() for s in (FAKE_KEY, *case.hidden)]
    for top in (root, work / "cache"):
        for rel, entry in _snapshot(top).items():
            path = top / rel
            mine = top == root and before.get(rel) == entry  # the case's own files
            readable = entry[0] == "file" and entry[1] < 4 << 20 and os.access(path, os.R_OK)
            readable = readable and not mine
            if readable and any(s in path.read_bytes() for s in secrets):
                problems.append(f"a credential stored in {str(path.relative_to(work))!r}")
    return problems


def run_all(
    workdir: Path, env: dict[str, str], jobs: int = 2, cases: Sequence[Case] | None = None
) -> list[tuple[Case, list[str]]]:
    """Every case (or those of ``cases``), each in a folder of its own under ``workdir``,
    ``jobs`` at a time."""
    chosen = list(CASES if cases is None else cases)
    folders = [Path(workdir) / f"{n:03d}-{c.name}" for n, c in enumerate(chosen)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        found = list(pool.map(lambda c, f: check(c, f, env), chosen, folders))
    return list(zip(chosen, found, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("-k", help="only the cases whose name holds this")
    args = parser.parse_args()
    if args.k:
        CASES[:] = [c for c in CASES if args.k in c.name]
    with tempfile.TemporaryDirectory(prefix="taskkit-bad-inputs-") as tmp:
        results = run_all(Path(tmp), dict(os.environ), jobs=args.jobs)
    for c, problems in results:
        print(f"{'ok  ' if not problems else 'FAIL'} {c.command:16} {c.name}")
        for p in problems:
            print(f"       {p}")
    total = Counter(c.command for c in CASES)
    failed = Counter(c.command for c, p in results if p)
    for command, n in sorted(total.items()):
        print(f"{command:16} {n - failed[command]:3d} of {n:3d} pass")
    print(f"{'all':16} {len(results) - sum(failed.values()):3d} of {len(results):3d} pass")
    return 1 if any(p for _, p in results) else 0


if __name__ == "__main__":
    sys.exit(main())
