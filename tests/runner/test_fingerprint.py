"""taskkit.runner.fingerprint: the description of a task's work, its fingerprint, and why it
changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import xxhash

from taskkit.exceptions import InputNotFound
from taskkit.runner.fingerprint import Work, changes, describe
from taskkit.storage.stores import Stores
from taskkit.transfer.stage_plan import Input

COMMAND = ("python", "-c", "print(1)")
OUTPUTS = ("out/**=memory://dest/",)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A local directory of two input files, reached as file:// URLs."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha")
    (root / "sub" / "b.txt").write_bytes(b"beta")
    return root


@pytest.fixture
def memory(stores: Stores) -> str:
    """A fresh memory:// prefix holding a.txt and sub/b.txt."""
    prefix = f"memory://fp-{uuid.uuid4().hex}/in/"
    for name, data in (("a.txt", b"alpha"), ("sub/b.txt", b"beta")):
        store, key = stores.open(prefix + name)
        store.put(key, data, {})
    return prefix


def _urls(root: Path) -> tuple[str, str]:
    return f"file://{root}/a.txt", f"file://{root}/"


def _rewrite(path: Path, data: bytes) -> None:
    """New content with a new modification time, so no version token can repeat."""
    stamp = os.stat(path).st_mtime_ns + 5_000_000_000
    path.write_bytes(data)
    os.utime(path, ns=(stamp, stamp))


def test_describe_file_inputs(stores: Stores, inputs: Path) -> None:
    """One entry per input as given (SRC=DEST), a single file under "", a prefix by names."""
    single, prefix = _urls(inputs)
    work = describe(COMMAND, [single, prefix + "=data/"], OUTPUTS, stores)
    assert work.command == COMMAND
    assert work.outputs == OUTPUTS
    given = dict(work.inputs)
    assert list(given) == [f"{single}=a.txt", f"{prefix}=data/"]
    assert [name for name, _ in given[f"{single}=a.txt"]] == [""]
    names = [name.lstrip("/") for name, _ in given[f"{prefix}=data/"]]
    assert names == ["a.txt", "sub/b.txt"]


def test_describe_accepts_input_values(stores: Stores, inputs: Path) -> None:
    """An Input value describes the same as its SRC=DEST text."""
    single, _ = _urls(inputs)
    as_text = describe(COMMAND, [f"{single}=x.txt"], OUTPUTS, stores)
    as_value = describe(COMMAND, [Input(single, "x.txt")], OUTPUTS, stores)
    assert as_text == as_value


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_same_content_same_fingerprint(
    stores: Stores, inputs: Path, memory: str, kind: str
) -> None:
    """Describing unchanged inputs twice gives the same fingerprint."""
    given = list(_urls(inputs)) if kind == "file" else [memory + "a.txt", memory]
    first = describe(COMMAND, given, OUTPUTS, stores)
    second = describe(COMMAND, given, OUTPUTS, stores)
    assert first == second
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint.startswith("xxh3-128:")


@pytest.mark.parametrize("which", ["single", "prefix"])
def test_a_changed_file_changes_the_fingerprint(stores: Stores, inputs: Path, which: str) -> None:
    """Rewriting a file:// input (same size, new content) gives another fingerprint."""
    single, prefix = _urls(inputs)
    given = [single] if which == "single" else [prefix]
    before = describe(COMMAND, given, OUTPUTS, stores)
    _rewrite(inputs / "a.txt", b"ALPHA")
    after = describe(COMMAND, given, OUTPUTS, stores)
    assert after.fingerprint != before.fingerprint


def test_a_changed_memory_blob_changes_the_fingerprint(stores: Stores, memory: str) -> None:
    """Rewriting a memory:// input with another size gives another fingerprint."""
    before = describe(COMMAND, [memory + "a.txt", memory], OUTPUTS, stores)
    store, key = stores.open(memory + "a.txt")
    store.put(key, b"alpha, longer", {})
    after = describe(COMMAND, [memory + "a.txt", memory], OUTPUTS, stores)
    assert after.fingerprint != before.fingerprint


