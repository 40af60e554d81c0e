"""R5 secrets: taskkit's flows run with each form of credential it reads, against Azurite; then
everything taskkit printed or stored is searched for those credentials.

The three forms (``taskkit.storage.errors.CREDENTIAL_SOURCES``), each the real SDK path:

- ``connection string``: ``AZURE_STORAGE_CONNECTION_STRING`` with ``AccountKey`` and Azurite's
  ``BlobEndpoint`` (plain http);
- ``account key``: ``AZURE_STORAGE_ACCOUNT_NAME`` + ``AZURE_STORAGE_ACCOUNT_KEY``;
- ``SAS token``: ``AZURE_STORAGE_ACCOUNT_NAME`` + ``AZURE_STORAGE_SAS_TOKEN``, an account SAS
  signed with Azurite's key.

With an account name and no connection string, adlfs calls ``https://ACCOUNT.blob.core.windows.net``
and nothing else. So those two forms run with ``HTTPS_PROXY`` naming a small local TLS front
(:class:`TlsFront`): it answers the ``CONNECT``, presents a certificate made for this run for that
host (trusted through ``SSL_CERT_FILE``, a CA of this run), and hands the decrypted bytes to
Azurite, which takes the account from the ``Host`` header (its production-style URLs). Nothing of
taskkit is bent: the variables are the ones a Batch node would have.

The flows, for each form: ``stage`` (-v, --json --dry-run, a missing blob), ``upload`` (-v),
``run`` (inputs through the node cache, a step publishing its outputs, a checkpoint, logs,
outputs; again with the goal met; --dry-run; a permanent failure on the last attempt, which
writes diagnostics; ``--local``), ``status`` (the job, a task --json), ``call`` (a task function
with an input and an output; again, goal met), ``batch task-json`` (a command and ``--call``),
and ``local run`` of those task JSONs on 2 nodes with ``--report``. Size "full" runs them all
for each form; "ci" runs them all for the connection string, and for the other two forms the
commands that go through every path once (stage, upload, run with its step, call, task-json,
local run).

Then every place is searched for every credential of every form (the account key, the
connection string, the SAS token and its signature; each also percent-encoded once and twice, and
the key's and the signature's runs of 16 letters and digits, which any spelling keeps): the
stdout and stderr of every command; the name and bytes of every file under the suite's scratch
folder (working directories, stat-caches, node caches, the local-run DIR with its nodes, state
and report, the task JSON); the name, metadata and bytes of every blob of every container
(journals, manifests, logs, checkpoints, results, outputs). A hit is a problem naming the place
and the kind of secret, never the secret. The commands never print a credential themselves.

Run alone: ``.venv/bin/python bench/rel_secrets.py [--size ci|full]`` (needs Azurite:
``TASKKIT_AZURITE`` or ``make test``'s ``.azurite/``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from taskkit.testing import Azurite, find_azurite

#: The repository: its .azurite/ holds the Azurite that make test installs.
REPO = Path(__file__).resolve().parent.parent
NAME = "R5 secrets"
TASKKIT = (sys.executable, "-m", "taskkit")
#: Seconds one command may take before the suite calls it hung.
TIMEOUT = 180.0
DATA, OUT, STATE = "r5data", "r5out", "r5state"
INPUT = b"the input of every flow\n"
#: The forms of credential taskkit reads, in the order they run.
FORMS = ("connection string", "account key", "SAS token")
#: Variables that must not leak from the caller into a flow's environment.
FOREIGN = ("AZ_BATCH_", "AZURE_", "TASKKIT_")
#: Variables that would send the flows' requests elsewhere (any case).
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ssl_cert_file")


# -- what to search for --------------------------------------------------------------------------


def spellings(secret: str, runs: bool) -> set[str]:
    """The ways ``secret`` can be written: as is, percent-encoded (``/`` kept, and not), twice;
    with ``runs``, also its runs of 16 or more letters and digits, which every spelling keeps."""
    once = urllib.parse.quote(secret, safe="")
    forms = {secret, urllib.parse.quote(secret), once, urllib.parse.quote(once, safe="")}
    if runs:
        forms |= set(re.findall(r"[A-Za-z0-9]{16,}", secret))
    return forms


@dataclass(frozen=True)
class Secret:
    """One credential to search for, by the name a problem gives it (never its value)."""

    label: str
    value: str
    runs: bool = True

    def forms(self) -> set[bytes]:
        return {form.encode() for form in spellings(self.value, self.runs)}


@dataclass
class Scan:
    """What the search went through, and where it found a secret."""

    files: int = 0
    blobs: int = 0
    texts: int = 0
    scanned: int = 0
    hits: list[str] = field(default_factory=list)

    def search(self, where: str, data: bytes, secrets: Sequence[Secret]) -> None:
        self.scanned += len(data)
        for secret in secrets:
            if any(form in data for form in secret.forms()):
                self.hits.append(f"{secret.label} in {where}")

    def text(self, where: str, text: str, secrets: Sequence[Secret]) -> None:
        self.texts += 1
        self.search(where, text.encode("utf-8", "surrogateescape"), secrets)

    def tree(self, root: Path, secrets: Sequence[Secret], base: Path | None = None) -> None:
        """Every name and every regular file's bytes below ``root`` (links not followed)."""
        base = base or root
        for path in sorted(root.rglob("*")):
            where = str(path.relative_to(base))
            self.search(f"the name {where}", where.encode("utf-8", "surrogateescape"), secrets)
            if path.is_file() and not path.is_symlink():
                self.files += 1
                self.search(f"the file {where}", path.read_bytes(), secrets)

    def containers(self, azurite: Azurite, secrets: Sequence[Secret]) -> None:
        """Every blob of every container: its name, its metadata and its bytes."""
        with azurite.blob_service_client() as service:
            for container in service.list_containers():
                client = service.get_container_client(container.name)
                for blob in client.list_blobs(include=["metadata"]):
                    self.blobs += 1
                    where = f"az://{container.name}/{blob.name}"
                    self.search(f"the blob name {where}", where.encode(), secrets)
                    meta = json.dumps(blob.metadata or {}).encode()
                    self.search(f"the metadata of {where}", meta, secrets)
                    data = client.download_blob(blob.name).readall()
                    self.search(f"the blob {where}", data, secrets)


