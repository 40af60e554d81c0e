"""No credential leaves taskkit: SAS URLs and URLs with a password in their userinfo through
every command, credentials that cannot be used, failures of http(s) sources, account keys a
command prints.

Every taskkit call is a real process. The SAS tokens are real ones, signed with the Azurite
account's key, so the http(s) URLs they ride in really read the blob. After the calls, every
line printed and every byte under the test's folder (journal, logs, working directories, the
stat-cache's SQLite files, the node cache) is searched for the signatures, in every spelling.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from azure.storage.blob import (
    BlobSasPermissions,
    ContainerSasPermissions,
    generate_blob_sas,
    generate_container_sas,
)
from http_fakes import BODY, http_server

from taskkit.testing import Azurite

TASKKIT = (sys.executable, "-m", "taskkit")
TIMEOUT = 120.0
CONTENT = b"hello from a signed url\n"
#: What taskkit says about credentials it cannot use: the variables it reads.
NAMED = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
)
#: Text of adlfs and the Azure SDK that must not reach the user.
UPSTREAM = (
    "unable to connect",
    "Must provide",
    "blank or malformed",
    "Invalid base64",
    "Traceback",
)


@dataclass
class Called:
    argv: list[str]
    code: int
    stdout: str
    stderr: str

    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("taskkit: error: ")]


@dataclass
class Node:
    """A folder standing for a node: state, working directories, caches, all under ``root``;
    every call's output kept, so a test can search all of it at the end."""

    root: Path
    env: dict[str, str]
    calls: list[Called] = field(default_factory=list)
    endpoint: str = ""  # the blob endpoint of the test's Azurite, when it has one

    @classmethod
    def at(cls, root: Path, **extra: str) -> Node:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AZ_BATCH_", "AZURE_", "TASKKIT_"))
        }
        env["TASKKIT_CACHE_DIR"] = str(root / "statcache")
        env.update(extra)
        return cls(root, env)

    @property
    def state(self) -> str:
        return f"file://{self.root / 'state'}"

    def workdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Called:
        argv = [*TASKKIT, *args]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=self.root,
            timeout=TIMEOUT,
            check=False,
        )
        called = Called(argv, done.returncode, done.stdout, done.stderr)
        self.calls.append(called)
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return called

    def run(
        self,
        task: str,
        *options: str,
        command: Sequence[str],
        env: dict[str, str] | None = None,
    ) -> Called:
        ids = ["--job-id", "job-1", "--task-id", task, "--state", self.state]
        workdir = str(self.workdir(f"wd-{task}"))
        return self("run", "--workdir", workdir, *ids, *options, "--", *command, env=env)


def spellings(secret: str) -> set[str]:
    """The ways a signature can be written (as signed, percent-encoded in part, whole, or
    twice), and its longer runs of letters and digits, which every spelling keeps."""
    once = urllib.parse.quote(secret, safe="")
    forms = {secret, urllib.parse.quote(secret), once, urllib.parse.quote(once, safe="")}
    return forms | set(re.findall(r"[A-Za-z0-9]{12,}", secret))


def leaks(node: Node, secrets: set[str]) -> list[str]:
    """Where any of ``secrets`` shows: an output stream, a file's name or its bytes."""
    forms = {form for secret in secrets for form in spellings(secret)}
    found = []
    for call in node.calls:
        for name, text in (("stdout", call.stdout), ("stderr", call.stderr)):
            found += [f"{name} of {call.argv[3:5]}" for form in forms if form in text]
    for path in node.root.rglob("*"):
        found += [f"the name {path}" for form in forms if form in str(path)]
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"the bytes of {path}" for form in forms if form.encode() in data]
    return found


def account_key(azurite: Azurite) -> str:
    found = re.search(r"AccountKey=([^;]+)", azurite.connection_string)
    assert found is not None
    return found.group(1)


def expiry(minutes: int) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)


def blob_sas(azurite: Azurite, container: str, name: str, minutes: int = 60) -> str:
    return generate_blob_sas(
        azurite.account_name,
        container,
        name,
        account_key=account_key(azurite),
        permission=BlobSasPermissions(read=True),
        expiry=expiry(minutes),
    )


def signature(sas: str) -> str:
    return urllib.parse.parse_qs(sas)["sig"][0]