def test_a_new_file_under_a_prefix_changes_the_fingerprint(stores: Stores, inputs: Path) -> None:
    """A prefix input covers every file under it: one more file is other work."""
    _, prefix = _urls(inputs)
    before = describe(COMMAND, [prefix], OUTPUTS, stores)
    (inputs / "c.txt").write_bytes(b"gamma")
    assert describe(COMMAND, [prefix], OUTPUTS, stores).fingerprint != before.fingerprint


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_a_missing_single_input_is_input_not_found(
    stores: Stores, tmp_path: Path, memory: str, kind: str
) -> None:
    """A single-file input that does not exist raises InputNotFound (a FileNotFoundError)."""
    url = f"file://{tmp_path}/nope.txt" if kind == "file" else memory + "nope.txt"
    with pytest.raises(InputNotFound):
        describe(COMMAND, [url], OUTPUTS, stores)
    with pytest.raises(FileNotFoundError):
        describe(COMMAND, [url], OUTPUTS, stores)


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_a_missing_prefix_input_is_input_not_found(
    stores: Stores, tmp_path: Path, memory: str, kind: str
) -> None:
    """A prefix input under which there is nothing raises InputNotFound, as documented."""
    url = f"file://{tmp_path}/nothing/" if kind == "file" else memory + "nothing/"
    with pytest.raises(InputNotFound):
        describe(COMMAND, [url], OUTPUTS, stores)


def test_the_fingerprint_covers_command_inputs_and_outputs(stores: Stores, inputs: Path) -> None:
    """Changing the command, an input's source or DEST, the set of inputs or the outputs each
    gives another fingerprint."""
    single, prefix = _urls(inputs)
    base = describe(COMMAND, [single], OUTPUTS, stores)
    variants = [
        describe((*COMMAND, "extra"), [single], OUTPUTS, stores),
        describe(COMMAND, [single + "=elsewhere.txt"], OUTPUTS, stores),
        describe(COMMAND, [prefix], OUTPUTS, stores),
        describe(COMMAND, [single, prefix], OUTPUTS, stores),
        describe(COMMAND, [], OUTPUTS, stores),
        describe(COMMAND, [single], ("out/**=memory://other/",), stores),
        describe(COMMAND, [single], (), stores),
    ]
    prints = [base.fingerprint, *(v.fingerprint for v in variants)]
    assert len(set(prints)) == len(prints)


def test_command_arguments_are_not_joined(stores: Stores) -> None:
    """["a b"] and ["a", "b"] are different commands, with different fingerprints."""
    one = describe(["a b"], [], [], stores)
    two = describe(["a", "b"], [], [], stores)
    assert one.fingerprint != two.fingerprint


_CHILD = """
import sys
from taskkit.runner.fingerprint import describe
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
with Stores(RetryBudget(attempts=1)) as stores:
    work = describe(sys.argv[1:4], sys.argv[4:6], ["out/**=memory://dest/"], stores)
print(work.fingerprint)
"""


def test_the_fingerprint_is_stable_across_processes(stores: Stores, inputs: Path) -> None:
    """Another Python process (another hash seed) computes the same fingerprint."""
    given = list(_urls(inputs))
    here = describe(COMMAND, given, OUTPUTS, stores).fingerprint
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", _CHILD, *COMMAND, *given],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    ).stdout.strip()
    assert there == here


def test_work_json_round_trips(stores: Stores, inputs: Path, memory: str) -> None:
    """Work.from_json(work.as_json()) is the same work, with the same fingerprint."""
    single, prefix = _urls(inputs)
    work = describe(COMMAND, [single, prefix + "=d/", memory], OUTPUTS, stores)
    again = Work.from_json(work.as_json())
    assert again == work
    assert again.fingerprint == work.fingerprint


def test_work_from_empty_json() -> None:
    """An empty description is no command, no inputs, no outputs."""
    assert Work.from_json({}) == Work((), (), ())


def test_changes_names_a_changed_command(stores: Stores) -> None:
    """A different command says so."""
    before = describe(["a"], [], OUTPUTS, stores)
    after = describe(["b"], [], OUTPUTS, stores)
    assert changes(before, after) == "the command changed"


def test_changes_names_changed_outputs(stores: Stores) -> None:
    """Different outputs say so."""
    before = describe(COMMAND, [], OUTPUTS, stores)
    after = describe(COMMAND, [], ("x=memory://y/",), stores)
    assert changes(before, after) == "the outputs changed"


def test_changes_names_changed_inputs_given(stores: Stores, inputs: Path) -> None:
    """Another set of inputs says the inputs given changed."""
    single, prefix = _urls(inputs)
    before = describe(COMMAND, [single], OUTPUTS, stores)
    after = describe(COMMAND, [single, prefix], OUTPUTS, stores)
    assert changes(before, after) == "the inputs given changed"


def test_changes_names_a_changed_single_input(stores: Stores, inputs: Path) -> None:
    """A changed single-file input is named by its URL."""
    single, prefix = _urls(inputs)
    before = describe(COMMAND, [single, prefix + "=d/"], OUTPUTS, stores)
    _rewrite(inputs / "a.txt", b"ALPHA")
    after = describe(COMMAND, [single, prefix + "=d/"], OUTPUTS, stores)
    assert f"input {single} changed" in changes(before, after)