def hidden(text: str, secrets: Sequence[Secret]) -> str:
    """``text`` with every spelling of every secret replaced, for a problem's message."""
    for secret in secrets:
        for form in sorted(spellings(secret.value, secret.runs), key=len, reverse=True):
            text = text.replace(form, "***")
    return text


# -- a TLS front for the forms that name an account ---------------------------------------------


def _make_certificates(folder: Path, host: str) -> tuple[Path, Path]:
    """A CA of this run (``ca.pem``, for SSL_CERT_FILE) and a certificate it signed for
    ``host`` with its key (``front.pem``); EC keys, made in milliseconds."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "taskkit R5 test CA")])
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, front_file = folder / "ca.pem", folder / "front.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    private = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    front_file.write_bytes(leaf.public_bytes(pem) + private)
    return ca_file, front_file


class TlsFront:
    """An HTTPS proxy for one host: ``CONNECT HOST:443`` is answered, the TLS is ended here with
    a certificate of this run, and the plain bytes go to ``upstream`` (Azurite's port). A context
    manager; ``environ()`` is what a client needs to go through it."""

    def __init__(self, host: str, upstream: int, folder: Path) -> None:
        self.host = host
        self.upstream = upstream
        self.connections = 0
        self._ca, front = _make_certificates(folder, host)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(front)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._accept, name="tls-front", daemon=True)

    def __enter__(self) -> TlsFront:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._listener.close()  # accept() fails, and the loop ends
        self._thread.join(5)

    def environ(self) -> dict[str, str]:
        port = self._listener.getsockname()[1]
        return {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "SSL_CERT_FILE": str(self._ca)}

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(conn)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            if not head.startswith(f"CONNECT {self.host}:443 ".encode()):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            try:
                tls = stack.enter_context(self._context.wrap_socket(conn, server_side=True))
                plain = stack.enter_context(socket.create_connection(("127.0.0.1", self.upstream)))
                self._pipe(tls, plain)
            except OSError:
                return  # the client or Azurite went away: so does this connection

    @staticmethod
    def _pipe(tls: ssl.SSLSocket, plain: socket.socket) -> None:
        # One thread per connection reads and writes the TLS socket: OpenSSL does not take a
        # read and a write of one connection from two threads at once.
        while True:
            ready = [tls] if tls.pending() else select.select([tls, plain], [], [])[0]
            for source in ready:
                data = source.recv(65536)
                if not data:
                    return
                (plain if source is tls else tls).sendall(data)


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


# -- the flows ------------------------------------------------------------------------------------


@dataclass
class Called:
    form: str
    argv: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def what(self) -> str:
        """The command, short: its subcommand and the words that tell it apart."""
        words = [w for w in self.argv[len(TASKKIT) :] if not w.startswith(("/", "file:"))]
        return f"{self.form}: taskkit {' '.join(words[:6])}"


@dataclass
class Form:
    """One form of credential: its environment, its place under the scratch folder, and every
    command run with it."""

    name: str
    env: dict[str, str]
    root: Path
    calls: list[Called] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-").lower()

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def __call__(
        self,
        *args: str,
        expect: int = 0,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Called:
        argv = [*TASKKIT, *args]
        try:
            done = subprocess.run(
                argv, env=env or self.env, cwd=cwd or self.root, capture_output=True, text=True,
                timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            called = Called(self.name, argv, done.returncode, done.stdout, done.stderr)
        except subprocess.TimeoutExpired as exc:
            out, err = (_text(x) for x in (exc.stdout, exc.stderr))
            called = Called(self.name, argv, -1, out, f"{err}\n(killed after {TIMEOUT:g} s)")
        self.calls.append(called)
        if "Traceback (most recent call last)" in called.stdout + called.stderr:
            self.problems.append(f"{called.what} printed a traceback")
        if called.code != expect:
            last = (called.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
            self.problems.append(f"{called.what} exited {called.code}, not {expect}: {last}")
        return called


def _functions(form: Form) -> Path:
    """A module of task functions for ``taskkit call``: one input, one output, one result."""
    folder = form.dir("functions")
    (folder / "r5fns.py").write_text(
        f'''"""Task functions of the R5 secrets suite."""

from pathlib import Path

import taskkit


@taskkit.task(inputs={{"src": "az://{DATA}/in/"}}, outputs={{"fout/*": "az://{OUT}/{form.slug}/call/"}})
def shout(n: int, *, src: Path = taskkit.staged) -> str:
    text = (src / "a.txt").read_text()
    Path("fout").mkdir(exist_ok=True)
    Path("fout/s.txt").write_text(text.upper() * n)
    return text.upper()
'''
    )
    return folder


#: A command of several steps: a step publishing its output, a checkpoint, output on both
#: streams, and an output for taskkit run to publish.
SCRIPT = (
    "set -e; "
    "taskkit step one -o \"mid/*=$1\" -- sh -c 'mkdir -p mid && cat in/a.txt > mid/m.txt'; "
    'echo checkpoint > "$TASKKIT_CHECKPOINT_DIR/c.txt"; '
    "mkdir -p out; cp mid/m.txt out/r.txt; echo 'step one done'; echo 'a line on stderr' >&2"
)


def _run_flows(form: Form, full: bool) -> Path:
    """The commands of the form, in order (``full``: all of them, else those that read and write
    through every path once); returns the task JSON file for ``local run``."""
    state = f"az://{STATE}/{form.slug}"
    ids = ["--state", state, "--job-id", "r5"]
    wd = form.dir("staged")
    form("stage", "-v", "-i", f"az://{DATA}/in/=in/", "--workdir", str(wd))
    if full:
        form("stage", "--json", "--dry-run", "-i", f"az://{DATA}/in/=in/", "--workdir", str(wd))
        missing = ["-i", f"az://{DATA}/none.txt=x", "--retries", "1"]
        form("stage", *missing, "--workdir", str(wd), expect=66)
    (wd / "out").mkdir(exist_ok=True)
    (wd / "out" / "u.txt").write_text("uploaded\n")
    form("upload", "-v", "-o", f"out/**=az://{OUT}/{form.slug}/up/", "--workdir", str(wd))
    steps = [
        "-i", f"az://{DATA}/in/=in/", "-o", f"out/**=az://{OUT}/{form.slug}/run/",
        "--checkpoint-dir", "ck", "-v", "--", "sh", "-c", SCRIPT, "sh", f"az://{OUT}/{form.slug}/mid/",
    ]  # fmt: skip
    run_wd = ["--workdir", str(form.dir("wd-steps"))]
    form("run", *ids, "--task-id", "steps", *run_wd, *steps)
    if full:
        form("run", *ids, "--task-id", "steps", *run_wd, *steps)  # the goal is met
        form("run", *ids, "--task-id", "steps", *run_wd, "--dry-run", *steps)
        failing = ["--permanent-codes", "3", "--max-retries", "0", "--", "sh", "-c", "exit 3"]
        form("run", *ids, "--task-id", "fails", "--workdir", str(form.dir("wd-fails")),
             *failing, expect=3)  # fmt: skip
        form("status", *ids)
        form("status", *ids, "--task-id", "steps", "--json")
        form("run", "--local", str(form.root / "local-mode"), "-i", f"az://{DATA}/in/=in/",
             "--", "cat", "in/a.txt")  # fmt: skip
    functions = _functions(form)
    calls = form.dir("calls")
    call = ["call", "--state", f"{state}-calls", "--path", str(functions), "r5fns:shout", "n=2"]
    form(*call, "--json", cwd=calls)
    if full:
        form(*call, cwd=calls)  # the goal is met
    tasks = form.root / "tasks.json"
    made = [
        form("batch", "task-json", "--id", "steps2", "--state", state, *steps),
        form("batch", "task-json", "--id", "call2", "--state", f"{state}-calls",
             "--path", str(functions), "--call", "r5fns:shout", "n=3"),
    ]  # fmt: skip
    with contextlib.suppress(json.JSONDecodeError):
        tasks.write_text(json.dumps([json.loads(c.stdout) for c in made], indent=2))
    return tasks


def _local_run(form: Form, tasks: Path) -> None:
    """The task JSON on 2 emulated nodes, with a report, in an environment without the caches
    the flows above were given (each node has its own, under DIR)."""
    caches = ("TASKKIT_CACHE_DIR", "TASKKIT_NODE_CACHE")
    env = {k: v for k, v in form.env.items() if k not in caches}
    local = form.root / "local"
    report = form.root / "report.json"
    argv = ["local", "run", str(tasks), "--nodes", "2", "--slots", "2", "--job-id", "r5local",
            "--report", str(report), "--dir", str(local)]  # fmt: skip
    done = form(*argv, env=env)
    if done.code == 0 and not report.is_file():
        form.problems.append(f"{done.what}: no report at {report.name}")


# -- the suite ------------------------------------------------------------------------------------


def _account_key(azurite: Azurite) -> str:
    found = re.search(r"AccountKey=([^;]+)", azurite.connection_string)
    assert found is not None
    return found.group(1)


def _sas_token(azurite: Azurite) -> str:
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    every = AccountSasPermissions(
        read=True, write=True, delete=True, list=True, add=True, create=True, update=True,
        process=True, tag=True, filter_by_tags=True, set_immutability_policy=True,
        delete_previous_version=True, permanent_delete=True,
    )  # fmt: skip
    return generate_account_sas(
        azurite.account_name,
        _account_key(azurite),
        ResourceTypes(service=True, container=True, object=True),
        every,
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2),
    )


def secrets_of(connection_string: str, key: str, sas: str) -> list[Secret]:
    """Every credential a form hands taskkit, named as a problem names it."""
    signature = urllib.parse.parse_qs(sas)["sig"][0]
    return [
        Secret("the account key", key),
        Secret("the connection string", connection_string, runs=False),
        Secret("the SAS token", sas, runs=False),
        Secret("the SAS signature", signature),
    ]


def base_environ() -> dict[str, str]:
    """This environment without Batch's, Azure's and taskkit's variables nor a proxy of its
    own, with this Python's ``taskkit`` first on PATH (task command lines call it by name)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(FOREIGN) and k.lower() not in PROXIES
    }
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


