"""Tests for taskkit.testing.azurite_server: the Azurite server and the fixtures built on it."""

from __future__ import annotations

import base64
import os
import random
import re
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from taskkit.testing import (
    AZURITE_ENV_VAR,
    INSTALL_HINT,
    Azurite,
    find_azurite,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _key_of(server: Azurite) -> str:
    match = re.search(r"AccountKey=([^;]+);", server.connection_string)
    assert match is not None
    return match.group(1)


def _executable(path: Path, body: str = "exit 0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# -- against a real server ---------------------------------------------------------------------


# The async azure SDK hands one-shot uploads (up to 64 MiB) to aiohttp as raw bytes, and aiohttp
# warns above 1 MiB; that is upstream's business, not what this test pins down.
@pytest.mark.azurite
def test_adlfs_round_trip_matches_sdk_view(
    azurite: Azurite, azurite_container: str, tmp_path: Path
) -> None:
    """Bytes written through adlfs (pipe and put) read back identical via adlfs and the SDK."""
    rng = random.Random(20240521)
    payloads = {
        "empty.bin": b"",
        "small.txt": b"hello, blob\n",
        "nested/dir/medium.bin": rng.randbytes(300_000),
        "big.bin": rng.randbytes(5 * 1024 * 1024 + 17),
    }
    fs = azurite.filesystem()
    for name, data in payloads.items():
        if name == "big.bin":
            local = tmp_path / "upload" / name
            local.parent.mkdir()
            local.write_bytes(data)
            fs.put(str(local), f"{azurite_container}/{name}")
        else:
            fs.pipe(f"{azurite_container}/{name}", data)

    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        for name, data in payloads.items():
            assert fs.cat(f"{azurite_container}/{name}") == data, name
            blob = container.get_blob_client(name)
            assert blob.exists(), name
            assert blob.download_blob().readall() == data, name

    downloaded = tmp_path / "download" / "big.bin"
    downloaded.parent.mkdir()
    fs.get(f"{azurite_container}/big.bin", str(downloaded))
    assert downloaded.read_bytes() == payloads["big.bin"]


@pytest.mark.azurite
def test_repr_hides_key(azurite: Azurite) -> None:
    """Neither repr nor str of a server shows its key or connection string, running or not."""
    key = _key_of(azurite)
    for text in (repr(azurite), str(azurite), repr(Azurite())):
        assert key not in text
        assert "AccountKey" not in text
    assert azurite.account_name in repr(azurite)
    assert azurite.blob_endpoint in repr(azurite)


@pytest.mark.azurite
def test_key_stays_out_of_debug_log_and_output(azurite: Azurite) -> None:
    """Azurite masks the AZURITE_ACCOUNTS value, so the key is in neither its log nor output."""
    azurite.log_offset()  # Makes sure startup lines are in the file.
    key = _key_of(azurite)
    assert key not in azurite.debug_log.read_text(encoding="utf-8")
    assert key not in azurite.output_tail()


@pytest.mark.azurite
def test_server_uses_private_random_account(azurite: Azurite, azurite_container: str) -> None:
    """Each server has its own account name and 64-byte key; any other key is refused."""
    assert re.fullmatch(r"tk[a-z0-9]{10}", azurite.account_name)
    assert len(base64.b64decode(_key_of(azurite))) == 64
    assert azurite.blob_endpoint == f"http://127.0.0.1:{azurite.port}/{azurite.account_name}"
    assert Azurite().account_name != azurite.account_name

    wrong_key = base64.b64encode(os.urandom(64)).decode()
    impostor = BlobServiceClient.from_connection_string(
        azurite.connection_string.replace(_key_of(azurite), wrong_key)
    )
    with impostor, pytest.raises(HttpResponseError) as excinfo:
        impostor.get_container_client(azurite_container).get_container_properties()
    assert excinfo.value.status_code == 403
    assert getattr(excinfo.value, "error_code", None) == "AuthorizationFailure"


@pytest.mark.azurite
def test_exit_stops_process_group_and_frees_port(tmp_path: Path) -> None:
    """After the with-block the process has exited, the port refuses, the data folder is gone."""
    with Azurite() as server:
        pid, port, workdir = server.pid, server.port, server.workdir
        assert server.is_running
        assert server.startup_seconds is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert workdir.is_dir()

    assert not server.is_running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 5):
        pass
    assert not workdir.exists()
    assert "stopped" in repr(server)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.blob_endpoint


@pytest.mark.azurite
def test_debug_log_counts_uploads_and_downloads(azurite: Azurite, azurite_container: str) -> None:
    """operations() lists exactly the requests made since log_offset(), in order, by name."""
    since = azurite.log_offset()
    with azurite.blob_service_client() as service:
        blob = service.get_blob_client(azurite_container, "counted/blob.bin")
        blob.upload_blob(b"x" * 1000)
        assert blob.download_blob().readall() == b"x" * 1000
        assert blob.download_blob().readall() == b"x" * 1000
        blob.get_blob_properties()

    assert azurite.operations(since) == [
        "BlockBlob_Upload",
        "Blob_Download",
        "Blob_Download",
        "Blob_GetProperties",
    ]
    assert azurite.operations(azurite.log_offset()) == []
    log = azurite.debug_log.read_text(encoding="utf-8")
    assert f"RequestURL=http://127.0.0.1/{azurite.account_name}/{azurite_container}/counted/" in log


# -- without a server --------------------------------------------------------------------------


def test_start_failure_reports_server_output(tmp_path: Path) -> None:
    """A server that dies at startup raises at once with its last output lines."""
    fake = _executable(tmp_path / "azurite-blob", 'echo "cannot bind: EACCES" >&2; exit 3')
    server = Azurite(fake)
    with pytest.raises(RuntimeError, match=r"exited with code 3[\s\S]*cannot bind: EACCES"):
        server.start()
    assert not server.is_running


def test_start_deadline_stops_whole_process_group(tmp_path: Path) -> None:
    """A server that never listens fails at the deadline, and its children are ended too."""
    child_pid_file = tmp_path / "child.pid"
    fake = _executable(
        tmp_path / "azurite-blob",
        f'sleep 300 & echo $! > "{child_pid_file}"; echo "still starting"; wait',
    )
    server = Azurite(fake, startup_timeout=1.0)
    with pytest.raises(RuntimeError, match=r"did not listen within 1 s[\s\S]*still starting"):
        server.start()
    child = int(child_pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    # A killed child of a dead shell may linger as a zombie until init reaps it: count it dead.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def test_find_prefers_environment_variable(tmp_path: Path) -> None:
    """TASKKIT_AZURITE wins over a local .azurite install and over PATH."""
    chosen = _executable(tmp_path / "chosen" / "azurite-blob")
    _executable(tmp_path / ".azurite" / "node_modules" / ".bin" / "azurite-blob")
    _executable(tmp_path / "bin" / "azurite-blob")
    environ = {AZURITE_ENV_VAR: str(chosen), "PATH": str(tmp_path / "bin")}
    assert find_azurite(cwd=tmp_path, environ=environ) == str(chosen)


def test_find_rejects_wrong_environment_variable(tmp_path: Path) -> None:
    """A TASKKIT_AZURITE that names nothing is an error, not a silent fallback."""
    _executable(tmp_path / "bin" / "azurite-blob")
    environ = {AZURITE_ENV_VAR: str(tmp_path / "missing"), "PATH": str(tmp_path / "bin")}
    with pytest.raises(FileNotFoundError, match=AZURITE_ENV_VAR):
        find_azurite(cwd=tmp_path, environ=environ)


def test_find_walks_up_to_local_install(tmp_path: Path) -> None:
    """From a subfolder, the nearest parent's .azurite install is found before PATH."""
    local = _executable(tmp_path / ".azurite" / "node_modules" / ".bin" / "azurite-blob")
    _executable(tmp_path / "bin" / "azurite-blob")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_azurite(cwd=deep, environ={"PATH": str(tmp_path / "bin")}) == str(local)


def test_find_falls_back_to_path(tmp_path: Path) -> None:
    """Without the variable or a local install, azurite-blob on PATH is used."""
    on_path = _executable(tmp_path / "bin" / "azurite-blob")
    assert find_azurite(cwd=tmp_path, environ={"PATH": str(tmp_path / "bin")}) == str(on_path)


def test_find_explains_how_to_install(tmp_path: Path) -> None:
    """With no Azurite anywhere the error says how to install it."""
    with pytest.raises(FileNotFoundError) as excinfo:
        find_azurite(cwd=tmp_path, environ={"PATH": str(tmp_path)})
    assert str(excinfo.value) == INSTALL_HINT
    assert "npm install --prefix .azurite azurite" in INSTALL_HINT
    assert AZURITE_ENV_VAR in INSTALL_HINT


def test_fixture_fails_rather_than_skips_without_azurite(tmp_path: Path) -> None:
    """A test asking for the azurite fixture fails, with the install hint, if Azurite is missing."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["taskkit.testing"]\n')
    (tmp_path / "test_needs_azurite.py").write_text(
        textwrap.dedent(
            """
            def test_needs_azurite(azurite):
                pass
            """
        )
    )
    env = {
        **os.environ,
        AZURITE_ENV_VAR: str(tmp_path / "no-such-azurite"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
    assert "npm install --prefix .azurite azurite" in result.stdout


@pytest.mark.azurite
def test_pause_refuses_requests_and_resume_serves_same_blobs(tmp_path: Path) -> None:
    """pause() ends the server but keeps its endpoint and data; resume() serves them again."""
    with Azurite() as server:
        endpoint, connection = server.blob_endpoint, server.connection_string
        with BlobServiceClient.from_connection_string(connection) as service:
            service.create_container("kept").upload_blob("a.txt", b"before the outage")
        pid, port = server.pid, server.port

        server.pause()
        assert server.is_paused
        assert not server.is_running
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            pass
        assert server.workdir.is_dir()

        server.resume()
        assert not server.is_paused
        assert server.is_running
        assert server.blob_endpoint == endpoint
        with BlobServiceClient.from_connection_string(connection) as service:
            blob = service.get_blob_client("kept", "a.txt")
            assert blob.download_blob().readall() == b"before the outage"
        workdir = server.workdir
    assert not workdir.exists()
    with pytest.raises(RuntimeError, match="not paused"):
        server.resume()