def test_changes_names_a_changed_file_under_a_prefix_by_its_url(
    stores: Stores, inputs: Path
) -> None:
    """A changed file under a prefix input is named by its own URL (prefix + name, no "//")."""
    _, prefix = _urls(inputs)
    before = describe(COMMAND, [prefix], OUTPUTS, stores)
    _rewrite(inputs / "sub" / "b.txt", b"BETA")
    after = describe(COMMAND, [prefix], OUTPUTS, stores)
    assert changes(before, after) == f"input {prefix}sub/b.txt changed"


def test_changes_shortens_many_changed_files(stores: Stores, tmp_path: Path) -> None:
    """More than three changed files under one input are cut short with "..."."""
    root = tmp_path / "many"
    root.mkdir()
    for n in range(5):
        (root / f"f{n}.txt").write_bytes(b"x")
    before = describe(COMMAND, [f"file://{root}/"], OUTPUTS, stores)
    for n in range(5):
        _rewrite(root / f"f{n}.txt", b"y")
    message = changes(before, describe(COMMAND, [f"file://{root}/"], OUTPUTS, stores))
    assert message.endswith(" ... changed")
    assert "f2.txt" in message
    assert "f3.txt" not in message


def test_changes_lists_every_reason_on_one_line(stores: Stores) -> None:
    """Several differences are joined with "; " on one line."""
    before = describe(["a"], [], ("o=memory://a/",), stores)
    after = describe(["b"], [], ("o=memory://b/",), stores)
    message = changes(before, after)
    assert message == "the command changed; the outputs changed"
    assert "\n" not in message


def test_changes_of_equal_work_still_says_something(stores: Stores) -> None:
    """When no part differs the reason is the generic one, never empty."""
    work = describe(COMMAND, [], OUTPUTS, stores)
    assert changes(work, work) == "the work changed"


# -- credentials are no part of the work ----------------------------------------------------------

SIGNED = "https://acct.blob.core.windows.net/c/a.txt?sv=2026-10-06&se={}&sr=b&sp=r&sig={}"
FILES = (("", 'version "0x1", 3 bytes'),)


def _signed_work(expiry: str, sig: str, *, dest: bool = True) -> Work:
    url = SIGNED.format(expiry, sig)
    given = f"{url}=in/a.txt" if dest else url
    return Work(
        ("azcopy", "copy", url, f"--from={url}"),
        ((given, FILES),),
        (f"out/**=https://acct.blob.core.windows.net/r/?sv=1&sig={sig}",),
    )


def test_a_rotated_sas_token_is_the_same_work() -> None:
    """Two tokens for the same blobs (other expiry, other signature) make one fingerprint: a
    rotated token does not start the work afresh."""
    one = _signed_work("2030-01-01", "T05F%3D")
    two = _signed_work("2031-07-01", "VFdP%3D")
    assert one.fingerprint == two.fingerprint
    assert changes(one, two) == "the work changed"  # nothing a user could tell apart


@pytest.mark.parametrize("dest", [True, False], ids=["SRC=DEST", "SRC"])
def test_the_stored_work_holds_no_credential(dest: bool) -> None:
    """The description the journal keeps names the URLs without their tokens, in the command,
    the inputs (with or without a DEST) and the outputs; the fingerprint is made from it."""
    work = _signed_work("2030-01-01", "U0VDUkVU%3D", dest=dest)
    stored = json.dumps(work.as_json())
    assert "U0VDUkVU" not in stored
    assert "sig=U" not in stored
    assert "se=2030" not in stored
    public = "https://acct.blob.core.windows.net/c/a.txt"
    assert list(work.as_json()["inputs"]) == [f"{public}=in/a.txt" if dest else public]
    assert Work.from_json(work.as_json()).fingerprint == work.fingerprint


def _passworded_work(password: str) -> Work:
    url = f"https://reader:{password}@h.example/c/a.txt"
    return Work(("curl", url), ((f"{url}=in/a.txt", FILES), (url, FILES)), (f"out/**={url}",))


def test_a_urls_password_is_no_part_of_the_work() -> None:
    """A password in a URL's userinfo is left out of what the journal stores (inputs keyed
    on the URL without it, the user kept; the command and outputs masked), so a rotated
    password is the same work."""
    work = _passworded_work("U0VDUkVUcHc")
    stored = json.dumps(work.as_json())
    assert "U0VDUkVUcHc" not in stored
    public = "https://reader@h.example/c/a.txt"
    assert sorted(work.as_json()["inputs"]) == [public, f"{public}=in/a.txt"]
    assert work.as_json()["command"] == ["curl", "https://reader:***@h.example/c/a.txt"]
    assert work.fingerprint == _passworded_work("Um90YXRlZA").fingerprint
    assert work.fingerprint == Work.from_json(work.as_json()).fingerprint