@dataclass
class Signed:
    """A blob of the test's container and the SAS tokens made for it; every signature made
    is remembered, so the test can search for all of them."""

    azurite: Azurite
    container: str
    secrets: set[str] = field(default_factory=set)

    @property
    def public(self) -> str:
        return f"{self.azurite.blob_endpoint}/{self.container}/dir/a.txt"

    def _signed(self, sas: str) -> str:
        self.secrets.add(signature(sas))
        return sas

    def url(self, minutes: int = 60, name: str = "dir/a.txt") -> str:
        """A URL that reads blob ``name``, with a token of its own."""
        sas = blob_sas(self.azurite, self.container, name, minutes)
        return f"{self.azurite.blob_endpoint}/{self.container}/{name}?{self._signed(sas)}"

    def container_sas(self, permission: ContainerSasPermissions) -> str:
        sas = generate_container_sas(
            self.azurite.account_name,
            self.container,
            account_key=account_key(self.azurite),
            permission=permission,
            expiry=expiry(60),
        )
        return self._signed(sas)


@pytest.fixture
def signed(azurite: Azurite, azurite_container: str) -> Signed:
    """The blob ``dir/a.txt``, readable through SAS URLs."""
    with azurite.blob_service_client() as service:
        service.get_blob_client(azurite_container, "dir/a.txt").upload_blob(CONTENT)
    return Signed(azurite, azurite_container)


# -- SAS URLs: the class test ---------------------------------------------------------------------


def _through_stage(node: Node, signed: Signed, wd: Path, cache: list[str]) -> None:
    """stage: verbose, dry run, JSON, a bare SRC, a rotated token, a missing blob, a forged
    signature."""
    url, public = signed.url(), signed.public
    done = node("stage", "-v", "-i", f"{url}=in/a.txt", "--workdir", str(wd), *cache)
    assert done.code == 0, done.stderr
    assert (wd / "in" / "a.txt").read_bytes() == CONTENT
    assert f"{public} -> in/a.txt" in done.stdout  # shown once, without its token
    assert "http://http" not in done.stdout
    done = node("stage", "-v", "--dry-run", "-i", f"{url}=in/", "--workdir", str(wd), *cache)
    assert done.code == 0, done.stderr
    assert "-> in/a.txt" in done.stdout
    # a bare SRC: the '=' of the query string is the URL's own, not SRC=DEST's
    done = node("stage", "-i", url, "--workdir", str(wd), "--no-node-cache", "--json")
    assert done.code == 0, done.stderr
    assert (wd / "a.txt").read_bytes() == CONTENT  # named by its path, not its query string
    # a rotated token: the same source, known to the stat-cache (nothing is fetched)
    again = signed.url(minutes=90)
    done = node("stage", "--json", "-i", f"{again}=in/a.txt", "--workdir", str(wd), *cache)
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["skipped"] == 1
    done = node("stage", "-i", f"{signed.url(name='dir/none.txt')}=x", "--workdir", str(wd))
    assert done.code == 66, done.stderr
    assert len(done.errors()) == 1
    forged = re.sub(r"sig=[^&]*", "sig=" + "Zm9yZ2Vk" * 5 + "%3D", url)
    signed.secrets.add("Zm9yZ2Vk" * 5)
    done = node("stage", "-i", f"{forged}=x", "--workdir", str(wd), "--retries", "1")
    assert done.code == 78, done.stderr
    assert "access denied (HTTP 403)" in done.errors()[0]


def _through_upload(node: Node, signed: Signed, wd: Path) -> str:
    """upload: an http(s) DEST with a container SAS is refused at once, in one line (also in
    a dry run); through az:// with a read-only SAS, storage refuses the write. Returns the
    http(s) DEST."""
    writable = ContainerSasPermissions(read=True, write=True, list=True, create=True)
    dest = f"{node.endpoint}/{signed.container}/res/?{signed.container_sas(writable)}"
    (wd / "out.txt").write_text("result\n")
    for dry in ([], ["--dry-run"]):
        done = node("upload", *dry, "-o", f"out.txt={dest}", "--workdir", str(wd))
        assert done.code == 64, done.stderr
        assert "DEST cannot be an http(s) URL" in done.errors()[0]
    readonly = signed.container_sas(ContainerSasPermissions(read=True, list=True))
    sas_only = {
        "AZURE_STORAGE_CONNECTION_STRING": f"BlobEndpoint={node.endpoint};"
        f"SharedAccessSignature={readonly}"
    }
    done = node(
        "upload", "-o", f"out.txt=az://{signed.container}/res/", "--workdir", str(wd),
        "--retries", "1", env=sas_only,
    )  # fmt: skip
    assert done.code == 78, done.stderr
    assert len(done.errors()) == 1
    return dest