@contextlib.contextmanager
def _forms(azurite: Azurite, scratch: Path) -> Iterator[list[Form]]:
    key, sas = _account_key(azurite), _sas_token(azurite)
    host = f"{azurite.account_name}.blob.core.windows.net"
    with TlsFront(host, azurite.port, scratch) as front:
        forms = []
        account = {"AZURE_STORAGE_ACCOUNT_NAME": azurite.account_name}
        variables = (
            {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
            {**account, "AZURE_STORAGE_ACCOUNT_KEY": key},
            {**account, "AZURE_STORAGE_SAS_TOKEN": sas},
        )
        for name, credentials in zip(FORMS, variables, strict=True):
            root = scratch / name.replace(" ", "-")
            env = base_environ()
            env.update(credentials)
            if "AZURE_STORAGE_CONNECTION_STRING" not in credentials:
                env.update(front.environ())
            env["TASKKIT_CACHE_DIR"] = str(root / "statcache")
            env["TASKKIT_NODE_CACHE"] = str(root / "nodecache")
            root.mkdir(parents=True)
            forms.append(Form(name, env, root))
        yield forms
    if not front.connections:  # else those two forms proved nothing of their own
        forms[-1].problems.append(f"no request went through the TLS front for {host}")


def suite(size: str, scratch: Path) -> dict[str, object]:
    """R5 at ``size`` ("ci" or "full"), in ``scratch`` (an empty folder of the caller's)."""
    started = time.monotonic()
    with Azurite(find_azurite(cwd=REPO)) as azurite:
        with azurite.blob_service_client() as service:
            for container in (DATA, OUT, STATE):
                service.create_container(container)
            service.get_blob_client(DATA, "in/a.txt").upload_blob(INPUT)
        secrets = secrets_of(azurite.connection_string, _account_key(azurite), _sas_token(azurite))
        with _forms(azurite, scratch) as forms:
            for index, form in enumerate(forms):
                tasks = _run_flows(form, full=size == "full" or index == 0)
                _local_run(form, tasks)
        scan = Scan()
        for form in forms:
            for call in form.calls:
                scan.text(f"the stdout of {call.what}", call.stdout, secrets)
                scan.text(f"the stderr of {call.what}", call.stderr, secrets)
        scan.tree(scratch, secrets)
        scan.containers(azurite, secrets)
    problems = [p for form in forms for p in form.problems] + sorted(set(scan.hits))
    problems = [hidden(p, secrets) for p in problems]  # a place's name may hold one too
    commands = sum(len(form.calls) for form in forms)
    rows = [
        ("flows run", f"{commands} commands over {len(forms)} credential forms "
                      f"({', '.join(FORMS)}), {time.monotonic() - started:.0f} s"),
        ("files + blobs scanned", f"{scan.files} files + {scan.blobs} blobs "
                                  f"(+ {scan.texts} stdout/stderr texts)"),
        ("bytes scanned", f"{scan.scanned / 1e6:.1f} MB"),
        ("hits (target 0)", str(len(set(scan.hits)))),
    ]  # fmt: skip
    return {"name": NAME, "rows": rows, "problems": problems}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", choices=("ci", "full"), default="full")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="taskkit-r5-") as tmp:
        result = suite(args.size, Path(tmp))
    return print_result(result)


def print_result(result: Mapping[str, object]) -> int:
    """The suite's rows, then its problems (or that every invariant held); the exit code."""
    from benchlib import report_anomalies

    rows = result["rows"]
    problems = result["problems"]
    assert isinstance(rows, list)
    assert isinstance(problems, list)
    print(result["name"])
    width = max(len(metric) for metric, _ in rows)
    for metric, value in rows:
        print(f"  {metric:<{width}}  {value}")
    return report_anomalies(problems, "every invariant held")


if __name__ == "__main__":
    from benchlib import run_main

    run_main(main)