def test_commands_that_differ_after_a_signed_url_are_different_work() -> None:
    """A command whose text after a signed URL changed (``;touch f`` to ``;rm f``) is new
    work: only the token is left out of the fingerprint, never the text around it."""
    one = Work(("sh", "-c", "echo http://h/x?sig=abc;touch f"), (), ())
    two = Work(("sh", "-c", "echo http://h/x?sig=abc;rm f"), (), ())
    assert one.fingerprint != two.fingerprint
    assert changes(one, two) == "the command changed"
    assert one.as_json()["command"][2] == "echo http://h/x?sig=***;touch f"


def test_a_stored_work_read_back_is_the_work_that_was_described() -> None:
    """A work read from the journal (credential-free) and the same work described with its
    token are the same: changes() finds no difference in the inputs given."""
    live = _signed_work("2030-01-01", "TElWRQ%3D")
    stored = Work.from_json(live.as_json())
    assert changes(stored, live) == "the work changed"


def test_work_without_credentials_keeps_the_fingerprint_it_always_had(
    stores: Stores, inputs: Path
) -> None:
    """For work that carries no credential the fingerprint is still the digest of the plain
    description, so journals written before stay valid."""
    single, prefix = _urls(inputs)
    work = describe(COMMAND, [single, prefix + "=d/"], OUTPUTS, stores)
    plain = {
        "command": list(work.command),
        "inputs": {given: dict(files) for given, files in work.inputs},
        "outputs": list(work.outputs),
    }
    digest = xxhash.xxh3_128_hexdigest(json.dumps(plain, sort_keys=True).encode())
    assert work.fingerprint == f"xxh3-128:{digest}"


def test_changes_says_whether_an_input_file_changed_is_gone_or_is_new() -> None:
    """A deleted blob is 'gone', an added one 'new', a rewritten one 'changed': the line a
    user reads when the work starts afresh says which."""
    files = (("a.txt", "d1"), ("b.txt", "d2"))
    before = Work(("true",), (("az://c/p/=in/", files),), ())
    gone = Work(("true",), (("az://c/p/=in/", files[:1]),), ())
    new = Work(("true",), (("az://c/p/=in/", (*files, ("c.txt", "d3"))),), ())
    edited = Work(("true",), (("az://c/p/=in/", (("a.txt", "d9"), files[1])),), ())
    assert changes(before, gone) == "input az://c/p/b.txt is gone"
    assert changes(before, new) == "input az://c/p/c.txt is new"
    assert changes(before, edited) == "input az://c/p/a.txt changed"
    assert changes(new, before.__class__(("true",), (("az://c/p/=in/", ()),), ())) == (
        "input az://c/p/a.txt, az://c/p/b.txt, az://c/p/c.txt are gone"
    )


def test_a_specs_work_is_described_from_its_inputs_and_outputs_as_given(
    stores: Stores, inputs: Path
) -> None:
    """The spec holds parsed inputs and outputs, and no fingerprint changed for it: a spec's
    work is the one described from the texts as given (the path before, when the spec held
    the texts), for every way of spelling them, also when an input cannot be listed."""
    from taskkit.runner.plan import describe_work
    from taskkit.runner.spec import resolve

    single, prefix = _urls(inputs)
    given_inputs = (single, f"{single}=x.txt", f"{prefix}=data/", prefix, f"file://{inputs}/*.txt")
    given_outputs = (
        "out/=memory://d/x",
        "out/**=memory://d/x/",
        "year=2024/*.csv=memory://d/y=2024",
        "./res=memory://d/z/",
    )
    options = {"command": COMMAND, "inputs": given_inputs, "outputs": given_outputs}
    spec = resolve(options, environ={})
    work, problem = describe_work(spec, stores)
    assert problem is None
    before = describe(COMMAND, list(given_inputs), given_outputs, stores)
    assert work == before
    assert work.fingerprint == before.fingerprint
    assert work.outputs == given_outputs  # as given: "out/=…x" and "out/**=…x/" stay two
    missing = (*given_inputs, f"file://{inputs}/nothing.txt")
    spec = resolve({**options, "inputs": missing}, environ={})
    work, problem = describe_work(spec, stores)
    assert isinstance(problem, InputNotFound)
    unavailable = tuple((given, (("", "unavailable"),)) for given in missing)
    assert work.fingerprint == Work(COMMAND, unavailable, given_outputs).fingerprint