def _through_run(node: Node, signed: Signed, dest: str) -> None:
    """run: -i a SAS URL and -o a local DEST, its dry run, a rotated token (the goal is met),
    an http(s) DEST (refused before anything runs), and status."""
    url, public = signed.url(), signed.public
    out = node.root / "published"
    counter = node.root / "runs.txt"
    command = ["sh", "-c", 'cat in/a.txt; echo run >> "$1"', "sh", str(counter)]
    outputs = ["-o", f"in/*=file://{out}/"]
    done = node.run("t1", "--dry-run", "-i", f"{url}=in/a.txt", *outputs, command=command)
    assert done.code == 0, done.stderr
    assert public in done.stdout
    done = node.run("t1", "-i", f"{url}=in/a.txt", *outputs, command=command)
    assert done.code == 0, done.stderr
    assert (out / "a.txt").read_bytes() == CONTENT
    outcome = json.loads((node.root / "state" / "job-1" / "t1" / "outcome.json").read_text())
    assert list(outcome["work"]["inputs"]) == [f"{public}=in/a.txt"]
    done = node.run("t1", "-i", f"{signed.url(minutes=90)}=in/a.txt", *outputs, command=command)
    assert done.code == 0, done.stderr
    assert "not run again" in done.stderr  # a rotated token is the same work
    assert counter.read_text() == "run\n"
    done = node.run("t2", "-i", f"{url}=in/a.txt", "-o", f"in/*={dest}", command=["true"])
    assert done.code == 200, done.stderr
    assert len(done.errors()) == 1
    for form in ([], ["--json"]):
        ids = ["--job-id", "job-1", "--task-id", "t1"]
        assert node("status", "--state", node.state, *ids, *form).code == 0


@pytest.mark.azurite
def test_a_sas_url_through_every_command_leaves_no_signature_anywhere(
    tmp_path: Path, azurite: Azurite, signed: Signed
) -> None:
    """stage (-v, --json, --dry-run, errors), upload (a refused DEST, a write refused by a
    read-only SAS), run (-i, -o, --dry-run, a rotated token) and status: no signature in any
    output, journal record, log, stat-cache row, node-cache name or file, working directory."""
    node = Node.at(tmp_path, AZ_BATCH_NODE_SHARED_DIR=str(tmp_path / "shared"))
    node.endpoint = azurite.blob_endpoint
    wd = node.workdir("staged")
    _through_stage(node, signed, wd, ["--cache-dir", str(tmp_path / "nodecache")])
    dest = _through_upload(node, signed, wd)
    _through_run(node, signed, dest)
    assert (tmp_path / "nodecache" / "objects").is_dir()  # the node cache was used
    assert len(signed.secrets) >= 6
    assert leaks(node, signed.secrets) == []


@pytest.mark.azurite
def test_the_stat_cache_and_node_cache_key_on_the_url_without_its_token(
    tmp_path: Path, signed: Signed
) -> None:
    """A second working directory, with a rotated token, links the node cache's object: the
    source version is found under the URL without its credential."""
    url = signed.url()
    node = Node.at(tmp_path)
    cache = ["--cache-dir", str(tmp_path / "nodecache")]
    first = node(
        "stage", "--json", "-i", f"{url}=a.txt", "--workdir", str(node.workdir("w1")), *cache
    )
    assert json.loads(first.stdout)["transferred"] == 1, first.stderr
    other = signed.url(minutes=120)
    second = node(
        "stage", "--json", "-i", f"{other}=a.txt", "--workdir", str(node.workdir("w2")), *cache
    )
    assert json.loads(second.stdout)["linked"] == 1, second.stderr
    assert (tmp_path / "w2" / "a.txt").read_bytes() == CONTENT


# -- passwords in a URL's userinfo: the class test -----------------------------------------------


@dataclass
class Passworded:
    """URLs of the fake http server with ``reader:PASSWORD@`` in them; every password used is
    remembered (with the Basic header that carries it), so the test can search for all."""

    base: str
    secrets: set[str] = field(default_factory=set)

    def url(self, password: str, path: str = "ok/dir/a.txt") -> str:
        self.secrets |= {password, base64.b64encode(f"reader:{password}".encode()).decode()}
        return self.base.replace("http://", f"http://reader:{password}@") + "/" + path

    def shown(self, path: str = "ok/dir/a.txt") -> str:
        return self.base.replace("http://", "http://reader:***@") + "/" + path


def _password_through_stage(node: Node, urls: Passworded, cache: list[str]) -> None:
    """stage: verbose, dry run, a rotated password (the stat-cache and the node cache know
    the source), a missing file and a refusal (one error line each)."""
    wd = node.workdir("staged")
    done = node("stage", "-v", "-i", f"{urls.url('Hunter2Secret')}=in/a.txt", "--workdir",
                str(wd), *cache)  # fmt: skip
    assert done.code == 0, done.stderr
    assert (wd / "in" / "a.txt").read_bytes() == BODY
    assert f"{urls.shown()} -> in/a.txt" in done.stdout  # a password was given: masked
    done = node("stage", "-v", "--dry-run", "-i", f"{urls.url('Hunter2Secret')}=in/", "--workdir",
                str(wd), *cache)  # fmt: skip
    assert done.code == 0, done.stderr
    assert urls.shown() in done.stdout
    rotated = urls.url("Rotated3Secret")
    done = node("stage", "--json", "-i", f"{rotated}=in/a.txt", "--workdir", str(wd), *cache)
    assert json.loads(done.stdout)["skipped"] == 1, done.stderr
    other = node.workdir("staged-again")
    done = node("stage", "--json", "-i", f"{rotated}=a.txt", "--workdir", str(other), *cache)
    assert json.loads(done.stdout)["linked"] == 1, done.stderr
    for path, code in (("status/404/x.txt", 66), ("status/403/x.txt", 78)):
        done = node("stage", "-i", f"{urls.url('Failing4Secret', path)}=x", "--workdir", str(wd))
        assert done.code == code, done.stderr
        [line] = done.errors()
        assert urls.shown(path) in line


def _password_through_run(node: Node, urls: Passworded) -> None:
    """run: -i with -v, its dry run, a rotated password (the same work), a command line and
    a command's output holding a password, and status."""
    url = urls.url("Hunter2Secret")
    command = ["sh", "-c", 'cat in/a.txt; echo "$1"', "sh", urls.url("Command5Secret")]
    done = node.run("p1", "--dry-run", "-i", f"{url}=in/a.txt", command=command)
    assert done.code == 0, done.stderr
    assert urls.shown() in done.stdout
    done = node.run("p1", "-v", "-i", f"{url}=in/a.txt", command=command)
    assert done.code == 0, done.stderr
    assert urls.shown() in done.stderr  # the download, told with -v
    record = node.root / "state" / "job-1" / "p1"
    outcome = json.loads((record / "outcome.json").read_text())
    keyed = urls.base.replace("http://", "http://reader@") + "/ok/dir/a.txt"
    assert list(outcome["work"]["inputs"]) == [f"{keyed}=in/a.txt"]
    assert (
        (record / "logs" / "00001" / "stdout.txt").read_text().endswith(f"{urls.shown()}\n")
    )  # the command's own output, stored with the password masked
    again = node.run("p1", "-i", f"{urls.url('Rotated3Secret')}=in/a.txt", command=command)
    assert again.code == 0, again.stderr
    assert "not run again" in again.stderr
    for form in ([], ["--json"]):
        ids = ["--job-id", "job-1", "--task-id", "p1"]
        assert node("status", "--state", node.state, *ids, *form).code == 0


def _password_through_task_json(node: Node, urls: Passworded) -> None:
    """task-json refuses a password as it refuses a token: in an input, an output, the
    command, an environment setting; one line, no JSON."""
    url = urls.url("TaskJson6Secret")
    ids = ["batch", "task-json", "--id", "t", "--state", "az://state/runs"]
    for where in (
        ["-i", f"{url}=a.txt", "--", "true"],
        ["--", "curl", url],
        ["--env", f"SOURCE={url}", "--", "true"],
    ):
        done = node(*ids, *where)
        assert done.code == 78, done.stderr
        assert done.stdout == ""
        [line] = done.errors()
        assert "would carry a credential" in line


def test_a_userinfo_password_through_every_command_leaves_it_nowhere(tmp_path: Path) -> None:
    """http://reader:PASSWORD@... through stage (-v, --dry-run, a rotated password, errors),
    run (-i, --dry-run, the command line, the command's output), status and task-json: the
    password reaches the server, and no output, journal record, log, stat-cache row,
    node-cache name or file holds it; a rotated password reads the same source."""
    node = Node.at(tmp_path, AZ_BATCH_NODE_SHARED_DIR=str(tmp_path / "shared"))
    authorizations: list[str] = []
    with http_server(authorizations=authorizations) as (base, _):
        urls = Passworded(base)
        _password_through_stage(node, urls, ["--cache-dir", str(tmp_path / "nodecache")])
        _password_through_run(node, urls)
        _password_through_task_json(node, urls)
    sent = {base64.b64decode(header.split()[1]).decode() for header in authorizations}
    assert {"reader:Hunter2Secret", "reader:Failing4Secret"} <= sent  # used, not dropped
    assert len(urls.secrets) == 10
    # The command's own output on the console is passed through as written; stored, it is not.
    printed = {"Command5Secret", base64.b64encode(b"reader:Command5Secret").decode()}
    assert leaks(node, urls.secrets - printed) == []
    assert leaks(Node(node.root, node.env), urls.secrets) == []


# -- http(s) sources: shown once, classified by what really happened ------------------------------


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused, and no
    other process can take it while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_a_refused_http_connection_is_retryable_and_shows_its_url_once(
    tmp_path: Path, refusing_port: int
) -> None:
    """Nothing listening is 'unreachable, retry later' (75; 204 in run), never 'not found', and
    the URL is printed as given, once."""
    node = Node.at(tmp_path)
    url = f"http://127.0.0.1:{refusing_port}/acct/c/a.txt"
    done = node(
        "stage", "-i", f"{url}=a.txt", "--workdir", str(node.workdir("w")), "--retries", "1"
    )
    assert done.code == 75, done.stderr
    [line] = done.errors()
    assert f"cannot read {url}:" in line
    assert line.count("http://") == 1
    assert "not found" not in line
    ran = node.run("t", "-i", f"{url}=a.txt", command=["true"])
    assert ran.code == 204, ran.stderr
    assert not any("not found" in line for line in ran.errors())


@pytest.mark.azurite
@pytest.mark.parametrize(
    ("case", "code", "said"),
    [("missing-blob", 66, "not found"), ("bad-signature", 78, "access denied (HTTP 403)")],
)
def test_http_failures_keep_their_meaning(
    tmp_path: Path, signed: Signed, case: str, code: int, said: str
) -> None:
    """Through the same path as a refused connection, a 404 is still 'not found' and a 403
    'access denied': the cause of fsspec's FileNotFoundError decides."""
    if case == "missing-blob":  # a valid token for a blob that is not there
        url = signed.url(name="dir/none.txt")
    else:  # a permission the signature does not cover
        url = signed.url().replace("sp=r", "sp=rw")
    node = Node.at(tmp_path)
    done = node("stage", "-i", f"{url}=a.txt", "--workdir", str(node.workdir("w")))
    assert done.code == code, done.stderr
    [line] = done.errors()
    assert said in line
    assert line.count("http://") == 1


# -- credentials that cannot be used ------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"AZURE_STORAGE_CONNECTION_STRING": "garbage"},
        {},
        {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "not base64 at all!"},
    ],
    ids=["garbled-connection-string", "nothing-set", "key-not-base64"],
)
def test_unusable_azure_credentials_get_taskkits_own_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """stage and upload exit 78, run 200, each with one line naming the variables taskkit
    reads; never adlfs's or the SDK's text, never the credential."""
    node = Node.at(tmp_path)
    wd = node.workdir("w")
    (wd / "out.txt").write_text("x")
    calls = [
        (node("stage", "-i", "az://data/a.txt=a.txt", "--workdir", str(wd), env=env), 78),
        (node("upload", "-o", "out.txt=az://results/r/", "--workdir", str(wd), env=env), 78),
        (node.run("t", "-i", "az://data/a.txt=a.txt", command=["true"], env=env), 200),
    ]
    for done, code in calls:
        assert done.code == code, done.stderr
        # run ends its attempt with a note of the failure; stage and upload with an error
        said = [line for line in done.stderr.splitlines() if all(n in line for n in NAMED)]
        assert len(said) == 1, done.stderr
        assert code == 200 or said == done.errors()
        assert not any(text in done.stderr for text in UPSTREAM), done.stderr
        assert not any(value in done.stderr for value in env.values() if len(value) > 4)


# -- account keys a command prints ----------------------------------------------------------------


def test_a_bare_account_key_printed_by_the_command_is_not_in_the_stored_logs(
    tmp_path: Path,
) -> None:
    """An account key (88 base64 characters) the command prints, configured or not, is hidden
    in the stored stdout, stderr; the line around it is kept."""
    node = Node.at(tmp_path)
    key = base64.b64encode(os.urandom(64)).decode()
    assert len(key) == 88
    assert key.endswith("==")
    script = 'echo "key: $1 ok"; echo "AccountKey=$1" >&2; echo "$1"'
    done = node.run("t", command=["sh", "-c", script, "sh", key])
    assert done.code == 0, done.stderr
    logs = tmp_path / "state" / "job-1" / "t" / "logs" / "00001"
    stdout = (logs / "stdout.txt").read_text()
    assert stdout.splitlines() == ["key: *** ok", "***"]
    assert key not in (logs / "stderr.txt").read_text()
    assert leaks(Node(node.root, node.env), {key}) == []
